//! The broker, started in-process (and once as the real binary) and driven by real MQTT
//! clients: publish/subscribe, sessions, wills, retained messages, keep-alive, back-pressure and
//! limits, MQTT 5, malformed input, security at the MQTT level and every transport.

#[path = "../support/mod.rs"]
mod support;

mod backpressure;
mod backpressure_qos0;
mod cert_login;
mod delivery_guarantees;
mod destination_admin;
mod keepalive;
mod limits;
mod log_format;
mod malformed;
mod mqtt5;
mod mqtt5_acks;
mod mqtt5_disconnect;
mod mqtt5_limits;
mod mqtt5_protocol;
mod mqtt5_publish;
mod mqtt5_subscriptions;
mod parking;
mod prefetch;
mod pubsub;
mod read_memory;
mod receive_maximum_log;
mod retained;
mod security;
mod session;
mod shared_subscriptions;
mod signal;
mod sys_topics;
mod transport;
mod will;
mod will_delay;
