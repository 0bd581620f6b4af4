//! Where a published message goes: the subscription tree ([`router`]), the retained messages
//! ([`retained`]), the per-topic pending limits from policy entries ([`limits`]) and the
//! `memoryUsage` gauge every message body is charged to ([`memory`]), and which member of a
//! shared subscription group receives a message ([`shared`]), and which topics exist
//! ([`destinations`]: creating one needs `admin`). Routing itself (planning
//! the targets of a publish, queueing its copies, pausing a publisher) is done by
//! [`super::runtime::BrokerCore`] with these.

pub mod destinations;
pub mod limits;
pub mod memory;
pub mod retained;
pub mod router;
pub mod shared;
