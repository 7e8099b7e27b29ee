//! Every SQL statement runs in a client span named and attributed per OpenTelemetry's
//! database conventions (`db.system.name`, `db.namespace`, `db.operation.name`,
//! `db.collection.name`, `db.query.text` with its `?` placeholders, never the values) and
//! is timed into `db.client.operation.duration`. Use [`query`] where `sqlx::query` would be.

use std::sync::OnceLock;
use std::time::Instant;

use opentelemetry::KeyValue;
use sqlx::any::{AnyArguments, AnyQueryResult, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::{Any, AssertSqlSafe, Encode, Executor, Transaction, Type};
use tracing::Span;

/// The database this process talks to: `db.system.name` and `db.namespace`. One per
/// process (a function or `missive dev` opens one database), set by the first pool.
static TARGET: OnceLock<(&'static str, String)> = OnceLock::new();

pub(crate) fn set_target(system: &'static str, namespace: String) {
    let _ = TARGET.set((system, namespace));
}

/// A statement about to run, with its span.
pub struct Statement<'q> {
    query: Query<'q, Any, AnyArguments>,
    span: Span,
    operation: &'static str,
    collection: &'static str,
}

/// `sqlx::query` for fixed SQL, traced.
pub fn query(sql: &'static str) -> Statement<'static> {
    Statement::new(sqlx::query(sql), sql)
}

/// `sqlx::query` for SQL assembled at run time from fixed fragments (never from input:
/// values are bound), traced.
pub fn query_built(sql: String) -> Statement<'static> {
    let span_text = sql.clone();
    Statement::new(sqlx::query(AssertSqlSafe(sql)), &span_text)
}

/// Takes a connection from the pool, in a span of its own: waiting for a connection is
/// the first thing to look at when queries are fast and requests are not.
pub async fn acquire(pool: &super::Pool) -> anyhow::Result<PoolConnection<Any>> {
    let (system, namespace) = target();
    let span = tracing::info_span!(
        "db.pool.acquire",
        otel.name = "acquire connection",
        db.system.name = system,
        db.namespace = namespace,
    );
    leaf(span, pool.acquire()).await.map_err(outage)
}

/// Opens a transaction on a connection from `pool`.
pub async fn begin(pool: &super::Pool) -> anyhow::Result<Transaction<'static, Any>> {
    let conn = acquire(pool).await?;
    leaf(span("BEGIN"), Transaction::begin(conn, None))
        .await
        .map_err(outage)
}

/// Commits `tx`.
pub async fn commit(tx: Transaction<'_, Any>) -> anyhow::Result<()> {
    leaf(span("COMMIT"), tx.commit()).await.map_err(outage)
}

/// A span for a statement that is not a query (`BEGIN`, `COMMIT`).
fn span(operation: &'static str) -> Span {
    let (system, namespace) = target();
    tracing::info_span!(
        "db",
        otel.name = operation,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system.name = system,
        db.namespace = namespace,
        db.operation.name = operation,
    )
}

/// Runs `work` inside `span` without entering it. A statement's span has no children,
/// so entering it would only tell the subscriber about every poll (sqlx's SQLite driver
/// streams rows through a channel: a poll per row or two), which with spans exported
/// costs more than the span itself. The span opens when it is created and closes when
/// it is dropped, after `work` is done.
async fn leaf<F: Future>(span: Span, work: F) -> F::Output {
    let output = work.await;
    drop(span);
    output
}

fn target() -> (&'static str, &'static str) {
    TARGET
        .get()
        .map_or(("other_sql", ""), |(system, namespace)| {
            (*system, namespace.as_str())
        })
}

impl<'q> Statement<'q> {
    fn new(query: Query<'q, Any, AnyArguments>, sql: &str) -> Self {
        let (operation, collection) = describe(sql);
        let (system, namespace) = target();
        let span = tracing::info_span!(
            "db",
            otel.name = format!("{operation} {collection}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system.name = system,
            db.namespace = namespace,
            db.operation.name = operation,
            db.collection.name = collection,
            db.query.text = sql,
            "error.type" = tracing::field::Empty,
        );
        Self {
            query,
            span,
            operation,
            collection,
        }
    }

    /// Binds the next `?`.
    pub fn bind<'t, T: Encode<'t, Any> + Type<Any>>(mut self, value: T) -> Self {
        self.query = self.query.bind(value);
        self
    }

    /// Runs the statement.
    pub async fn execute<'e, 'c: 'e, E>(self, executor: E) -> anyhow::Result<AnyQueryResult>
    where
        'q: 'e,
        E: Executor<'c, Database = Any>,
    {
        let (query, done) = self.split();
        done.finish(query.execute(executor)).await
    }

    /// Runs the statement for exactly one row.
    pub async fn fetch_one<'e, 'c: 'e, E>(self, executor: E) -> anyhow::Result<AnyRow>
    where
        'q: 'e,
        E: Executor<'c, Database = Any>,
    {
        let (query, done) = self.split();
        done.finish(query.fetch_one(executor)).await
    }

    /// Runs the statement for at most one row.
    pub async fn fetch_optional<'e, 'c: 'e, E>(self, executor: E) -> anyhow::Result<Option<AnyRow>>
    where
        'q: 'e,
        E: Executor<'c, Database = Any>,
    {
        let (query, done) = self.split();
        done.finish(query.fetch_optional(executor)).await
    }

    /// Runs the statement for all its rows.
    pub async fn fetch_all<'e, 'c: 'e, E>(self, executor: E) -> anyhow::Result<Vec<AnyRow>>
    where
        'q: 'e,
        E: Executor<'c, Database = Any>,
    {
        let (query, done) = self.split();
        done.finish(query.fetch_all(executor)).await
    }

    fn split(self) -> (Query<'q, Any, AnyArguments>, Running) {
        (
            self.query,
            Running {
                span: self.span,
                operation: self.operation,
                collection: self.collection,
            },
        )
    }
}

struct Running {
    span: Span,
    operation: &'static str,
    collection: &'static str,
}

impl Running {
    async fn finish<T>(self, run: impl Future<Output = sqlx::Result<T>>) -> anyhow::Result<T> {
        let started = Instant::now();
        let result = run.await;
        let (system, _) = target();
        let mut attributes = vec![
            KeyValue::new("db.system.name", system),
            KeyValue::new("db.operation.name", self.operation),
            KeyValue::new("db.collection.name", self.collection),
        ];
        if let Err(err) = &result {
            let kind = error_type(err);
            self.span.record("otel.status_code", "error");
            self.span.record("error.type", kind);
            attributes.push(KeyValue::new("error.type", kind));
        }
        missive_telemetry::metrics::get()
            .db_duration
            .record(started.elapsed().as_secs_f64(), &attributes);
        result.map_err(outage)
    }
}

/// A low-cardinality name for a failure (`error.type`).
/// A database error as the layers above see it. One that says the database is down,
/// unreachable, out of connections, shutting down or busy (no connection within the
/// pool's acquire timeout, an I/O or TLS failure, the codes below) is marked
/// [`missive_core::Unavailable`], and a request that meets it is answered 503. The rest (a
/// constraint, a bad statement) stays a plain failure; the original `sqlx::Error` is kept
/// underneath for callers that look (see [`crate::sql::is_unique_violation`]).
pub(crate) fn outage(err: sqlx::Error) -> anyhow::Error {
    let down = match &err {
        // Configuration: the credentials could not be fetched (a secret store that is
        // unreachable or refuses us): the database cannot be reached either.
        sqlx::Error::Io(_)
        | sqlx::Error::Configuration(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            // SQLSTATE class 08 (connection exception: too many connections, server
            // shutdown, ...) and 70100 (MariaDB killed the connection, as it does when it
            // shuts down); SQLite's SQLITE_BUSY family, past its busy timeout.
            let code = db.code();
            let code = code.as_deref().unwrap_or_default();
            // 28000: access denied (credentials refused even after fetching them
            // again: a rotation under way, or a wrong secret): unavailable, not a bug.
            code.starts_with("08") || ["28000", "70100", "5", "261", "517"].contains(&code)
        }
        _ => false,
    };
    if down {
        super::connect_error(err).context(missive_core::Unavailable::DATABASE)
    } else {
        err.into()
    }
}

fn error_type(err: &sqlx::Error) -> &'static str {
    match err {
        sqlx::Error::Database(db) if db.is_unique_violation() => "unique_violation",
        sqlx::Error::Database(_) => "database",
        sqlx::Error::PoolTimedOut => "pool_timeout",
        sqlx::Error::Io(_) => "io",
        sqlx::Error::RowNotFound => "row_not_found",
        _ => "other",
    }
}

/// `db.operation.name` and `db.collection.name` of a statement: its first keyword, and
/// the table after `INTO`, `FROM` or `UPDATE`. Runs for every statement, so it allocates
/// nothing: both are `'static` (our schema's tables; anything else is `other`).
fn describe(sql: &str) -> (&'static str, &'static str) {
    let mut words = sql.split_whitespace();
    let first = words.next().unwrap_or_default();
    let operation = ["SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE"]
        .into_iter()
        .find(|op| first.eq_ignore_ascii_case(op))
        .unwrap_or("OTHER");
    let mut words = sql.split_whitespace().peekable();
    while let Some(word) = words.next() {
        let before_table = word.eq_ignore_ascii_case("INTO")
            || word.eq_ignore_ascii_case("FROM")
            || (operation == "UPDATE" && word.eq_ignore_ascii_case("UPDATE"));
        if let (true, Some(table)) = (before_table, words.peek()) {
            let table = table.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_'));
            return (operation, table_name(table));
        }
    }
    (operation, "")
}

/// The `'static` name of one of our tables.
fn table_name(table: &str) -> &'static str {
    [
        "users",
        "messages",
        "message_tokens",
        "outbox",
        "outbox_lease",
        "processed_events",
        "idempotency_keys",
    ]
    .into_iter()
    .find(|known| table.eq_ignore_ascii_case(known))
    .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn statements_are_described_by_operation_and_table() {
        for (sql, op, table) in [
            ("SELECT id FROM users WHERE username = ?", "SELECT", "users"),
            (
                "INSERT INTO messages (user_id, text) SELECT id, ? FROM users",
                "INSERT",
                "messages",
            ),
            (
                "UPDATE outbox SET sent_at = ? WHERE id = ?",
                "UPDATE",
                "outbox",
            ),
            ("DELETE FROM messages WHERE id = ?", "DELETE", "messages"),
            (
                "INSERT IGNORE INTO processed_events VALUES (?)",
                "INSERT",
                "processed_events",
            ),
        ] {
            assert_eq!(describe(sql), (op, table), "{sql}");
        }
    }
}
