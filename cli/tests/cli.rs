//! The `missive` binary as a user runs it: `missive dev` with nothing configured, on the
//! real services, and `missive migrate`.

#![allow(clippy::unwrap_used)]

#[path = "support/dev.rs"]
mod dev;

use std::time::Duration;

use dev::Dev;

fn ready(dev: &Dev) -> bool {
    dev.request("GET", "/readyz", None, None).status == 200
}

fn signup_status(dev: &Dev, name: &str) -> u16 {
    dev.request(
        "POST",
        "/api/auth/signup",
        None,
        Some(&format!(r#"{{"username":"{name}","password":"12345678"}}"#)),
    )
    .status
}

/// Event endpoints take events without a sender token, so `missive dev` keeps them off
/// the public port, and answers only to loopback names: a page on an attacker's name
/// rebound to 127.0.0.1 gets nothing.
#[test]
fn dev_keeps_web_pages_away_from_its_event_endpoints() {
    let dir = std::env::temp_dir().join(format!("missive-dev-hosts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = dev::missive();
    cmd.current_dir(&dir);
    let server = Dev::start(cmd);
    assert_ne!(server.addr, server.events_addr);
    assert!(
        server.events_addr.starts_with("127.0.0.1:"),
        "{}",
        server.events_addr
    );
    let event = r#"{"reason":"tick"}"#;
    let ce = [
        ("ce-specversion", "1.0"),
        ("ce-id", "ping-1"),
        ("ce-source", "/tests"),
        ("ce-type", "dev.knative.sources.ping"),
    ];
    let at = |addr: &str, host: &str| {
        let mut headers = ce.to_vec();
        headers.push(("Host", host));
        server
            .try_request_at(
                addr,
                "POST",
                "/_events/outbox-relay",
                &headers,
                None,
                Some(event),
            )
            .unwrap()
    };
    // Not on the public port at all (the web app's fallback does not take POSTs).
    let public = at(&server.addr, "localhost");
    assert!(
        matches!(public.status, 404 | 405),
        "{} {}",
        public.status,
        public.body
    );
    // On its own port, for loopback names only.
    for host in ["localhost", "127.0.0.1", "LOCALHOST:8081", "[::1]:8081"] {
        let res = at(&server.events_addr, host);
        assert_eq!(res.status, 200, "{host}: {}", res.body);
    }
    for host in [
        "attacker.example",
        "attacker.example:8081",
        "127.0.0.1.nip.io",
        "localhost.attacker.example",
    ] {
        let res = at(&server.events_addr, host);
        assert_eq!(res.status, 403, "{host}: {}", res.body);
        assert_eq!(res.json()["error"]["code"], "host_not_allowed");
        let res = server.request_with("GET", "/api/auth/me", &[("Host", host)], None, None);
        assert_eq!(res.status, 403, "{host}: {}", res.body);
    }
    server.stop();
}

#[test]
fn dev_runs_with_nothing_configured() {
    let dir = std::env::temp_dir().join(format!("missive-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = dev::missive();
    cmd.current_dir(&dir);
    let server = Dev::start(cmd);
    assert!(
        server.addr.starts_with("127.0.0.1:"),
        "dev listens on loopback: {}",
        server.addr
    );
    assert!(ready(&server));
    assert_eq!(signup_status(&server, "devuser"), 201);
    assert!(
        dir.join(".missive/missive.db").exists(),
        "SQLite file under ./.missive/"
    );
    // No web app built here: `/` says how to build it, the API is unaffected, and the
    // start-up log said so too.
    let home = server.request("GET", "/", None, None);
    assert_eq!(home.status, 503);
    assert!(
        home.body.contains("npm --prefix frontend ci"),
        "{}",
        home.body
    );
    let api = server.request("GET", "/api/nope", None, None);
    assert_eq!(api.status, 404);
    assert_eq!(api.json()["error"]["code"], "not_found");
    assert!(
        server
            .output
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("the web app is not built")),
        "start-up warns"
    );
    server.stop();
    // Data survives a restart.
    let mut cmd = dev::missive();
    cmd.current_dir(&dir);
    let server = Dev::start(cmd);
    assert_eq!(signup_status(&server, "devuser"), 409);
    server.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dev_runs_on_mariadb_and_redis_creating_the_database() {
    let name = format!("missive_test_dev_{}", std::process::id());
    let mut cmd = dev::missive();
    cmd.env("DATABASE_URL", format!("{}/{name}", dev::mysql_server()))
        .env("REDIS_URL", dev::redis_url())
        .env("REDIS_KEY_PREFIX", format!("{name}:"));
    let server = Dev::start(cmd);
    assert_eq!(signup_status(&server, "realuser"), 201);
    assert!(ready(&server));
    server.stop();
    dev::drop_database(&name);
}

/// Every backend TLS-only (MariaDB with `require_secure_transport` and a `REQUIRE SSL`
/// user, Redis on `--tls-port` alone, Kafka on a TLS listener), each verified by name
/// and trusted the standard way: one CA bundle in `SSL_CERT_FILE`, no backend-specific
/// setting. `missive dev` signs up, posts, and sees the activity that went through
/// Kafka; then every function binary starts on the same settings and is ready.
#[test]
fn dev_and_every_function_run_on_tls_only_mariadb_redis_and_kafka() {
    use missive_testkit::tls::{Pki, TlsKafka, TlsMariaDb, TlsRedis};
    let pki = Pki::new(&["localhost"]);
    let (mariadb, redis) = (TlsMariaDb::start(&pki), TlsRedis::start(&pki));
    let kafka = TlsKafka::start(&pki, "localhost", false);
    let env = [
        (
            "DATABASE_URL",
            format!(
                "{}?ssl-mode=verify_identity",
                mariadb.url("localhost", "missive")
            ),
        ),
        ("REDIS_URL", format!("rediss://localhost:{}", redis.port)),
        ("KAFKA_BROKERS", format!("localhost:{}", kafka.port)),
        ("KAFKA_SECURITY_PROTOCOL", "ssl".to_owned()),
        // Passed to librdkafka as it is.
        ("KAFKA_PROP_CLIENT_ID", "missive-tls-test".to_owned()),
        ("SSL_CERT_FILE", pki.ca.to_str().unwrap().to_owned()),
    ];
    let mut cmd = dev::missive();
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let server = Dev::start(cmd);
    assert!(ready(&server));
    let cookie = server.signup("tlsuser");
    let res = server.request(
        "POST",
        "/api/messages",
        Some(&cookie),
        Some(r#"{"text":"over TLS all the way"}"#),
    );
    assert_eq!(res.status, 201, "{}", res.body);
    // message.created went out to Kafka and came back through the dispatcher.
    dev::eventually(Duration::from_secs(20), "activity through Kafka", || {
        server.activity(&cookie) == ["message.created", "user.registered"]
    });
    server.stop();

    let built = std::path::Path::new(env!("CARGO_BIN_EXE_missive"))
        .parent()
        .unwrap();
    for name in missive::registry::names().filter(|name| *name != "web") {
        let binary = built.join(name);
        assert!(
            binary.is_file(),
            "{} is not built: cargo build --workspace --bins",
            binary.display()
        );
        let port = missive_testkit::tls::free_port();
        let mut child = std::process::Command::new(&binary)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("PORT", port.to_string())
            .env("LOG_LEVEL", "warn")
            .env("EVENT_AUTH", "none")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let status = loop {
            let status = dev::get_status(&addr, "/readyz");
            if status == Some(200) || std::time::Instant::now() > deadline {
                break status;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            status,
            Some(200),
            "{name} is not ready on the TLS-only backends"
        );
    }
}

/// Kafka settings that cannot work stop `missive dev` at start, naming the variable: an
/// unknown `KAFKA_PROP_*` property (librdkafka's own check), a SASL mechanism without
/// SASL, SCRAM without a password.
#[test]
fn kafka_settings_that_cannot_work_stop_missive_at_start() {
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[("KAFKA_PROP_NO_SUCH_THING", "1")], "no.such.thing"),
        (
            &[("KAFKA_SASL_MECHANISM", "PLAIN")],
            "KAFKA_SASL_MECHANISM is set but KAFKA_SECURITY_PROTOCOL is plaintext",
        ),
        (
            &[
                ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
                ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
                ("KAFKA_SASL_USERNAME", "missive"),
            ],
            "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
        ),
    ];
    for (env, expected) in cases {
        let mut env = env.to_vec();
        env.push(("KAFKA_BROKERS", "127.0.0.1:1"));
        assert_refused_at_start(&env, expected);
    }
}

/// `missive dev` with `env` (on an in-memory SQLite) stops at start, saying `expected`.
fn assert_refused_at_start(env: &[(&str, &str)], expected: &str) {
    let out = dev::missive()
        .env("DATABASE_URL", "sqlite::memory:")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{env:?} started");
    assert!(stderr.contains(expected), "{env:?}: {stderr}");
}

/// Cloud credentials in a build without the `aws` feature (this one: `missive dev` and
/// the tests do not need it) are refused at start, saying what is missing; settings that
/// contradict each other are refused in any build.
#[test]
fn cloud_credential_settings_are_checked_at_start() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[(
                "DATABASE_SECRET_ARN",
                "arn:aws:secretsmanager:us-east-1:1:secret:db",
            )],
            "DATABASE_SECRET_ARN needs a build with the `aws` feature",
        ),
        (
            &[
                ("KAFKA_BROKERS", "127.0.0.1:1"),
                ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
                ("KAFKA_SASL_MECHANISM", "AWS_MSK_IAM"),
            ],
            "KAFKA_SASL_MECHANISM=AWS_MSK_IAM needs a build with the `aws` feature",
        ),
        (
            &[
                ("REDIS_URL", "rediss://app@cache.example:6379"),
                (
                    "REDIS_SECRET_ARN",
                    "arn:aws:secretsmanager:us-east-1:1:secret:redis",
                ),
                ("REDIS_IAM_CACHE_NAME", "cache"),
            ],
            "REDIS_SECRET_ARN and REDIS_IAM_CACHE_NAME are both set",
        ),
        (
            &[
                ("REDIS_URL", "redis://app@127.0.0.1:1"),
                ("REDIS_IAM_CACHE_NAME", "cache"),
            ],
            "REDIS_IAM_CACHE_NAME needs TLS: REDIS_URL must be rediss://",
        ),
    ];
    for (env, expected) in cases {
        assert_refused_at_start(env, expected);
    }
}

#[test]
fn migrate_creates_and_migrates_idempotently() {
    let name = format!("missive_test_migrate_{}", std::process::id());
    let url = format!("{}/{name}", dev::mysql_server());
    for _ in 0..2 {
        let out = dev::missive()
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tables = dev::mariadb(&format!(
        "SELECT GROUP_CONCAT(table_name ORDER BY table_name) FROM information_schema.tables \
         WHERE table_schema = '{name}'"
    ));
    let mut tables: Vec<&str> = tables.trim().split(',').collect();
    tables.sort_unstable();
    assert_eq!(
        tables,
        [
            "_sqlx_migrations",
            "idempotency_keys",
            "message_tokens",
            "messages",
            "outbox",
            "outbox_lease",
            "processed_events",
            "search_index",
            "users"
        ]
    );
    dev::drop_database(&name);
    let out = dev::missive().arg("migrate").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL"));
}

/// A client that opens connections and never finishes its headers holds nothing for
/// long, and one instance serves at most MAX_CONNECTIONS connections at once: the next
/// is told 503 at once instead of waiting unseen.
#[test]
fn slow_and_surplus_connections_are_turned_away() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;
    let dir = std::env::temp_dir().join(format!("missive-dev-conns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = dev::missive();
    cmd.current_dir(&dir)
        .env("HEADER_READ_TIMEOUT_SECS", "1")
        .env("MAX_CONNECTIONS", "3");
    let server = Dev::start(cmd);
    // Half a request line, then silence: closed after about a second.
    let mut slow = TcpStream::connect(&server.addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: local")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "a slow client held its connection {took:?}"
    );
    // A byte every 300 ms never finishes the headers either.
    let mut trickle = TcpStream::connect(&server.addr).unwrap();
    let started = Instant::now();
    let mut closed = None;
    for byte in b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
        .iter()
        .cycle()
        .take(40)
    {
        if trickle.write_all(&[*byte]).is_err() {
            closed = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let closed = closed.expect("a trickling client kept its connection for 12 s");
    assert!(closed < Duration::from_secs(4), "closed after {closed:?}");
    // A kept-alive connection: requests within the timeout are served, however many;
    // then, idle, it is closed.
    let mut kept = TcpStream::connect(&server.addr).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(600));
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut answer = [0u8; 256];
        let n = kept.read(&mut answer).unwrap();
        assert!(
            answer[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&answer[..n])
        );
    }
    let idle_from = Instant::now();
    let mut rest = Vec::new();
    let _ = kept.read_to_end(&mut rest);
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(4),
        "an idle kept-alive connection was closed after {idle:?}"
    );
    // Three idle connections take every place; the fourth is refused in our shape.
    let idle: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(&server.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut surplus = TcpStream::connect(&server.addr).unwrap();
    surplus
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    surplus.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains(r#""code":"overloaded""#), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    // The idle ones time out (they never sent headers): places free up again.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.request("GET", "/healthz", None, None).status != 200 {
        assert!(Instant::now() < deadline, "no place freed");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A response that takes longer than the timeout (a live stream) is not cut.
    let cookie = server.signup("slowpoke");
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    write!(
        stream,
        "GET /api/activity/stream HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\n\r\n"
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let open_from = Instant::now();
    let mut received = Vec::new();
    while open_from.elapsed() < Duration::from_secs(4) {
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk) {
            Ok(0) => panic!("the stream was closed after {:?}", open_from.elapsed()),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(_) => {} // Nothing new yet: still open.
        }
    }
    assert!(
        received.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&received)
    );
    server.stop();
}
