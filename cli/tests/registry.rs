//! The function registry (`missive::registry`) is the one list of functions in Rust; these
//! tests hold the deployment to it: Knative deploys a Service for each function and the
//! site (Terraform reads the same directory), event functions are fed by the sources the
//! registry names, and every function crate under `functions/` is registered.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use missive::registry::{self, FUNCTIONS};
use missive_app::config::Config;
use missive_app::{Topic, Trigger};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ is inside the repository")
        .to_owned()
}

/// File stems of `dir/*.ext`, or directory names when `ext` is empty.
fn names_in(dir: &Path, ext: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory").path())
        .filter(|path| {
            if ext.is_empty() {
                path.is_dir()
            } else {
                path.extension().is_some_and(|e| e == ext)
            }
        })
        .map(|path| {
            path.file_stem()
                .expect("a file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// The value of the first `key: value` line after `from` in `doc`.
fn value_after<'a>(doc: &'a str, from: &str, key: &str) -> Option<&'a str> {
    let rest = &doc[doc.find(from)?..];
    rest.lines()
        .find_map(|line| line.trim().strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().trim_matches('"'))
}

#[test]
fn knative_deploys_exactly_the_registered_functions() {
    let registered: BTreeSet<String> = registry::names().map(str::to_owned).collect();
    let deployed = names_in(&repo().join("knative/base/functions"), "yaml");
    assert_eq!(registered, deployed, "registry vs knative/base/functions/");
    let crates = names_in(&repo().join("functions"), "");
    assert_eq!(
        registered, crates,
        "registry vs the crates under functions/"
    );
    assert_eq!(
        FUNCTIONS.len() + 1,
        registered.len(),
        "a name is registered twice"
    );
}

#[test]
fn terraform_deploys_the_same_list() {
    let main = std::fs::read_to_string(repo().join("terraform/modules/missive/main.tf"))
        .expect("terraform module");
    assert!(
        main.contains(r#"fileset("${local.knative_dir}/functions", "*.yaml")"#),
        "Terraform must read its function list from knative/base/functions"
    );
}

#[test]
fn event_functions_are_fed_by_the_sources_the_registry_names() {
    let eventing = repo().join("knative/base/eventing");
    let sources =
        std::fs::read_to_string(eventing.join("kafka-sources.yaml")).expect("kafka-sources.yaml");
    let config = Config::default();
    let mut fed = BTreeSet::new();
    for doc in sources
        .split("\n---")
        .filter(|d| d.contains("kind: KafkaSource"))
    {
        // `topics:` is a one-item list: the item is the next line.
        let topics = &doc[doc.find("topics:").expect("topics")..];
        let topic = topics.lines().nth(1).expect("a topic");
        let topic = topic.trim().trim_start_matches("- ");
        let sink = value_after(doc, "sink:", "name").expect("a sink");
        fed.insert((sink.to_owned(), topic.to_owned()));
    }
    let expected: BTreeSet<(String, String)> = [Topic::Events, Topic::Inbox]
        .into_iter()
        .flat_map(|topic| {
            let config = &config;
            registry::consumers_of(topic)
                .map(move |f| (f.name.to_owned(), topic.name(config).to_owned()))
        })
        .collect();
    assert_eq!(
        fed, expected,
        "KafkaSources vs the registry's event functions"
    );

    let ping = std::fs::read_to_string(eventing.join("outbox-tick.yaml")).expect("ping");
    let scheduled: Vec<&str> = FUNCTIONS
        .iter()
        .filter(|f| f.trigger == Trigger::Schedule)
        .map(|f| f.name)
        .collect();
    assert_eq!(
        vec![value_after(&ping, "sink:", "name").expect("a sink")],
        scheduled
    );
}

/// The deployed system serves the copy under `frontend/public/` (through `web`); it must
/// be byte for byte what `missive dev` serves.
#[test]
fn the_committed_api_document_is_the_one_the_code_makes() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../frontend/public/api/openapi.json"
    );
    assert!(path.ends_with(missive::openapi::COMMITTED_COPY));
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == missive::openapi::json(),
        "{} is stale: run `cargo run -q -- openapi > {}`",
        missive::openapi::COMMITTED_COPY,
        missive::openapi::COMMITTED_COPY
    );
}

/// Every limit the server enforces is in the document, with the server's numbers.
#[test]
fn the_api_document_states_the_servers_limits() {
    use missive_core::domain::{MAX_MESSAGE_CHARS, MAX_QUERY_CHARS};
    let doc = serde_json::to_value(missive::openapi::document()).expect("serializes");
    let schemas = &doc["components"]["schemas"];
    let text = &schemas["NewMessage"]["properties"]["text"];
    assert_eq!(text["maxLength"], MAX_MESSAGE_CHARS);
    assert_eq!(text["minLength"], 1);
    let username = &schemas["Credentials"]["properties"]["username"];
    assert_eq!(username["pattern"], "^[a-z0-9_]{3,32}$");
    let password = &schemas["Credentials"]["properties"]["password"];
    assert_eq!(
        (&password["minLength"], &password["maxLength"]),
        (&8.into(), &128.into())
    );
    let search = &doc["paths"]["/api/messages/search"]["get"]["parameters"];
    let q = search
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "q")
        .unwrap();
    assert_eq!(q["required"], true);
    assert_eq!(q["schema"]["maxLength"], MAX_QUERY_CHARS);
    for (path, method) in [
        ("/api/messages", "get"),
        ("/api/messages/search", "get"),
        ("/api/activity", "get"),
    ] {
        let params = doc["paths"][path][method]["parameters"].as_array().unwrap();
        let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(limit["in"], "query", "{path}");
        assert_eq!(
            (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
            (&1.into(), &100.into()),
            "{path}"
        );
    }
    // The whitespace the pattern excludes is exactly what `str::trim` removes.
    let pattern = text["pattern"].as_str().unwrap();
    for c in (0..=0x10FFFF).filter_map(char::from_u32) {
        let excluded = pattern.contains(&format!("\\u{:04x}", c as u32))
            || matches!(c, '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ')
            || ('\u{2000}'..='\u{200a}').contains(&c);
        assert_eq!(excluded, c.is_whitespace(), "U+{:04X}", c as u32);
    }
    let create = &doc["paths"]["/api/messages"]["post"];
    let key = create["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .unwrap();
    assert_eq!(key["in"], "header");
    assert_eq!(key["schema"]["maxLength"], 255);
    assert!(create["responses"]["409"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["session"]["in"],
        "cookie"
    );
}

#[test]
fn only_http_functions_have_public_routes_in_the_api_document() {
    let doc = serde_json::to_value(missive::openapi::document()).expect("serializes");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(!paths.is_empty());
    for function in registry::event_functions() {
        let part = serde_json::to_value((function.openapi)()).expect("serializes");
        assert!(
            part["paths"].as_object().is_none_or(|p| p.is_empty()),
            "{} is an event function",
            function.name
        );
    }
}
