//! Inference core that goes onto devices.
//!
//! `no_std` and allocation-free: everything here works on caller-provided slices. The `std`
//! feature only adds conveniences for host tools (the trainer, fleet scoring).
#![cfg_attr(not(feature = "std"), no_std)]

pub mod assign;

pub use assign::{assign, Assignment, AssignError};
