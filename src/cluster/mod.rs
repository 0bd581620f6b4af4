//! The cluster engine over NATS JetStream (docs/cluster.md).

pub mod subject;
