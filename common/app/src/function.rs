//! A function as the registry knows it ([`Function`]): its name, what triggers it, its
//! router and its OpenAPI; and [`run`], the whole `main` of its binary.
//!
//! The list of functions is written once, in the `missive` crate's registry; `missive
//! dev`, the OpenAPI document and the dispatcher read it there.

use std::process::ExitCode;

use axum::Router;
use clap::Parser;
use missive_serve::Serving;

use crate::AppState;
use crate::config::Config;
use crate::sender_identity::{Verifier, require_sender};

/// What makes a function run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Browser requests to its routes under `/api`, through the HTTPRoute.
    Http,
    /// Events from a topic, delivered as HTTP CloudEvents to `/` (KafkaSource in a
    /// cluster, the dispatcher or in-process bus in `missive dev`).
    Events(Topic),
    /// A schedule (PingSource in a cluster, a timer in `missive dev`).
    Schedule,
}

/// The topics event functions consume (their names are configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// Domain events the functions emit (`KAFKA_EVENTS_TOPIC`).
    Events,
    /// Messages submitted by outside producers (`KAFKA_INBOX_TOPIC`).
    Inbox,
}

impl Topic {
    /// This topic's name under `config`.
    pub fn name(self, config: &Config) -> &str {
        match self {
            Self::Events => &config.kafka_events_topic,
            Self::Inbox => &config.kafka_inbox_topic,
        }
    }
}

/// One function: one crate under `functions/`, one binary, one Knative Service.
#[derive(Clone, Copy)]
pub struct Function {
    /// The Knative Service name (and crate name); the source of the events it emits.
    pub name: &'static str,
    /// What makes it run.
    pub trigger: Trigger,
    /// Whether it publishes events: only then does it get (and need) an event transport.
    pub publishes: bool,
    /// Its routes.
    pub router: fn(AppState) -> Router,
    /// Its part of the OpenAPI document (empty for event functions).
    pub openapi: fn() -> utoipa::openapi::OpenApi,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .field("trigger", &self.trigger)
            .field("publishes", &self.publishes)
            .finish_non_exhaustive()
    }
}

/// An empty OpenAPI part, for functions without public routes.
pub fn no_openapi() -> utoipa::openapi::OpenApi {
    utoipa::openapi::OpenApi::default()
}

/// Command line of a function binary: only environment variables, shared by all.
#[derive(Parser)]
#[command(about = "A Missive function, served per the Knative runtime contract")]
struct FunctionArgs {
    #[command(flatten)]
    config: Config,
}

/// The whole `main` of a function binary: read config, build the backends it uses
/// (lazily), and serve its router per the runtime contract until SIGTERM. Takes the
/// registry entry's fields, not the entry: a reference to the entry would link its
/// `openapi` into every binary. `PUBLISHES` (the entry's `publishes`) is a constant for
/// the same reason: a function that publishes nothing never refers to the event
/// transports, so its binary links no Kafka client (librdkafka and OpenSSL, about 8 MB).
pub fn run<const PUBLISHES: bool>(
    name: &'static str,
    trigger: Trigger,
    router: fn(AppState) -> Router,
) -> ExitCode {
    let config = FunctionArgs::parse().config;
    let log_level = config.log_level.clone();
    missive_serve::run(name, &log_level, async move {
        if config.redis_url.is_none() {
            // The in-process store would give each function instance its own
            // sessions: a login on one instance would be unknown to the next.
            anyhow::bail!("REDIS_URL is required (the in-process store is for `missive dev` only)");
        }
        let state = if PUBLISHES {
            let state = AppState::build(config)?;
            if state.config.kafka_brokers.is_none() && state.config.k_sink.is_none() {
                // The in-process bus has no subscriber in a function's own process:
                // events would be marked sent and lost.
                anyhow::bail!(
                    "KAFKA_BROKERS or K_SINK is required (the in-process bus is for `missive dev` only)"
                );
            }
            state
        } else {
            AppState::without_transport(config)?
        };
        let mut routes = router(state.clone());
        if trigger != Trigger::Http {
            // Reachable by any pod through the activator: only the sources may deliver.
            if let Some(verifier) = Verifier::from_settings(&state.config.sender_identity)? {
                routes = routes.route_layer(axum::middleware::from_fn_with_state(
                    verifier,
                    require_sender,
                ));
            }
        }
        let app = state.serve(routes);
        let listener = missive_serve::bind(state.config.port).await?;
        let db = state.db.clone();
        Ok(Serving {
            listener,
            app,
            shutdown: state.shutdown.clone(),
            grace: state.config.shutdown_grace(),
            on_stop: Some(Box::pin(async move { db.close().await })),
            connections: state.config.connection_limits(),
        })
    })
}
