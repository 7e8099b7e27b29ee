//! The `missive` command's library side: every function's router mounted in one app, as
//! `missive dev` serves it and as the API test suite drives it.
//!
//! Production does not use this: there each function is its own binary and Knative
//! Service, and events travel through Knative Eventing instead of the in-process bus.
//!
//! # Layout
//! - [`registry`]: the one list of functions.
//! - this file: [`routes`] and [`app`] (every function on one router).
//! - [`openapi`]: the API document, merged from every function's annotations.
//! - [`dispatcher`]: what KafkaSource does, for `missive dev` on Kafka.
//! - [`frontend`]: the web app beside the API on one port.
//! - [`local_only`]: the Host check that keeps web pages (DNS rebinding) out of
//!   `missive dev`.
//! - `main.rs`: the `missive` command (`dev`, `migrate`, `publish`, `openapi`).

pub mod dispatcher;
pub mod frontend;
pub mod local_only;
pub mod openapi;
pub mod registry;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use missive_app::{AppState, Topic};

/// Every HTTP function's routes on one router (the runtime-contract layers not yet
/// applied): what the public port serves. Without Kafka, the consumers of the events
/// topic are subscribed to the in-process bus; with Kafka the dispatcher feeds them
/// instead. Event functions are not here: see [`event_routes`].
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
    for function in registry::http_functions() {
        router = router.merge((function.router)(state.clone()));
    }
    // The same bytes as `missive openapi` and the deployed `web` function's copy.
    let document = openapi::json();
    router.route(
        "/api/openapi.json",
        get(move || async move { ([(CONTENT_TYPE, "application/json")], document) }),
    )
}

/// The app `missive dev` serves on its public port: [`routes`] inside the
/// runtime-contract layers.
pub fn app(state: AppState) -> Router {
    state.serve(routes(state.clone()))
}

/// Event functions at `/_events/<name>`, for `missive publish --http` and manual tests,
/// as a cluster-local Knative Service is reachable inside the cluster. `missive dev`
/// serves them on a port of their own, never the public one: they take events without a
/// sender token, so a page the browser loads must not reach them.
pub fn event_routes(state: AppState) -> Router {
    let mut router = Router::new();
    for function in registry::event_functions() {
        router = router.nest(
            &format!("/_events/{}", function.name),
            (function.router)(state.clone()),
        );
    }
    router
}

/// [`event_routes`] inside the runtime-contract layers.
pub fn events_app(state: AppState) -> Router {
    state.serve(event_routes(state.clone()))
}
