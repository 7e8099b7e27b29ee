//! The `missive` command's library side: every function's router mounted in one app, as
//! `missive dev` serves it and as the API test suite drives it.
//!
//! Production does not use this: there each function is its own binary and Knative
//! Service, and events travel through Knative Eventing instead of the in-process bus.

pub mod dispatcher;
pub mod frontend;

use axum::routing::get;
use axum::{Json, Router};
use common::AppState;
use utoipa::OpenApi;

/// The event functions with their routers. `missive dev` also serves each at
/// `/_events/<name>` (for `missive publish --http` and manual tests), as a cluster-local
/// Knative Service would be reachable inside the cluster.
pub fn event_functions(state: &AppState) -> [(&'static str, Router); 3] {
    [
        (
            activity_record::NAME,
            activity_record::router(state.clone()),
        ),
        (message_ingest::NAME, message_ingest::router(state.clone())),
        (outbox_relay::NAME, outbox_relay::router(state.clone())),
    ]
}

/// Every function's routes on one router (the runtime-contract layers not yet applied).
/// Without Kafka, `activity-record` is subscribed to the in-process bus; with Kafka the
/// dispatcher feeds it from the events topic instead.
pub fn routes(state: AppState) -> Router {
    if state.config.kafka_brokers.is_none() {
        // Knative would deliver events to activity-record; here the bus calls its router.
        state.bus.subscribe(
            activity_record::NAME,
            activity_record::router(state.clone()),
        );
    }
    let mut router = Router::new();
    for (name, events) in event_functions(&state) {
        router = router.nest(&format!("/_events/{name}"), events);
    }
    router
        .merge(auth_signup::router(state.clone()))
        .merge(auth_login::router(state.clone()))
        .merge(auth_logout::router(state.clone()))
        .merge(auth_me::router(state.clone()))
        .merge(message_create::router(state.clone()))
        .merge(message_list::router(state.clone()))
        .merge(message_search::router(state.clone()))
        .merge(message_get::router(state.clone()))
        .merge(message_delete::router(state.clone()))
        .merge(activity_list::router(state.clone()))
        .merge(activity_stream::router(state))
        .route("/api/openapi.json", get(|| async { Json(openapi()) }))
}

/// The app `missive dev` serves: [`routes`] inside the runtime-contract layers.
pub fn app(state: AppState) -> Router {
    common::serve::app(routes(state.clone()), state)
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
        components(schemas(common::error::ErrorBody))
    )]
    struct Root;

    let mut doc = Root::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    for part in [
        auth_signup::ApiDoc::openapi(),
        auth_login::ApiDoc::openapi(),
        auth_logout::ApiDoc::openapi(),
        auth_me::ApiDoc::openapi(),
        message_create::ApiDoc::openapi(),
        message_list::ApiDoc::openapi(),
        message_search::ApiDoc::openapi(),
        message_get::ApiDoc::openapi(),
        message_delete::ApiDoc::openapi(),
        activity_list::ApiDoc::openapi(),
        activity_stream::ApiDoc::openapi(),
    ] {
        doc.merge(part);
    }
    doc
}
