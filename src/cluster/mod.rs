//! The cluster engine: ferromq nodes over NATS JetStream (docs/cluster.md).

pub mod probe;
