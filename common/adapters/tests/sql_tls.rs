//! MariaDB over TLS, against a private MariaDB that the test starts TLS-only
//! (`require_secure_transport=ON`, a user with `REQUIRE SSL`) with certificates it makes:
//! the `ssl-mode` values MySQL users know, `DATABASE_CA_FILE`, and a clear refusal of an
//! unknown CA and of a wrong host name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use missive_adapters::sql::{Db, PoolSettings, traced, with_ca_file};
use missive_testkit::tls::{Pki, TlsMariaDb};
use sqlx::Row as _;

fn settings() -> PoolSettings {
    PoolSettings {
        max_connections: 2,
        idle_timeout: Duration::from_secs(60),
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: None,
    }
}

/// The cipher of the session `url` opens, or the error (with its whole chain).
async fn cipher(url: &str) -> Result<String, String> {
    let db = Db::connect_lazy(url, settings()).map_err(|e| format!("{e:#}"))?;
    let result = async {
        let mut conn = traced::acquire(db.reader()).await?;
        let row = traced::query("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            .fetch_one(&mut *conn)
            .await?;
        anyhow::Ok(row.try_get::<String, _>(1)?)
    }
    .await
    .map_err(|e| format!("{e:#}"));
    db.close().await;
    result
}

#[tokio::test]
async fn mariadb_over_tls_checks_the_ca_and_the_name_as_the_ssl_mode_says() {
    // The certificate names `localhost` only: 127.0.0.1 is the wrong name for it.
    let pki = Pki::new(&["localhost"]);
    let server = TlsMariaDb::start(&pki);
    let ca = pki.ca.to_str().unwrap();

    // The server refuses plaintext, whoever asks.
    let refused = cipher(&format!(
        "{}?ssl-mode=disabled",
        server.url("localhost", "")
    ))
    .await
    .unwrap_err();
    assert!(
        refused.contains("insecure transport") || refused.contains("Access denied"),
        "{refused}"
    );

    // DATABASE_CA_FILE: verified by CA and name (verify_identity), and encrypted.
    let url = with_ca_file(&server.url("localhost", "missive"), Some(&pki.ca)).unwrap();
    assert!(url.contains("ssl-mode=verify_identity"), "{url}");
    Db::create_if_missing(&url).await.unwrap();
    let db = Db::connect_lazy(&url, settings()).unwrap();
    db.migrate().await.unwrap();
    db.ping().await.unwrap();
    db.close().await;
    assert!(!cipher(&url).await.unwrap().is_empty());

    // A CA that did not sign the server's certificate: refused, naming MariaDB and
    // where the trust comes from, at start (`missive migrate`) and at readiness.
    let wrong_ca = with_ca_file(&server.url("localhost", "missive"), Some(&pki.other_ca)).unwrap();
    let err = format!("{:#}", Db::create_if_missing(&wrong_ca).await.unwrap_err());
    assert!(
        err.contains("TLS to MariaDB (DATABASE_URL) failed"),
        "{err}"
    );
    assert!(err.contains("DATABASE_CA_FILE"), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    let db = Db::connect_lazy(&wrong_ca, settings()).unwrap();
    let err = format!("{:#}", db.ping().await.unwrap_err());
    assert!(err.contains("TLS to MariaDB"), "{err}");
    db.close().await;

    // The right CA, the wrong name: verify_identity refuses; verify_ca (CA only)
    // accepts; so does `required` (encrypted, nothing verified), which is what it means.
    let by_ip = server.url("127.0.0.1", "missive");
    let err = cipher(&with_ca_file(&by_ip, Some(&pki.ca)).unwrap())
        .await
        .unwrap_err();
    assert!(err.contains("TLS to MariaDB"), "{err}");
    assert!(err.contains("not valid for name \"127.0.0.1\""), "{err}");
    let ca_only = format!("{by_ip}?ssl-mode=verify_ca&ssl-ca={ca}");
    assert!(!cipher(&ca_only).await.unwrap().is_empty());
    let unverified = format!("{by_ip}?ssl-mode=required");
    assert!(!cipher(&unverified).await.unwrap().is_empty());
    // And the system's CAs (which do not include the test's) refuse it.
    let err = cipher(&format!("{by_ip}?ssl-mode=verify_ca"))
        .await
        .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[test]
fn database_ca_file_is_added_to_the_url_once_and_only_for_mariadb() {
    let ca = std::path::Path::new("/etc/ssl/ca.pem");
    let url = with_ca_file("mysql://u:p@db:3306/missive", Some(ca)).unwrap();
    assert_eq!(
        url,
        "mysql://u:p@db:3306/missive?ssl-ca=%2Fetc%2Fssl%2Fca.pem&ssl-mode=verify_identity"
    );
    // A mode in the URL is kept.
    let url = with_ca_file("mysql://db/missive?ssl-mode=verify_ca", Some(ca)).unwrap();
    assert!(
        url.ends_with("ssl-mode=verify_ca&ssl-ca=%2Fetc%2Fssl%2Fca.pem"),
        "{url}"
    );
    // Without a CA file, the URL as written.
    assert_eq!(with_ca_file("mysql://db/x", None).unwrap(), "mysql://db/x");
    let twice = with_ca_file("mysql://db/x?ssl-ca=/a.pem", Some(ca)).unwrap_err();
    assert!(twice.to_string().contains("give one"), "{twice}");
    let sqlite = with_ca_file("sqlite://dev.db", Some(ca)).unwrap_err();
    assert!(sqlite.to_string().contains("not mysql://"), "{sqlite}");
}
