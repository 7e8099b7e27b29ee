//! The `missive` command's library side: every function's router mounted in one app, as
//! `missive dev` serves it and as the API test suite drives it.
//!
//! Production does not use this: there each function is its own binary and Knative
//! Service, and events travel through Knative Eventing instead of the in-process bus.
//!
//! # Layout
//! - [`registry`]: the one list of functions.
//! - this file: [`routes`] and [`app`] (every function on one router), [`openapi`].
//! - [`dispatcher`]: what KafkaSource does, for `missive dev` on Kafka.
//! - [`frontend`]: the web app beside the API on one port.
//! - `main.rs`: the `missive` command (`dev`, `migrate`, `publish`, `openapi`).

pub mod dispatcher;
pub mod frontend;
pub mod registry;

use axum::routing::get;
use axum::{Json, Router};
use missive_app::{AppState, Topic};
use utoipa::OpenApi;

/// Every function's routes on one router (the runtime-contract layers not yet applied).
/// Event functions are also served at `/_events/<name>` (for `missive publish --http`
/// and manual tests), as a cluster-local Knative Service is reachable inside the
/// cluster. Without Kafka, the consumers of the events topic are subscribed to the
/// in-process bus; with Kafka the dispatcher feeds them instead.
pub fn routes(state: AppState) -> Router {
    if state.config.kafka_brokers.is_none() {
        // Knative would deliver events to them; here the bus calls their routers.
        for function in registry::consumers_of(Topic::Events) {
            state
                .bus
                .subscribe(function.name, (function.router)(state.clone()));
        }
    }
    let mut router = Router::new();
    for function in registry::event_functions() {
        router = router.nest(
            &format!("/_events/{}", function.name),
            (function.router)(state.clone()),
        );
    }
    for function in registry::http_functions() {
        router = router.merge((function.router)(state.clone()));
    }
    router.route("/api/openapi.json", get(|| async { Json(openapi()) }))
}

/// The app `missive dev` serves: [`routes`] inside the runtime-contract layers.
pub fn app(state: AppState) -> Router {
    state.serve(routes(state.clone()))
}

/// The OpenAPI 3.1 document of the whole HTTP API, assembled from each function's own
/// annotations so it cannot drift from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    #[derive(OpenApi)]
    #[openapi(
        info(
            title = "Missive API",
            description = "Messaging web app; every endpoint is its own Knative function."
        ),
        components(schemas(missive_serve::ErrorBody))
    )]
    struct Root;

    let mut doc = Root::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    for function in registry::http_functions() {
        doc.merge((function.openapi)());
    }
    doc
}
