//! Prometheus metrics rendered from a broker started in-process, driven by real MQTT and
//! STOMP clients: the text parses, and the counters move with the traffic.

#[path = "../support/mod.rs"]
mod support;

mod dashboard;
mod latency;
mod parse;
mod queues;
mod render;
