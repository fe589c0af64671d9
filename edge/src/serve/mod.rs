//! `edge serve`: the runtime as a live gateway service. Samples arrive over MQTT, each device's
//! windows stream through the runtime's encoder, and every finished window's cluster is
//! published; state survives restarts and power loss without losing or doubling a sample.
//!
//! Layers, top to bottom: [`payload`] (message bytes -> samples) and [`topic`] (which device,
//! where results go); [`streams`] (one device's open windows, the runtime's `State`s);
//! [`store`] (snapshot, log and device files on disk); [`gateway`] (the durable core and its
//! guarantee, no network); [`metrics`] (Prometheus counters, `/metrics` and `/healthz`);
//! [`mqtt`] (options, broker settings and `run`, which wires the `subscriber` and `publisher`
//! tasks and the `processor` thread that drive the gateway).

pub mod gateway;
pub mod metrics;
pub mod mqtt;
pub mod payload;
mod processor;
mod publisher;
pub mod store;
pub mod streams;
mod subscriber;
pub mod topic;
