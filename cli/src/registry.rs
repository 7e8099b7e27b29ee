//! The one list of Missive's functions. `missive dev` mounts their routers, the OpenAPI
//! document merges their parts, and the dispatcher feeds the event functions from their
//! topics; a test checks that Knative's manifests (`knative/base/functions/`, which
//! Terraform reads too) deploy exactly these, plus the static site `web`.

use missive_app::{Function, Topic, Trigger};

/// Every function that runs on the app's backends, in the order the API document lists
/// them.
pub const FUNCTIONS: [Function; 14] = [
    auth_signup::FUNCTION,
    auth_login::FUNCTION,
    auth_logout::FUNCTION,
    auth_me::FUNCTION,
    message_create::FUNCTION,
    message_list::FUNCTION,
    message_search::FUNCTION,
    message_get::FUNCTION,
    message_delete::FUNCTION,
    activity_list::FUNCTION,
    activity_stream::FUNCTION,
    activity_record::FUNCTION,
    message_ingest::FUNCTION,
    outbox_relay::FUNCTION,
];

/// The function that serves the browser app's files; it uses no backend (see `web`).
pub const SITE: &str = web::NAME;

/// The functions serving the public API.
pub fn http_functions() -> impl Iterator<Item = &'static Function> {
    FUNCTIONS.iter().filter(|f| f.trigger == Trigger::Http)
}

/// The functions that receive HTTP CloudEvents (from a topic or a schedule).
pub fn event_functions() -> impl Iterator<Item = &'static Function> {
    FUNCTIONS.iter().filter(|f| f.trigger != Trigger::Http)
}

/// The functions that consume `topic`.
pub fn consumers_of(topic: Topic) -> impl Iterator<Item = &'static Function> {
    FUNCTIONS
        .iter()
        .filter(move |f| f.trigger == Trigger::Events(topic))
}

/// Every Knative Service's name: the functions and the site.
pub fn names() -> impl Iterator<Item = &'static str> {
    FUNCTIONS.iter().map(|f| f.name).chain([SITE])
}
