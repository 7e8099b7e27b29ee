//! The Knative runtime contract, checked on every function binary as a process started
//! the way the production manifests start it: the environment the rendered `prod`
//! overlay gives its container (ConfigMap values and literal env; the Secret's
//! DATABASE_URL and REDIS_URL and the Kafka and collector addresses pointed at local
//! services), as the manifests' non-root user, from `/`.
//!
//! For each binary: it listens on `$PORT` and nothing else; answers HTTP/1.1 and h2c;
//! `/healthz` and `/readyz` say 200 against live MariaDB and Redis; a request in flight
//! when SIGTERM arrives is answered, then the process exits 0 within the grace period;
//! it writes no file anywhere writable outside `/tmp`; every stdout line is a JSON log
//! record and nothing goes to stderr.
//!
//! Needs the function binaries built (`cargo build --workspace --bins`; nextest builds
//! them), the deploy tools (`scripts/deploy-tools.sh`, for `kubectl kustomize`), and
//! MariaDB, Redis and Kafka (`MISSIVE_TEST_*`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use missive_testkit::process::{
    accepted_connection, answers_h2c, sigterm, wait_exit, wait_listener_closed, wait_until_read,
};
use missive_testkit::{Backends, TestBackends};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The manifests' `runAsUser`/`runAsGroup` (distroless `nonroot`).
const NONROOT: u32 = 65532;
/// The user the function processes run as. As root (our CI) the tests switch to the
/// manifests' `NONROOT`, as the kubelet does; unprivileged (GitHub's runner user, a
/// developer's account) they cannot switch, so the processes run as the tests' own user
/// and every other check, the files written outside `/tmp` included, holds for it.
fn run_as() -> u32 {
    static UID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UID.get_or_init(|| {
        // The effective uid from /proc (no libc: the workspace forbids `unsafe`).
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let euid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|id| id.parse().ok())
            .expect("Uid: in /proc/self/status");
        if euid == 0 {
            NONROOT
        } else {
            eprintln!("runtime contract: not root, so functions run as uid {euid}, not {NONROOT}");
            euid
        }
    })
}

/// Directories a non-root process could still write to outside `/tmp`.
const WORLD_WRITABLE: [&str; 3] = ["/var/tmp", "/dev/shm", "/run/lock"];

#[derive(Debug, Deserialize)]
struct Container {
    env: BTreeMap<String, String>,
    secrets: Vec<String>,
    port: u16,
    readiness: String,
    liveness: String,
    security: serde_json::Value,
    routes: Vec<(String, String)>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The prod overlay's containers, rendered once per test process.
fn manifests() -> &'static BTreeMap<String, Container> {
    static RENDERED: std::sync::OnceLock<BTreeMap<String, Container>> = std::sync::OnceLock::new();
    RENDERED.get_or_init(|| {
        let tools = std::env::var("MISSIVE_TOOLS").map_or_else(
            |_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/missive-tools"),
            PathBuf::from,
        );
        let python = tools.join("venv/bin/python");
        let out = Command::new(&python)
            .args(["scripts/check_deploy.py", "--env", "prod"])
            .current_dir(repo())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/deploy-tools.sh)", python.display()));
        assert!(
            out.status.success(),
            "rendering the manifests: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    })
}

/// The binary, copied where the non-root user can execute it (the build directory is
/// usually under root's home).
fn binary(name: &str) -> PathBuf {
    let built = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join(name);
    assert!(
        built.is_file(),
        "{} is not built: cargo build --workspace --bins",
        built.display()
    );
    let dir = binary_dir();
    std::fs::create_dir_all(&dir).unwrap();
    set_mode(&dir, 0o755);
    let copy = dir.join(name);
    let _ = std::fs::remove_file(&copy);
    if std::fs::hard_link(&built, &copy).is_err() {
        std::fs::copy(&built, &copy).unwrap();
    }
    set_mode(&copy, 0o755);
    copy
}

fn binary_dir() -> PathBuf {
    std::env::temp_dir().join(format!("missive-contract-{}", std::process::id()))
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Running {
    child: Child,
    port: u16,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn capture(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Starts `name` with exactly `env` (plus what Knative itself injects) as the non-root
/// user, and waits until it accepts connections.
fn start(name: &str, env: &BTreeMap<String, String>) -> Running {
    let port = free_port();
    let mut cmd = Command::new(binary(name));
    if run_as() == NONROOT {
        cmd.uid(NONROOT).gid(NONROOT);
    }
    let mut child = cmd
        .env_clear()
        .envs(env)
        .env("PORT", port.to_string())
        .env("K_SERVICE", name)
        .env("K_CONFIGURATION", name)
        .env("K_REVISION", format!("{name}-00001"))
        .current_dir("/")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = capture(child.stdout.take().unwrap());
    let stderr = capture(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "{name} exited with {status}: {:?} {:?}",
                stdout.lock().unwrap(),
                stderr.lock().unwrap()
            );
        }
        assert!(Instant::now() < deadline, "{name} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(10));
    }
    Running {
        child,
        port,
        stdout,
        stderr,
    }
}

/// Ports the process listens on (TCP, v4 and v6), from /proc.
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            t.strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .map(str::to_owned)
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // st 0A = LISTEN
            if cols.len() > 9 && cols[3] == "0A" && inodes.contains(cols[9]) {
                let port = cols[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

async fn http(port: u16, request: &str) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(&mut stream).await
}

async fn read_response(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
        .await
        .expect("response within 20 s")
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| raw[i + 4..].to_vec())
        .unwrap_or_default();
    (status, body)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

/// A TCP proxy that holds every chunk from the server for `delay`: a slow Redis, so a
/// request is still waiting on it when SIGTERM arrives.
async fn slow_proxy(upstream: String, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// Files the functions' user owns in the world-writable places outside /tmp.
fn files_written_outside_tmp() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in WORLD_WRITABLE {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            use std::os::unix::fs::MetadataExt as _;
            if entry.metadata().is_ok_and(|m| m.uid() == run_as()) {
                found.push(entry.path());
            }
        }
    }
    found
}

/// A built web app, as the image has it at /app/site, plus one large asset.
fn site_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("missive-contract-site-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><title>Missive</title>",
    )
    .unwrap();
    std::fs::write(dir.join("assets/big.bin"), vec![7u8; 8 << 20]).unwrap();
    for path in [&dir, &dir.join("assets")] {
        set_mode(path, 0o755);
    }
    dir
}

/// The route to hold in flight: the function's first POST, else GET, else DELETE route
/// (the manifests' `routes`, read from its router by check_deploy.py).
fn first_route(container: &Container) -> (String, String) {
    ["POST", "GET", "DELETE"]
        .iter()
        .find_map(|method| {
            container
                .routes
                .iter()
                .find(|(m, _)| m == method)
                .map(|(m, path)| (m.clone(), path.replace("{id}", "42")))
        })
        .expect("the function has a route")
}

async fn contract(name: &str) {
    let container = &manifests()[name];
    assert_eq!(container.security["runAsUser"], NONROOT);
    assert_eq!(container.security["readOnlyRootFilesystem"], true);
    assert_eq!(container.liveness, "/healthz");
    assert_eq!(container.readiness, "/readyz");
    assert_eq!(container.port, 8080, "Knative's default PORT");

    let backends = TestBackends::new(Backends::Real).await;
    let mut env = container.env.clone();
    // The Secret's keys, and the cluster's addresses pointed at this machine's services.
    let delay = Duration::from_millis(250);
    let redis = backends
        .config
        .redis_url
        .as_ref()
        .unwrap()
        .expose_secret()
        .to_owned();
    let redis_addr = redis
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let slow_redis = slow_proxy(redis_addr, delay).await;
    if container.secrets.iter().any(|s| s == "missive-secrets") {
        env.insert(
            "DATABASE_URL".into(),
            backends
                .config
                .database_url
                .as_ref()
                .unwrap()
                .expose_secret()
                .to_owned(),
        );
        env.insert(
            "REDIS_URL".into(),
            format!("redis://127.0.0.1:{slow_redis}"),
        );
    }
    env.insert(
        "REDIS_KEY_PREFIX".into(),
        backends.config.redis_key_prefix.clone(),
    );
    env.insert(
        "KAFKA_BROKERS".into(),
        std::env::var("MISSIVE_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
    );
    let collector = missive_testkit::otlp::OtlpReceiver::start();
    env.insert("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector.endpoint());
    let site = (name == "web").then(site_dir);
    if let Some(site) = &site {
        env.insert("FRONTEND_DIR".into(), site.display().to_string());
    }
    // Event functions take deliveries only from their sources: keys from a fake issuer,
    // and a token for exactly the audience and subject the manifests configure.
    let issuer = missive_testkit::oidc::Issuer::start().await;
    let authorization = env.get("OIDC_AUDIENCE").cloned().map(|audience| {
        env.insert("OIDC_JWKS_URL".into(), issuer.jwks_url.clone());
        assert_eq!(env["OIDC_ISSUER"], missive_testkit::oidc::ISSUER);
        let subject = env["OIDC_ALLOWED_SUBJECTS"].split(',').next().unwrap();
        let claims = missive_testkit::oidc::claims(&audience, subject);
        format!(
            "Authorization: Bearer {}\r\n",
            missive_testkit::oidc::sign(&claims)
        )
    });
    let grace: u64 = env["SHUTDOWN_GRACE_SECS"].parse().unwrap();
    let before = files_written_outside_tmp();

    let mut f = start(name, &env);
    assert_eq!(
        listening_ports(f.child.id()),
        vec![f.port],
        "{name} listens on $PORT only"
    );
    assert_eq!(
        http(f.port, &get("/healthz")).await.0,
        200,
        "{name} /healthz"
    );
    let (status, body) = http(f.port, &get("/readyz")).await;
    assert_eq!(
        status,
        200,
        "{name} /readyz: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(answers_h2c(f.port).await, "{name} answers h2c");

    // A request in flight when SIGTERM arrives.
    let mut stream = accepted_connection(f.port).await;
    let (method, path) = if name == "web" {
        ("GET".to_owned(), "/assets/big.bin".to_owned())
    } else {
        first_route(container)
    };
    // Handlers that read the body before anything else (password checks, events).
    let reads_body_first = ["auth-signup", "auth-login"].contains(&name) || path == "/";
    let rest: Option<&[u8]> = if name == "web" {
        // A large file, read only after the signal.
        stream
            .write_all(get("/assets/big.bin").as_bytes())
            .await
            .unwrap();
        None
    } else if reads_body_first {
        // Half the body now, the rest after the signal.
        let body = br#"{"username":"contract","password":"a-long-password"}"#;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n{}Content-Length: {}\r\n\r\n",
            authorization.as_deref().unwrap_or_default(),
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&body[..10]).await.unwrap();
        Some(&body[10..])
    } else {
        // Waiting on the (slow) session lookup in Redis.
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 0\r\nCookie: missive_session=not-a-session\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        None
    };
    wait_until_read(f.child.id(), &stream);
    sigterm(f.child.id());
    // Draining has begun once the listener is closed.
    wait_listener_closed(f.port).await;
    if let Some(rest) = rest {
        stream.write_all(rest).await.unwrap();
    }
    let (status, body) = read_response(&mut stream).await;
    // The answer the request would get without the signal: drained, not cut short.
    let expected = match name {
        "web" => 200,
        // A new account.
        "auth-signup" => 201,
        // No such user.
        "auth-login" => 401,
        // Logging out without a session is fine.
        "auth-logout" => 204,
        // Event functions: a JSON body without CloudEvents attributes.
        _ if path == "/" => 400,
        // Every other route needs a session; `not-a-session` is none.
        _ => 401,
    };
    assert_eq!(
        status,
        expected,
        "{name}: the in-flight {method} {path}: {}",
        String::from_utf8_lossy(&body)
    );
    if name == "web" {
        assert_eq!(body.len(), 8 << 20, "web: the whole file after SIGTERM");
    }
    let exit = wait_exit(&mut f.child, Duration::from_secs(grace + 2));
    assert_eq!(exit.code(), Some(0), "{name} exits 0 after SIGTERM");

    // Logs: one JSON object per stdout line, nothing on stderr.
    let stdout = f.stdout.lock().unwrap().clone();
    assert!(!stdout.is_empty(), "{name} logged nothing");
    for line in &stdout {
        let record: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{name}: not a JSON log line ({e}): {line}"));
        assert_eq!(record["service.name"], name, "{line}");
    }
    assert!(
        f.stderr.lock().unwrap().is_empty(),
        "{name} wrote to stderr: {:?}",
        f.stderr.lock().unwrap()
    );
    let written: Vec<_> = files_written_outside_tmp()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(written.is_empty(), "{name} wrote outside /tmp: {written:?}");

    if let Some(site) = site {
        let _ = std::fs::remove_dir_all(site);
    }
    let _ = std::fs::remove_dir_all(binary_dir());
    backends.cleanup().await;
}

/// Every registered function (and the site) keeps the contract, one after the other: the
/// list comes from the registry, so a new function is checked without a line here.
#[tokio::test]
async fn every_registered_function_keeps_the_runtime_contract() {
    let names: Vec<&str> = missive::registry::names().collect();
    assert_eq!(names.len(), 15);
    for name in names {
        contract(name).await;
    }
}

/// A function that publishes nothing gets no event transport, so it starts with its
/// database and Redis alone; one that publishes refuses to start without a transport,
/// naming the variables.
#[tokio::test]
async fn only_functions_that_publish_need_an_event_transport() {
    let backends = TestBackends::new(Backends::Real).await;
    let env: BTreeMap<String, String> = [
        (
            "DATABASE_URL",
            backends
                .config
                .database_url
                .as_ref()
                .unwrap()
                .expose_secret(),
        ),
        (
            "REDIS_URL",
            backends.config.redis_url.as_ref().unwrap().expose_secret(),
        ),
        (
            "REDIS_KEY_PREFIX",
            backends.config.redis_key_prefix.as_str(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let (publishers, readers): (Vec<&missive_app::Function>, Vec<_>) = missive::registry::FUNCTIONS
        .iter()
        .partition(|f| f.publishes);
    assert!(readers.iter().any(|f| f.name == "message-list"));
    for function in readers {
        let mut env = env.clone();
        if function.trigger != missive_app::Trigger::Http {
            // Event functions also need to know whose deliveries to accept.
            for (k, v) in [
                (
                    "OIDC_ISSUER",
                    "https://kubernetes.default.svc.cluster.local",
                ),
                ("OIDC_AUDIENCE", "missive/test"),
                (
                    "OIDC_ALLOWED_SUBJECTS",
                    "system:serviceaccount:missive:test",
                ),
            ] {
                env.insert(k.to_owned(), v.to_owned());
            }
        }
        let mut f = start(function.name, &env);
        let (status, body) = http(f.port, &get("/readyz")).await;
        assert_eq!(
            status,
            200,
            "{} /readyz: {}",
            function.name,
            String::from_utf8_lossy(&body)
        );
        sigterm(f.child.id());
        assert!(wait_exit(&mut f.child, Duration::from_secs(5)).success());
    }
    for function in publishers {
        let output = Command::new(binary(function.name))
            .env_clear()
            .envs(&env)
            .env("PORT", free_port().to_string())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{} started", function.name);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("KAFKA_BROKERS or K_SINK"),
            "{}: {stderr}",
            function.name
        );
    }
}
