//! Redis over TLS (`rediss://`), against a private `redis-server` that speaks only TLS
//! with certificates made by the test: the server is verified, by CA and by name, and a
//! refusal says which backend refused and why.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use missive_adapters::kv::{Kv, RedisKv, RedisOptions};
use missive_testkit::tls::{Pki, TlsRedis};

fn store(url: &str, ca_file: Option<PathBuf>) -> RedisKv {
    RedisKv::with_options(
        url,
        &RedisOptions {
            prefix: "missive-test:tls:".to_owned(),
            timeout: Duration::from_secs(2),
            ca_file,
            credentials: None,
        },
    )
    .unwrap()
}

#[tokio::test]
async fn a_server_signed_by_the_configured_ca_is_used_by_name_or_address() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let server = TlsRedis::start(&pki);
    for host in ["localhost", "127.0.0.1"] {
        let kv = store(
            &format!("rediss://{host}:{}", server.port),
            Some(pki.ca.clone()),
        );
        kv.ping().await.unwrap();
        kv.set_ex("k", "over tls", Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(
            kv.get_ex("k", Duration::from_secs(10)).await.unwrap(),
            Some("over tls".to_owned())
        );
    }
}

/// The error a refused connection gives, as an operator reads it.
async fn refusal(kv: RedisKv) -> String {
    let err = kv.ping().await.expect_err("the connection must be refused");
    format!("{err:#}")
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_refused() {
    let pki = Pki::new(&["localhost"]);
    let server = TlsRedis::start(&pki);
    let url = format!("rediss://localhost:{}", server.port);
    // Another CA than the one that signed it...
    let err = refusal(store(&url, Some(pki.other_ca.clone()))).await;
    assert!(err.contains("Redis"), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    // ...and the system's CAs, which do not know the test's.
    let err = refusal(store(&url, None)).await;
    assert!(
        err.contains("Redis") && err.contains("UnknownIssuer"),
        "{err}"
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let pki = Pki::new(&["redis.example.internal"]);
    let server = TlsRedis::start(&pki);
    let err = refusal(store(
        &format!("rediss://localhost:{}", server.port),
        Some(pki.ca.clone()),
    ))
    .await;
    assert!(err.contains("Redis"), "{err}");
    assert!(err.contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn plain_redis_to_a_tls_only_server_fails_and_a_ca_without_tls_is_a_config_error() {
    let pki = Pki::new(&["localhost"]);
    let server = TlsRedis::start(&pki);
    let err = refusal(store(&format!("redis://localhost:{}", server.port), None)).await;
    assert!(err.contains("Redis"), "{err}");
    let Err(err) = RedisKv::with_options(
        "redis://localhost:6379",
        &RedisOptions {
            prefix: String::new(),
            timeout: Duration::from_secs(1),
            ca_file: Some(pki.ca.clone()),
            credentials: None,
        },
    ) else {
        panic!("REDIS_CA_FILE with a plain URL was accepted");
    };
    assert!(format!("{err:#}").contains("REDIS_CA_FILE"), "{err:#}");
}
