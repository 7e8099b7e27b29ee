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
