//! Credentials from AWS without an AWS account: a local fake Secrets Manager (the
//! SDK's endpoint override) in front of the real MariaDB and Redis, rotation included,
//! and token renewal exercised with short lifetimes. Run with `--features aws`
//! (scripts/test.sh does). The SigV4 golden vectors are unit tests in `src/aws.rs`.

#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use missive_adapters::aws::{Aws, MskIam, SecretPassword};
use missive_adapters::credentials::{CredentialSource, Credentials, REFETCH_AFTER_REFUSAL};
use missive_adapters::events::kafka::{
    KafkaConnection, KafkaSecurity, SaslMechanism, SecurityProtocol,
};
use missive_adapters::kv::{Kv, RedisKv, RedisOptions};
use missive_adapters::sql::traced::{self, query};
use missive_adapters::sql::{Db, PoolSettings};
use rdkafka::client::ClientContext;
use secrecy::SecretString;
use sqlx::Row;

const ACCESS_KEY: &str = "AKIDMISSIVETEST";

fn mariadb() -> String {
    std::env::var("MISSIVE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
}

fn redis() -> String {
    std::env::var("MISSIVE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A Secrets Manager that answers `GetSecretValue` with whatever the test put in it, and
/// counts the calls and what signed them.
#[derive(Clone, Default)]
struct FakeSecretsManager {
    secret: Arc<Mutex<String>>,
    calls: Arc<AtomicU32>,
    authorizations: Arc<Mutex<Vec<String>>>,
}

impl FakeSecretsManager {
    async fn start(secret: &str) -> (Self, String) {
        let fake = Self::default();
        fake.set(secret);
        let state = fake.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let state = state.clone();
                async move { state.answer(&headers, &body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (fake, url)
    }

    fn set(&self, secret: &str) {
        *self.secret.lock().unwrap() = secret.to_owned();
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    fn answer(&self, headers: &HeaderMap, body: &str) -> (StatusCode, String) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        self.authorizations
            .lock()
            .unwrap()
            .push(header("authorization"));
        // The AWS JSON 1.1 protocol: the operation in a header, the input as JSON.
        assert_eq!(header("x-amz-target"), "secretsmanager.GetSecretValue");
        assert_eq!(header("content-type"), "application/x-amz-json-1.1");
        let input: serde_json::Value = serde_json::from_str(body).unwrap();
        let id = input["SecretId"].as_str().unwrap_or_default().to_owned();
        if id != "arn:aws:secretsmanager:us-east-1:123456789012:secret:missive-db" {
            return (
                StatusCode::BAD_REQUEST,
                serde_json::json!({
                    "__type": "ResourceNotFoundException",
                    "message": "Secrets Manager can't find the specified secret."
                })
                .to_string(),
            );
        }
        let secret = self.secret.lock().unwrap().clone();
        (
            StatusCode::OK,
            serde_json::json!({
                "ARN": id,
                "Name": "missive-db",
                "SecretString": secret,
                "VersionId": "v1",
                "CreatedDate": 1.7e9,
            })
            .to_string(),
        )
    }
}

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:missive-db";

async fn aws(endpoint: &str) -> Aws {
    Aws::fixed(
        "us-east-1",
        Some(endpoint),
        ACCESS_KEY,
        &SecretString::from("test-secret-key"),
    )
    .await
}

fn secret_json(user: &str, password: &str) -> String {
    serde_json::json!({"username": user, "password": password, "engine": "mariadb", "port": 3306})
        .to_string()
}

async fn root_exec(root: &Db, sql: String) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(root.writer().any())
        .await
        .unwrap();
}

fn settings() -> PoolSettings {
    PoolSettings {
        max_connections: 2,
        idle_timeout: Duration::from_secs(60),
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: None,
    }
}

async fn whoami(db: &Db) -> anyhow::Result<String> {
    let row = query("SELECT CURRENT_USER()")
        .fetch_one(&mut *traced::acquire(db.reader()).await?)
        .await?;
    Ok(row.try_get::<String, _>(0)?)
}

/// The password comes from the (fake) Secrets Manager, signed with SigV4; after a
/// rotation, MariaDB's refusal makes the pool read the secret again and go on.
#[tokio::test]
async fn mariadb_password_from_secrets_manager_survives_a_rotation() {
    let user = format!("rot{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let root = Db::connect_lazy(&mariadb(), settings()).unwrap();
    root_exec(
        &root,
        format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'first-password'"),
    )
    .await;

    let (fake, endpoint) = FakeSecretsManager::start(&secret_json(&user, "first-password")).await;
    let source = Arc::new(SecretPassword::new(
        aws(&endpoint).await,
        ARN,
        "DATABASE_SECRET_ARN",
    ));
    // The URL names no user and no password: both come from the secret.
    let url = format!("{}/", mariadb().replace("root@", "nobody@"));
    let db = Db::connect_lazy(&url, settings())
        .unwrap()
        .with_credentials(&url, source)
        .unwrap();

    let result = async {
        assert!(whoami(&db).await?.starts_with(&format!("{user}@")));
        assert_eq!(fake.calls(), 1, "fetched once, before the first connection");
        let auth = fake.authorizations.lock().unwrap()[0].clone();
        assert!(
            auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/"))
                && auth.contains("/us-east-1/secretsmanager/aws4_request"),
            "{auth}"
        );

        // Rotation: the secret and the server change; open connections are closed (a
        // restart, a failover), so the next one must log in again.
        std::thread::sleep(REFETCH_AFTER_REFUSAL);
        fake.set(&secret_json(&user, "second-password"));
        root_exec(
            &root,
            format!("ALTER USER '{user}'@'%' IDENTIFIED BY 'second-password'"),
        )
        .await;
        close_connections_of(&root, &user).await;
        assert!(whoami(&db).await?.starts_with(&format!("{user}@")));
        assert_eq!(fake.calls(), 2, "read again once, after the refusal");
        anyhow::Ok(())
    }
    .await;

    root_exec(&root, format!("DROP USER '{user}'@'%'")).await;
    result.unwrap();
}

/// A secret that holds the wrong password: the request fails as unavailable (503), the
/// error names the secret, and the secret store is not called in a loop.
#[tokio::test]
async fn a_wrong_secret_is_a_clear_unavailable_error_without_a_fetch_loop() {
    let (fake, endpoint) =
        FakeSecretsManager::start(&secret_json("root", "not-the-password")).await;
    let source = Arc::new(SecretPassword::new(
        aws(&endpoint).await,
        ARN,
        "DATABASE_SECRET_ARN",
    ));
    let db = Db::connect_lazy(&mariadb(), settings())
        .unwrap()
        .with_credentials(&mariadb(), source)
        .unwrap();
    for _ in 0..5 {
        let err = whoami(&db).await.unwrap_err();
        assert!(
            err.downcast_ref::<missive_core::Unavailable>().is_some(),
            "{err:#}"
        );
        assert!(format!("{err:#}").contains("Access denied"), "{err:#}");
    }
    assert_eq!(
        fake.calls(),
        1,
        "refusals inside the quiet period fetch nothing"
    );

    // A secret that does not exist: the SDK's error, naming the variable.
    let source = Arc::new(SecretPassword::new(
        aws(&endpoint).await,
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:other",
        "DATABASE_SECRET_ARN",
    ));
    let err = format!("{:#}", source.fetch().await.unwrap_err());
    assert!(err.contains("ResourceNotFoundException"), "{err}");
    let db = Db::connect_lazy(&mariadb(), settings())
        .unwrap()
        .with_credentials(&mariadb(), source)
        .unwrap();
    let err = whoami(&db).await.unwrap_err();
    assert!(
        err.downcast_ref::<missive_core::Unavailable>().is_some(),
        "a secret that cannot be read is a 503: {err:#}"
    );
    let err = format!("{err:#}");
    assert!(err.contains("DATABASE_SECRET_ARN"), "{err}");
}

async fn close_connections_of(root: &Db, user: &str) {
    let ids: Vec<i64> = query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?")
        .bind(user.to_owned())
        .fetch_all(&mut *traced::acquire(root.reader()).await.unwrap())
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<i64, _>(0).unwrap())
        .collect();
    for id in ids {
        root_exec(root, format!("KILL CONNECTION {id}")).await;
    }
}

/// Redis with an ACL user whose password lives in the (fake) Secrets Manager, rotated.
#[tokio::test]
async fn redis_password_from_secrets_manager_survives_a_rotation() {
    let user = format!("missive-rot-{}", uuid::Uuid::new_v4().simple());
    let admin = redis::Client::open(redis()).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
    let acl = |args: Vec<String>| {
        let mut cmd = redis::cmd("ACL");
        for arg in args {
            cmd.arg(arg);
        }
        cmd
    };
    let _: () = acl(vec![
        "SETUSER".into(),
        user.clone(),
        "on".into(),
        ">first-password".into(),
        "~missive-test:*".into(),
        // PSUBSCRIBE patterns must equal an allowed one: all channels.
        "allchannels".into(),
        "+@all".into(),
    ])
    .query_async(&mut admin)
    .await
    .unwrap();

    let (fake, endpoint) = FakeSecretsManager::start(&secret_json(&user, "first-password")).await;
    let source: Arc<dyn CredentialSource> = Arc::new(SecretPassword::new(
        aws(&endpoint).await,
        ARN,
        "REDIS_SECRET_ARN",
    ));
    let store = RedisKv::with_options(
        &redis(),
        &RedisOptions {
            prefix: format!("missive-test:{user}:"),
            timeout: Duration::from_secs(2),
            ca_file: None,
            credentials: Some(source),
        },
    )
    .unwrap();

    let result = async {
        store.set_ex("k", "v1", Duration::from_secs(30)).await?;
        assert_eq!(
            store.get_ex("k", Duration::from_secs(30)).await?.as_deref(),
            Some("v1")
        );
        // Pub/sub opens a connection of its own, with the same credentials.
        drop(store.subscribe_prefix("chan").await?);

        std::thread::sleep(REFETCH_AFTER_REFUSAL);
        fake.set(&secret_json(&user, "second-password"));
        let _: () = acl(vec![
            "SETUSER".into(),
            user.clone(),
            "resetpass".into(),
            ">second-password".into(),
        ])
        .query_async(&mut admin)
        .await?;
        kill_redis_connections_of(&mut admin, &user).await?;
        // The manager reconnects by itself; the first command may see the dropped
        // connection.
        eventually(|| store.set_ex("k", "v2", Duration::from_secs(30))).await?;
        assert_eq!(
            store.get_ex("k", Duration::from_secs(30)).await?.as_deref(),
            Some("v2")
        );
        assert!(
            fake.calls() >= 2,
            "the secret was read again: {}",
            fake.calls()
        );
        anyhow::Ok(())
    }
    .await;

    let _: () = acl(vec!["DELUSER".into(), user.clone()])
        .query_async(&mut admin)
        .await
        .unwrap();
    result.unwrap();
}

/// Closes every Redis connection of `user`, as a restart or failover would.
async fn kill_redis_connections_of(
    admin: &mut redis::aio::MultiplexedConnection,
    user: &str,
) -> redis::RedisResult<()> {
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("USER")
        .arg(user)
        .query_async(admin)
        .await
}

/// `work`'s first success within 10 s: after a connection was killed, the client
/// reconnects by itself and the first commands may still see the dead connection.
async fn eventually<T, F: Future<Output = anyhow::Result<T>>>(
    work: impl Fn() -> F,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match work().await {
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            done => return done,
        }
    }
}

/// Tokens with a short lifetime: renewed while the connection is open (sent with
/// `AUTH`), and a reconnect uses a current one. Redis accepts several passwords per ACL
/// user, so the test lets in exactly the tokens it wants to.
#[derive(Debug, Default)]
struct ShortTokens {
    issued: AtomicU32,
}

#[async_trait::async_trait]
impl CredentialSource for ShortTokens {
    async fn fetch(&self) -> anyhow::Result<Credentials> {
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Credentials {
            username: None,
            password: format!("token-{n}").into(),
        })
    }
    fn lifetime(&self) -> Option<Duration> {
        Some(Duration::from_millis(300))
    }
    fn describe(&self) -> String {
        "short-lived test tokens".into()
    }
}

#[tokio::test]
async fn redis_tokens_are_renewed_before_they_expire() {
    let user = format!("missive-tok-{}", uuid::Uuid::new_v4().simple());
    let admin = redis::Client::open(redis()).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
    let mut setuser = redis::cmd("ACL");
    setuser
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg("~missive-test:*")
        .arg("+@all");
    for n in 1..=200 {
        setuser.arg(format!(">token-{n}"));
    }
    let _: () = setuser.query_async(&mut admin).await.unwrap();

    let tokens = Arc::new(ShortTokens::default());
    let url = redis().replace("redis://", &format!("redis://{user}@"));
    let store = RedisKv::with_options(
        &url,
        &RedisOptions {
            prefix: format!("missive-test:{user}:"),
            timeout: Duration::from_secs(2),
            ca_file: None,
            credentials: Some(tokens.clone()),
        },
    )
    .unwrap();

    let result = async {
        store.set_ex("k", "v", Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let issued = tokens.issued.load(Ordering::SeqCst);
        assert!(issued >= 3, "renewed while open: {issued} tokens");
        // Every token so far is withdrawn; the open connection stays authenticated
        // (Redis checks passwords at AUTH only), and a reconnect must use a new token.
        let mut withdraw = redis::cmd("ACL");
        withdraw.arg("SETUSER").arg(&user);
        for n in 1..=issued {
            withdraw.arg(format!("<token-{n}"));
        }
        let _: () = withdraw.query_async(&mut admin).await?;
        tokio::time::sleep(Duration::from_millis(400)).await;
        kill_redis_connections_of(&mut admin, &user).await?;
        let value = eventually(|| store.get_ex("k", Duration::from_secs(30))).await?;
        assert_eq!(value.as_deref(), Some("v"));
        anyhow::Ok(())
    }
    .await;

    let _: () = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut admin)
        .await
        .unwrap();
    result.unwrap();
}

/// MSK IAM: the client context signs a token with the process's identity when
/// librdkafka asks (on its own thread, or on a runtime thread).
#[tokio::test(flavor = "multi_thread")]
async fn msk_iam_tokens_are_signed_when_librdkafka_asks() {
    let aws = aws("http://127.0.0.1:9").await;
    let security = KafkaSecurity {
        protocol: SecurityProtocol::SaslSsl,
        mechanism: Some(SaslMechanism::AwsMskIam),
        token_source: Some(Arc::new(MskIam::new(aws))),
        ..KafkaSecurity::default()
    };
    let conn = KafkaConnection::new("b-1.msk.example:9098", &security, None, []).unwrap();
    let context = conn.context();
    let check = |token: rdkafka::client::OAuthToken| {
        use base64::Engine;
        let url = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&token.token)
                .unwrap(),
        )
        .unwrap();
        assert!(
            url.starts_with(
                "https://kafka.us-east-1.amazonaws.com/?Action=kafka-cluster%3AConnect"
            ),
            "{url}"
        );
        assert!(
            url.contains(&format!("X-Amz-Credential={ACCESS_KEY}%2F")),
            "{url}"
        );
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let left = token.lifetime_ms - now_ms;
        assert!((890_000..=900_000).contains(&left), "{left} ms left");
    };
    // On a runtime thread (a consumer polled from a task) ...
    check(context.generate_oauth_token(None).unwrap());
    // ... and on a thread of librdkafka's own.
    let context = conn.context();
    check(
        std::thread::spawn(move || context.generate_oauth_token(None).unwrap())
            .join()
            .unwrap(),
    );

    // Without the sasl_ssl protocol, refused at start.
    let plaintext = KafkaSecurity {
        protocol: SecurityProtocol::SaslPlaintext,
        ..security
    };
    let err = format!(
        "{:#}",
        KafkaConnection::new("b:9098", &plaintext, None, []).unwrap_err()
    );
    assert!(err.contains("sasl_ssl"), "{err}");
}
