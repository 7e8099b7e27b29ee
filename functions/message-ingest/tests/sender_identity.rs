//! Sender identity on the real `message-ingest` binary, deployed the way Knative runs it
//! (no `EVENT_AUTH` set: required by default): only a delivery with a token from the
//! cluster's issuer, for this function's audience, from an allowed source, is stored.
//! Every other one is 401 and stores nothing. Real MariaDB and Redis; a fake issuer.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use missive_testkit::oidc::{self, Issuer};
use missive_testkit::{Backends, TestBackends};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const AUDIENCE: &str = "missive/message-ingest";
const SOURCE: &str =
    "system:serviceaccount:missive:message-ingest-inbox-oidc-sources.knative.dev-kafkasource";

struct Running {
    child: Child,
    port: u16,
    /// Every log line, as JSON.
    logs: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base_env(backends: &TestBackends) -> Vec<(&'static str, String)> {
    let mut env = backends.env();
    // Events it emits go nowhere; the outbox keeps them.
    env.push(("K_SINK", "http://127.0.0.1:1/".to_owned()));
    env
}

fn oidc_env(issuer: &Issuer) -> Vec<(&'static str, String)> {
    vec![
        ("OIDC_ISSUER", oidc::ISSUER.to_owned()),
        ("OIDC_AUDIENCE", AUDIENCE.to_owned()),
        (
            "OIDC_ALLOWED_SUBJECTS",
            format!("system:serviceaccount:missive:other,{SOURCE}"),
        ),
        ("OIDC_JWKS_URL", issuer.jwks_url.clone()),
    ]
}

/// Starts the binary; `Err` with its stderr when it exits instead of serving.
fn start(env: &[(&'static str, String)]) -> Result<Running, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_message-ingest"))
        .env_clear()
        .env("PORT", "0")
        .envs(env.iter().map(|(k, v)| (k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut lines = BufReader::new(stdout).lines();
    let port = loop {
        let Some(line) = lines.next() else {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            let _ = child.wait();
            return Err(err);
        };
        let log: Value = serde_json::from_str(&line.unwrap()).expect("JSON log line");
        logs.lock().unwrap().push(log.clone());
        if log["message"] == "serving" {
            let addr = log["addr"].as_str().unwrap();
            break addr.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    let kept = logs.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Ok(log) = serde_json::from_str(&line) {
                kept.lock().unwrap().push(log);
            }
        }
    });
    Ok(Running { child, port, logs })
}

/// POSTs a submitted message as a binary-mode CloudEvent with `authorization`.
async fn deliver(port: u16, id: &str, authorization: Option<&str>) -> (u16, String) {
    let body = json!({"username": "alice", "text": format!("event {id}")}).to_string();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: message-ingest.missive.svc.cluster.local\r\n\
         Content-Type: application/json\r\nce-specversion: 1.0\r\nce-id: {id}\r\n\
         ce-source: /tests/producer\r\nce-type: io.missive.message.submitted.v1\r\n{auth}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    (text[9..12].parse().unwrap(), text)
}

async fn connect(backends: &TestBackends) -> sqlx::MySqlConnection {
    let url = backends.config.database_url.as_ref().unwrap();
    sqlx::MySqlConnection::connect(url.expose_secret())
        .await
        .unwrap()
}

/// Messages plus processed events: what a delivery stores.
async fn stored(backends: &TestBackends) -> i64 {
    let mut conn = connect(backends).await;
    let (stored,): (i64,) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM messages) + (SELECT COUNT(*) FROM processed_events)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    stored
}

async fn seed_user(backends: &TestBackends) {
    let mut conn = connect(backends).await;
    sqlx::query("INSERT INTO users (username, password_hash, created_at) VALUES ('alice', 'x', 0)")
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn only_tokens_from_the_allowed_sources_deliver_events() {
    let backends = TestBackends::new(Backends::Real).await;
    seed_user(&backends).await;
    let issuer = Issuer::start().await;
    let mut env = base_env(&backends);
    env.extend(oidc_env(&issuer));
    let f = start(&env).unwrap();

    let good = oidc::claims(AUDIENCE, SOURCE);
    let with = |patch: Value| {
        let mut claims = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let mut without_exp = good.clone();
    without_exp.as_object_mut().unwrap().remove("exp");
    let now = oidc::now();
    let bearer = |token: String| format!("Bearer {token}");
    let refused: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("not a bearer token", Some("Basic YWxpY2U6cHc=".to_owned())),
        ("garbage", Some(bearer("not.a.jwt".to_owned()))),
        (
            "expired",
            Some(bearer(oidc::sign(&with(
                json!({"exp": now - 120, "iat": now - 720, "nbf": now - 720}),
            )))),
        ),
        (
            "not yet valid",
            Some(bearer(oidc::sign(&with(json!({"nbf": now + 300}))))),
        ),
        (
            "wrong audience",
            Some(bearer(oidc::sign(&with(
                json!({"aud": ["missive/activity-record"]}),
            )))),
        ),
        (
            "wrong issuer",
            Some(bearer(oidc::sign(&with(
                json!({"iss": "https://evil.example"}),
            )))),
        ),
        ("no exp", Some(bearer(oidc::sign(&without_exp)))),
        (
            "unknown kid",
            Some(bearer(oidc::sign_with_other_key(
                &good,
                Some("made-up-kid"),
            ))),
        ),
        (
            "known kid, other key",
            Some(bearer(oidc::sign_with_other_key(&good, Some(oidc::KID)))),
        ),
        (
            "no kid",
            Some(bearer(oidc::sign_with_other_key(&good, None))),
        ),
        ("alg none", Some(bearer(oidc::unsigned(&good)))),
        (
            "HS256 with the public key",
            Some(bearer(oidc::hs256_with_public_key(&good))),
        ),
        (
            "subject not allowed",
            Some(bearer(oidc::sign(&with(
                json!({"sub": "system:serviceaccount:missive:default"}),
            )))),
        ),
    ];
    for (i, (case, authorization)) in refused.iter().enumerate() {
        let (status, response) =
            deliver(f.port, &format!("bad-{i}"), authorization.as_deref()).await;
        assert_eq!(status, 401, "{case}: {response}");
        assert!(
            response.contains(r#""code":"invalid_token""#),
            "{case}: {response}"
        );
        assert!(
            response
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{case}: {response}"
        );
    }
    assert_eq!(
        stored(&backends).await,
        0,
        "a refused delivery stored something"
    );

    // The real thing, with a little clock skew each way, is stored.
    let (status, response) = deliver(f.port, "good-1", Some(&bearer(oidc::sign(&good)))).await;
    assert_eq!(status, 202, "{response}");
    let skewed = with(json!({"nbf": now + 10, "iat": now + 10}));
    let (status, response) = deliver(f.port, "good-2", Some(&bearer(oidc::sign(&skewed)))).await;
    assert_eq!(status, 202, "{response}");
    assert_eq!(
        stored(&backends).await,
        4,
        "two messages, two processed events"
    );

    // Unknown kids do not turn into a fetch each: one fetch at the first request, at
    // most one more for the made-up kid (rate-limited), none for the good tokens.
    let fetches = issuer.fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=2).contains(&fetches), "{fetches} JWKS fetches");

    // Why each was refused is in the log; the token never is.
    let logs = f.logs.lock().unwrap();
    let reasons: Vec<&str> = logs
        .iter()
        .filter(|l| l["message"] == "event delivery refused")
        .filter_map(|l| l["reason"].as_str())
        .collect();
    assert_eq!(reasons.len(), refused.len(), "{reasons:?}");
    let all = logs.iter().map(Value::to_string).collect::<String>();
    let tokens = refused
        .iter()
        .filter_map(|(_, a)| a.as_deref()?.strip_prefix("Bearer "))
        .filter(|token| token.len() > 20);
    for token in tokens {
        assert!(!all.contains(token), "a token was logged");
    }
}

#[tokio::test]
async fn an_unreachable_issuer_is_503_so_knative_retries() {
    let backends = TestBackends::new(Backends::Real).await;
    let mut env = base_env(&backends);
    let issuer = Issuer::start().await;
    env.extend(oidc_env(&issuer));
    drop(issuer);
    let f = start(&env).unwrap();
    let token = oidc::sign(&oidc::claims(AUDIENCE, SOURCE));
    let (status, response) = deliver(f.port, "e-1", Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, 503, "{response}");
    assert!(
        response.to_ascii_lowercase().contains("retry-after: 1"),
        "{response}"
    );
    assert_eq!(stored(&backends).await, 0);
}

#[tokio::test]
async fn a_deployed_function_does_not_start_open() {
    let backends = TestBackends::new(Backends::Real).await;
    let err = start(&base_env(&backends)).err().expect("refuses to start");
    assert!(err.contains("OIDC_ISSUER is required"), "{err}");
    for missing in ["OIDC_AUDIENCE", "OIDC_ALLOWED_SUBJECTS"] {
        let issuer = Issuer::start().await;
        let mut env = base_env(&backends);
        env.extend(oidc_env(&issuer).into_iter().filter(|(k, _)| *k != missing));
        let err = start(&env).err().expect("refuses to start");
        assert!(err.contains(&format!("{missing} is required")), "{err}");
    }
}

#[tokio::test]
async fn turning_it_off_is_explicit_and_logged() {
    let backends = TestBackends::new(Backends::Real).await;
    seed_user(&backends).await;
    let mut env = base_env(&backends);
    env.push(("EVENT_AUTH", "none".to_owned()));
    let f = start(&env).unwrap();
    let warned = f.logs.lock().unwrap().iter().any(|l| {
        l["level"] == "WARN"
            && l["message"]
                .as_str()
                .unwrap_or("")
                .contains("EVENT_AUTH=none")
    });
    assert!(warned, "{:?}", f.logs.lock().unwrap());
    let (status, response) = deliver(f.port, "open-1", None).await;
    assert_eq!(status, 202, "{response}");
}

/// Deployed, the keys come over HTTPS from the API server, trusting only the cluster CA
/// and authenticating with the pod's service-account token: both from files, as
/// Kubernetes mounts them. Here a CA, a server certificate and an HTTPS JWKS endpoint
/// of the test's own (openssl and Python, both on the machine).
#[tokio::test]
async fn the_keys_come_over_https_with_the_cluster_ca_and_the_pods_token() {
    let dir = std::env::temp_dir().join(format!("missive-jwks-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        let status = Command::new(args[0])
            .args(&args[1..])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{args:?}");
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    for ca in ["ca", "other-ca"] {
        run(&[
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
            "-days",
            "1",
            "-subj",
            &format!("/CN={ca}"),
        ]);
    }
    run(&[
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "openssl",
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "server.ext",
    ]);
    let jwks = serde_json::json!({"keys": [oidc::issuer_jwk()]}).to_string();
    std::fs::write(dir.join("jwks.json"), jwks).unwrap();
    std::fs::write(dir.join("token"), "pod-service-account-token\n").unwrap();
    // Answers the JWKS only to the pod's token, as the API server would.
    let server = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.headers.get("authorization") != "Bearer pod-service-account-token":
            self.send_response(401); self.end_headers(); return
        body = open("jwks.json", "rb").read()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args): pass
httpd = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain("server.pem", "server.key")
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
print(httpd.server_address[1], flush=True)
httpd.serve_forever()
"#;
    let mut https = Command::new("python3")
        .args(["-c", server])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(https.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let url = format!("https://127.0.0.1:{}/openid/v1/jwks", port.trim());

    let backends = TestBackends::new(Backends::Real).await;
    seed_user(&backends).await;
    let token = oidc::sign(&oidc::claims(AUDIENCE, SOURCE));
    let start_with = |ca: &str, token_file: &str| {
        let mut env = base_env(&backends);
        env.extend([
            ("OIDC_ISSUER", oidc::ISSUER.to_owned()),
            ("OIDC_AUDIENCE", AUDIENCE.to_owned()),
            ("OIDC_ALLOWED_SUBJECTS", SOURCE.to_owned()),
            ("OIDC_JWKS_URL", url.clone()),
            ("OIDC_JWKS_CA_FILE", dir.join(ca).display().to_string()),
            (
                "OIDC_JWKS_TOKEN_FILE",
                dir.join(token_file).display().to_string(),
            ),
        ]);
        start(&env).unwrap()
    };
    let f = start_with("ca.pem", "token");
    let (status, response) = deliver(f.port, "tls-1", Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, 202, "{response}");
    drop(f);
    // Another CA: the endpoint is not trusted, the keys cannot be had: 503, retried.
    let f = start_with("other-ca.pem", "token");
    let (status, response) = deliver(f.port, "tls-2", Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, 503, "{response}");
    drop(f);
    // No token file: the endpoint refuses, same answer.
    let f = start_with("ca.pem", "no-such-token");
    let (status, response) = deliver(f.port, "tls-3", Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, 503, "{response}");
    drop(f);
    let _ = https.kill();
    let _ = https.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
