//! The HTTP API suite: every status code and limit of the contract, through the real
//! routers of every function mounted as `missive dev` mounts them.
//!
//! Each test runs twice: on the embedded defaults (SQLite file, in-process store) and on
//! MariaDB + Redis (`MISSIVE_TEST_DATABASE_URL`, `MISSIVE_TEST_REDIS_URL`, defaulting to
//! the local servers). The real-service variant fails when the servers are missing.

#![allow(clippy::unwrap_used)]

mod support;

/// Runs a test body once per backend: `api_test!(name, |backends| async move { ... })`.
macro_rules! api_test {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                ($body)(Backends::Embedded).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mariadb_redis() {
                ($body)(Backends::Real).await;
            }
        }
    };
}

mod activity;
mod auth;
mod events;
mod health;
mod messages;
mod outages;
mod outbox;
mod request_shape;
mod search;
