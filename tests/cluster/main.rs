//! Cluster nodes over NATS JetStream: `<ferromq:jetStream>` in activemq.xml (`check`, every
//! error at its position, the XSD), `check --online` against a real 3-server NATS cluster and
//! a closed port, a reload that needs a restart, and the test harness itself (NATS servers
//! killed and restarted by pid). Tests that need nats-server print a SKIP line without it
//! (never under `CI`, which installs it).

#[path = "../support/mod.rs"]
mod support;

#[path = "../console/http.rs"]
#[allow(dead_code)]
mod console_http;

mod catch_up;
mod chaos;
mod claim_attach;
mod claims;
mod config;
mod connect_race;
mod console_purge;
mod console_sessions;
mod consumer_limit;
mod drain;
mod frozen_node;
mod handed_over;
mod harness;
mod live_interest;
mod memory_limit;
mod online;
mod paho;
mod qos2;
mod queue_give_backs;
mod quorum;
mod refusals;
mod reload;
mod retained_order;
mod rig;
mod routing;
mod sessions;
mod shared;
mod shared_chaos;
mod start;
mod stomp_browse;
mod stomp_durable;
mod stomp_limits;
mod stomp_queues;
mod stomp_transactions;
mod subscribe_order;
mod taken_back;
mod wills;
