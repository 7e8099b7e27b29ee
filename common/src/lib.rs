//! Everything Missive's functions share: how a function is configured and served, the
//! error shape, the domain types, and the backends (database, key-value store, events).
//!
//! A function crate only writes handlers; it never opens a pool, reads the environment or
//! binds a socket itself. That is all here, so the Knative runtime contract is implemented
//! once.
//!
//! # Layout
//! - [`config`]: environment variables, parsed with clap.
//! - [`serve`]: the Knative runtime contract (port, health, limits, graceful shutdown).
//! - [`error`]: [`ApiError`], the one error type handlers return.
//! - [`extract`]: request extractors that reject in our error shape (JSON body, session).
//! - [`domain`]: parse-don't-validate newtypes (`Username`, `MessageText`, ...).
//! - [`db`]: the SQL database (MariaDB or SQLite through one code path) and migrations.
//! - [`kv`]: the key-value store (Redis or in-process) that sessions and activity use.
//! - [`sessions`], [`activity`]: server-side sessions and the per-user activity log.
//! - [`events`]: CloudEvents and the transport-neutral [`events::EventPublisher`].
//! - [`outbox`]: publishing events written in the same transaction as their change.
//! - [`kafka`]: the Kafka transport and the CloudEvents Kafka binding.
//! - [`state`]: [`AppState`], built once per process and handed to every router.
//! - [`telemetry`]: JSON logging.
//! - [`testing`]: helpers that tests use to start the real app against either backend.

pub mod activity;
pub mod api;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod events;
pub mod extract;
pub mod kafka;
pub mod kv;
pub mod outbox;
pub mod password;
pub mod serve;
pub mod sessions;
pub mod state;
pub mod telemetry;
pub mod testing;

pub use error::ApiError;
pub use state::AppState;
