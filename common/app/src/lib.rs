//! Missive's features, and the composition root that gives each function the backends it
//! uses. A request is followed in three files: the function's handler
//! (`functions/<name>/src/lib.rs`), the feature's service here, and the feature's store.
//!
//! # Layout
//! - [`auth`]: signup, login, logout, sessions, password hashing; users' SQL.
//! - [`messages`]: post (HTTP and submitted events), list, get, search, delete; their
//!   SQL with group commit; the DTOs the API returns.
//! - [`activity`]: the per-user activity log and its recording from events.
//! - [`events`]: making our events in the current trace.
//! - [`http`]: the session cookie and the `CurrentUser` and `Event` extractors.
//! - [`sender_identity`]: who may deliver events (Knative Eventing's OIDC tokens).
//! - [`config`]: environment variables, parsed with clap.
//! - [`state`]: [`AppState`], built once per process.
//! - [`function`]: a function as the registry knows it, and [`function::run`], the
//!   `main` of every function binary.

pub mod activity;
pub mod auth;
pub mod config;
pub mod events;
pub mod function;
pub mod http;
pub mod messages;
pub mod sender_identity;
pub mod state;

pub use function::{Function, Topic, Trigger};
pub use missive_serve::{ApiError, ErrorBody};
pub use state::AppState;
