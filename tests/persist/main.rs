//! Durability through the broker: restarts, crashes (kill -9 of the real binary), session
//! expiry, store limits, wills across a crash, pending (delayed) wills, MQTT 5 message
//! properties, and a throughput measurement.

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/chaos/mod.rs"]
mod chaos;

#[path = "../stomp/client.rs"]
#[allow(dead_code)]
mod stomp_client;

mod admin_session;
mod chaos_single;
mod crash;
mod crash_mixed;
mod crash_online;
mod crash_qos2;
mod destination_admin;
mod disk_full;
mod expiry;
mod limits;
mod mqtt5_subscriptions;
mod paging;
mod paging_large;
mod paging_large_stomp;
mod paging_properties;
mod queues;
mod restart;
mod shared_subscriptions;
mod throughput;
mod v5_properties;
mod will_delay;
mod wills_crash;
