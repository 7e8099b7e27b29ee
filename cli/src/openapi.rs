//! The OpenAPI 3.1 document of the whole HTTP API: each function's own annotations
//! (`#[utoipa::path]` beside its handler, so they cannot drift apart), merged, plus what
//! the runtime contract adds to every operation and would otherwise be written fourteen
//! times:
//!
//! - the session cookie as the `session` security scheme; an operation that declares it
//!   answers 401 `unauthenticated` without one;
//! - an operation with a JSON body answers 400 `invalid_json`, 413 `payload_too_large`
//!   and 415 `unsupported_media_type` (the `ApiJson` extractor and the body limit); one
//!   with query parameters 400 `invalid_query_string` (`ApiQuery`);
//! - state-changing operations answer 403 `cross_origin` to another site's `Origin`;
//! - every operation answers 503 (`unavailable` when a backend is down, `timeout` past
//!   the request time limit), with `Retry-After` for `unavailable`, and 500 `internal`.
//!
//! [`json`] is the one serialization: `missive dev` serves it, `missive openapi` prints
//! it, and the deployed `web` function serves the copy committed at
//! `frontend/public/api/openapi.json` (a test holds the copy to these bytes).

use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr};

use crate::registry;

/// The name of the security scheme that functions' annotations refer to.
pub const SESSION_SCHEME: &str = "session";

/// Where the deployed `web` function's copy lives in the repository (Vite copies
/// `public/` into the built site, so it is served at `/api/openapi.json`).
pub const COMMITTED_COPY: &str = "frontend/public/api/openapi.json";

/// The merged document.
pub fn document() -> utoipa::openapi::OpenApi {
    #[derive(OpenApi)]
    #[openapi(
        info(
            title = "Missive API",
            description = "Messaging web app; every endpoint is its own Knative function. \
                Errors have one shape, `{\"error\": {\"code\", \"message\"}}`; programs \
                match on `code`."
        ),
        components(schemas(missive_serve::ErrorBody))
    )]
    struct Root;

    let mut doc = Root::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    for function in registry::http_functions() {
        doc.merge((function.openapi)());
    }
    add_contract(&mut doc);
    doc
}

/// The document as served: pretty JSON with a final newline.
pub fn json() -> String {
    let mut json = serde_json::to_string_pretty(&document()).expect("BUG: the document serializes");
    json.push('\n');
    json
}

/// The reusable responses of the runtime contract, by component name.
fn shared_responses() -> [(&'static str, Response); 8] {
    let error = |description: &str| {
        ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
    };
    let retry_after = |description: &str| {
        HeaderBuilder::new()
            .schema(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::Integer)
                    .minimum(Some(1)),
            )
            .description(Some(description))
            .build()
    };
    [
        ("InvalidJson", error("`invalid_json`: the body is not JSON of the documented shape").build()),
        ("InvalidQueryString", error("`invalid_query_string`: the query string does not parse (a parameter given twice, ...)").build()),
        ("Unauthenticated", error("`unauthenticated`: no valid session cookie").build()),
        ("CrossOrigin", error("`cross_origin`: sent by a browser from another site (its `Origin` is not one of `PUBLIC_ORIGINS`)").build()),
        ("PayloadTooLarge", error("`payload_too_large`: the body exceeds `BODY_LIMIT_BYTES` (64 KiB by default)").build()),
        ("UnsupportedMediaType", error("`unsupported_media_type`: send the body as `application/json`").build()),
        ("Unavailable", error(
            "`unavailable`: a backend (database, session store) is down or too slow; nothing \
             was changed unless the operation says otherwise, and the same request may be \
             retried after `Retry-After` seconds. `overloaded`: this instance is at a \
             capacity limit (password checking, live streams); retry after `Retry-After` \
             seconds. `timeout`: the request ran past `REQUEST_TIMEOUT_SECS`.",
        )
            .header("Retry-After", retry_after("Seconds to wait before retrying (with `unavailable` and `overloaded`)"))
            .build()),
        ("Internal", error("`internal`: a bug; the cause is in the server's log, not here").build()),
    ]
}

/// Adds the runtime contract's responses and the session scheme (see the module docs).
fn add_contract(doc: &mut utoipa::openapi::OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        SESSION_SCHEME.to_owned(),
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            missive_app::http::SESSION_COOKIE,
            "The HttpOnly session cookie that signup and login set; named \
             `__Host-missive_session` where the site is served over HTTPS (`COOKIE_SECURE`)",
        ))),
    );
    for (name, response) in shared_responses() {
        components
            .responses
            .insert(name.to_owned(), RefOr::T(response));
    }
    let shared = |name: &str| RefOr::Ref(Ref::new(format!("#/components/responses/{name}")));
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        let state_changing = [false, true, true, true, true];
        for (operation, state_changing) in operations.into_iter().zip(state_changing) {
            let Some(operation) = operation else { continue };
            let secured = is_secured(operation);
            let has_body = operation.request_body.is_some();
            let has_query = operation
                .parameters
                .iter()
                .flatten()
                .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query));
            let mut add_all = |list: &[(&str, &str)]| {
                for (status, name) in list {
                    operation
                        .responses
                        .responses
                        .entry((*status).to_owned())
                        .or_insert_with(|| shared(name));
                }
            };
            if secured {
                add_all(&[("401", "Unauthenticated")]);
            }
            if has_query {
                add_all(&[("400", "InvalidQueryString")]);
            }
            if state_changing {
                add_all(&[("403", "CrossOrigin")]);
            }
            if has_body {
                add_all(&[
                    ("400", "InvalidJson"),
                    ("413", "PayloadTooLarge"),
                    ("415", "UnsupportedMediaType"),
                ]);
            }
            add_all(&[("500", "Internal"), ("503", "Unavailable")]);
        }
    }
}

fn is_secured(operation: &Operation) -> bool {
    operation.security.as_ref().is_some_and(|requirements| {
        serde_json::to_value(requirements)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|list| list.iter().any(|r| r.get(SESSION_SCHEME).is_some()))
    })
}
