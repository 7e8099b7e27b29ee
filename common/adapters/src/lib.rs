//! Storage and transport: everything that talks to MariaDB or SQLite, Redis or the
//! in-process store, Kafka or a Knative sink. Each backend is a trait or a handle with a
//! production implementation and an embedded one for `missive dev`, never a fork of the
//! logic above it.
//!
//! Nothing here knows a feature: the queries of users and messages live with their
//! feature in `missive-app`, on the pool and traced statements of [`sql`].
//!
//! # Layout
//! - [`sql`]: the pool (MariaDB or SQLite through one code path), migrations,
//!   readiness; [`sql::traced`] runs every statement in its client span.
//! - [`kv`]: the key-value store (Redis or in-process).
//! - [`events`]: the CloudEvents bindings (HTTP, Kafka) and the transports
//!   ([`events::EventPublisher`]: in-process bus, Knative sink, Kafka).
//! - [`credentials`]: passwords and tokens that do not live in a URL (rotated secrets,
//!   cloud identity), fetched and refreshed for [`sql`] and [`kv`]; [`aws`] (the `aws`
//!   feature) supplies them from AWS.
//! - [`outbox`]: events written in the same transaction as their change, published after
//!   the commit, and the relay that publishes what was left behind.

#[cfg(feature = "aws")]
pub mod aws;
pub mod credentials;
pub mod events;
pub mod kv;
pub mod outbox;
pub mod sql;
