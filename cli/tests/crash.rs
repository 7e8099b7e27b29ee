//! Nothing acknowledged is lost: `missive dev` is killed with SIGKILL in the middle of
//! sustained `POST /api/messages` load, on each backend, then started again on the same
//! data. Every 201 the clients received is stored, exactly once; the requests that were
//! in flight are retried with their `Idempotency-Key` and create no duplicates (the ones
//! the server had committed are replayed); requests without a key were stored at most
//! once.

#![allow(clippy::unwrap_used)]

#[path = "support/dev.rs"]
mod dev;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dev::{Dev, Setup, missive};

/// Client threads posting at once.
const CLIENTS: usize = 8;

/// What a client learnt of one request.
#[derive(Debug, Clone)]
enum Outcome {
    /// 201 with this message id.
    Created(String),
    /// No answer: the server died with the request in flight.
    Unknown,
}

struct Sent {
    text: String,
    key: Option<String>,
    outcome: Outcome,
}

fn post(dev: &Dev, cookie: &str, text: &str, key: Option<&str>) -> std::io::Result<dev::Response> {
    let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
    dev.try_request_with(
        "POST",
        "/api/messages",
        &headers,
        Some(cookie),
        Some(&serde_json::json!({ "text": text }).to_string()),
    )
}

/// Every stored message of the user: text -> ids.
fn stored(dev: &Dev, cookie: &str) -> HashMap<String, Vec<String>> {
    let mut all: HashMap<String, Vec<String>> = HashMap::new();
    let mut path = "/api/messages?limit=100".to_owned();
    loop {
        let res = dev.request("GET", &path, Some(cookie), None);
        assert_eq!(res.status, 200, "{}", res.body);
        let page = res.json();
        for m in page["items"].as_array().unwrap() {
            all.entry(m["text"].as_str().unwrap().to_owned())
                .or_default()
                .push(m["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/messages?limit=100&before={cursor}"),
            None => return all,
        }
    }
}

/// Posts from [`CLIENTS`] threads until the server stops answering; half the clients
/// send an `Idempotency-Key` with each post.
fn load(
    dev: &Arc<Dev>,
    cookie: &str,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<Sent>>> {
    (0..CLIENTS)
        .map(|client| {
            let (dev, cookie, stop) = (dev.clone(), cookie.to_owned(), stop.clone());
            std::thread::spawn(move || {
                let mut sent = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let text = format!("client {client} message {i}");
                    let key = (client % 2 == 0).then(|| format!("c{client}-{i}"));
                    let outcome = match post(&dev, &cookie, &text, key.as_deref()) {
                        Ok(res) if res.status == 201 => {
                            Outcome::Created(res.json()["id"].as_str().unwrap().to_owned())
                        }
                        Ok(res) => panic!("client {client}: {} {}", res.status, res.body),
                        Err(_) => Outcome::Unknown,
                    };
                    let unknown = matches!(outcome, Outcome::Unknown);
                    sent.push(Sent { text, key, outcome });
                    if unknown {
                        break; // the server is gone
                    }
                }
                sent
            })
        })
        .collect()
}

fn killed_under_load_loses_nothing(command: impl Fn() -> Command) {
    let first = Arc::new(Dev::start(command()));
    first.signup("crash");
    let cookie = first.login("crash");
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&first, &cookie, &stop);
    // Sustained load first, so the kill lands among committed, committing and queued
    // writes alike.
    std::thread::sleep(Duration::from_secs(3));
    let killed = Command::new("kill")
        .args(["-KILL", &first.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    stop.store(true, Ordering::SeqCst);
    let sent: Vec<Sent> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    drop(first); // reaps the killed process
    let acknowledged = sent
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Created(_)))
        .count();
    let in_flight = sent.len() - acknowledged;
    eprintln!("killed after {acknowledged} acknowledged posts, {in_flight} in flight");
    assert!(
        acknowledged >= 50,
        "too little load to mean anything: {acknowledged}"
    );

    let second = Dev::start(command());
    let cookie = second.login("crash");
    // The client's retry of whatever it did not hear back about, with the same key.
    let mut retried = HashMap::new();
    for s in sent.iter().filter(|s| s.key.is_some()) {
        let retry_all = matches!(s.outcome, Outcome::Unknown);
        // Acknowledged ones too, for a sample: a retry after a lost answer is a replay.
        let sample = s.text.ends_with('7');
        if retry_all || sample {
            let res = post(&second, &cookie, &s.text, s.key.as_deref()).unwrap();
            assert_eq!(res.status, 201, "retry of {}: {}", s.text, res.body);
            let id = res.json()["id"].as_str().unwrap().to_owned();
            if let Outcome::Created(first_id) = &s.outcome {
                assert_eq!(&id, first_id, "a retry replays the first answer");
            }
            retried.insert(s.text.clone(), id);
        }
    }

    let stored = stored(&second, &cookie);
    for s in &sent {
        let ids = stored.get(&s.text).cloned().unwrap_or_default();
        match (&s.outcome, &s.key) {
            (Outcome::Created(id), _) => {
                assert_eq!(
                    ids,
                    std::slice::from_ref(id),
                    "{}: acknowledged, stored exactly once",
                    s.text
                );
            }
            (Outcome::Unknown, Some(_)) => {
                assert_eq!(
                    ids,
                    std::slice::from_ref(&retried[&s.text]),
                    "{}: retried, stored exactly once",
                    s.text
                );
            }
            (Outcome::Unknown, None) => {
                assert!(ids.len() <= 1, "{}: at most once: {ids:?}", s.text);
            }
        }
    }
    let total: usize = stored.values().map(Vec::len).sum();
    assert!(
        total <= sent.len(),
        "nothing stored that nobody sent: {total} > {}",
        sent.len()
    );
    eprintln!(
        "after restart: {total} stored, {} retried with their key",
        retried.len()
    );
    second.stop();
}

#[test]
fn killed_under_load_on_sqlite_loses_nothing_acknowledged() {
    let dir = std::env::temp_dir().join(format!("missive-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/missive.db", dir.display());
    killed_under_load_loses_nothing(|| {
        let mut cmd = missive();
        cmd.env("DATABASE_URL", &url).current_dir(&dir);
        cmd
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn killed_under_load_on_mariadb_loses_nothing_acknowledged() {
    let setup = Setup::new("crash");
    killed_under_load_loses_nothing(|| {
        let mut cmd = setup.command();
        cmd.env("LOG_LEVEL", "warn");
        // Events stay in process: this is about the database.
        for kafka in [
            "KAFKA_BROKERS",
            "KAFKA_EVENTS_TOPIC",
            "KAFKA_INBOX_TOPIC",
            "KAFKA_DLQ_TOPIC",
        ] {
            cmd.env_remove(kafka);
        }
        cmd
    });
}
