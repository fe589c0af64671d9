//! One module per `edge` command: its arguments and what it runs.

pub mod assign;
pub mod serve;
