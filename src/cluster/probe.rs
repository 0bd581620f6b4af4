//! `ferromq check --online`: does the configured NATS answer, with JetStream on?
