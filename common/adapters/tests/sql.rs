//! The pool's limits against the real MariaDB (`MISSIVE_TEST_DATABASE_URL`, default
//! `mysql://root@127.0.0.1:3306`; a missing server fails the test).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use missive_adapters::sql::traced::{self, query};
use missive_adapters::sql::{Db, PoolSettings};

fn server() -> String {
    std::env::var("MISSIVE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
}

/// A request that timed out must not leave its statement running on the server: the
/// server itself stops it at the statement limit, and the caller gets an error marked
/// unavailable (a 503 at the HTTP edge).
#[tokio::test]
async fn mariadb_stops_a_statement_at_the_statement_limit() {
    let db = Db::connect_lazy(
        &server(),
        PoolSettings {
            max_connections: 1,
            idle_timeout: Duration::from_secs(60),
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Some(Duration::from_millis(500)),
        },
    )
    .unwrap();
    let started = Instant::now();
    let Err(err) = query("SELECT SLEEP(5)")
        .fetch_one(&mut *traced::acquire(db.reader()).await.unwrap())
        .await
    else {
        panic!("the statement ran past its limit");
    };
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(
        err.downcast_ref::<missive_core::Unavailable>().is_some(),
        "{err:#}"
    );
    // The connection is still good for the next statement.
    let row = query("SELECT 1")
        .fetch_one(&mut *traced::acquire(db.reader()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(sqlx::Row::try_get::<i64, _>(&row, 0).unwrap(), 1);
    db.close().await;
}

/// Connections an instance opened at its peak are closed once unused for the idle
/// timeout, so a quiet instance gives them back to the database's `max_connections`.
#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let settings = |max_connections, idle_timeout| PoolSettings {
        max_connections,
        idle_timeout,
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: None,
    };
    let db = Db::connect_lazy(&server(), settings(3, Duration::from_secs(1))).unwrap();
    let observer = Db::connect_lazy(&server(), settings(1, Duration::from_secs(60))).unwrap();
    // Three connections at once: the pool opens three.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(traced::acquire(db.reader()).await.unwrap());
    }
    let mut ids = Vec::new();
    for conn in &mut held {
        let row = query("SELECT CONNECTION_ID()")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        ids.push(sqlx::Row::try_get::<i64, _>(&row, 0).unwrap().to_string());
    }
    drop(held);
    let open = async || -> i64 {
        let sql = format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID IN ({})",
            ids.join(",")
        );
        let mut conn = traced::acquire(observer.reader()).await.unwrap();
        let row = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        sqlx::Row::try_get(&row, 0).unwrap()
    };
    assert_eq!(
        open().await,
        3,
        "released connections stay pooled for reuse"
    );
    let started = Instant::now();
    while open().await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "idle connections still open after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db.close().await;
    observer.close().await;
}
