//! The `missive` command's library side: every function's router mounted in one app, as
//! `missive dev` serves it and as the API test suite drives it.
//!
//! Production does not use this: there each function is its own binary and Knative
//! Service, and events travel through Knative Eventing instead of the in-process bus.

use axum::routing::get;
use axum::{Json, Router};
use common::AppState;
use utoipa::OpenApi;

/// Every public function's routes on one router (the runtime-contract layers not yet
/// applied), with `activity-record` subscribed to the in-process bus.
pub fn routes(state: AppState) -> Router {
    // Knative would deliver events to activity-record; here the bus calls its router.
    state.bus.subscribe(
        activity_record::NAME,
        activity_record::router(state.clone()),
    );
    Router::new()
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
