//! The outbox relay's lease and bookkeeping, on the real database with a transport the
//! test controls: who holds the lease, takeover of an expired one, renewal through a
//! long backlog, purging, and a failure part-way through a batch.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use missive_adapters::events::EventPublisher;
use missive_adapters::outbox::Outbox;
use missive_adapters::sql::Db;
use missive_core::domain::Username;
use missive_core::event::{AttributesReader as _, CloudEvent, EventKind};
use missive_testkit::Backends;
use serde_json::json;
use sqlx::Row;

use crate::support::App;

/// Publishes by recording the ids, with the lease's expiry as it stood at each event;
/// fails from the `fail_at`-th event on.
struct Recorder {
    db: Db,
    fail_at: Option<usize>,
    sent: Mutex<Vec<(String, i64)>>,
}

#[async_trait]
impl EventPublisher for Recorder {
    async fn publish(&self, event: &CloudEvent) -> anyhow::Result<()> {
        let expires = lease(&self.db).await.1;
        let mut sent = self.sent.lock().unwrap();
        if self.fail_at.is_some_and(|n| sent.len() + 1 >= n) {
            anyhow::bail!("the broker is down");
        }
        sent.push((event.id().to_owned(), expires));
        Ok(())
    }
}

fn outbox_with(app: &App, fail_at: Option<usize>) -> (Outbox, Arc<Recorder>) {
    let recorder = Arc::new(Recorder {
        db: app.state.db.clone(),
        fail_at,
        sent: Mutex::new(Vec::new()),
    });
    (
        Outbox::new(app.state.db.clone(), recorder.clone()),
        recorder,
    )
}

/// The lease row: holder and expiry (Unix ms).
async fn lease(db: &Db) -> (String, i64) {
    let row = sqlx::query("SELECT holder, expires_at FROM outbox_lease WHERE name = 'relay'")
        .fetch_one(db.reader().any())
        .await
        .unwrap();
    (row.try_get(0).unwrap(), row.try_get(1).unwrap())
}

/// `n` events left unpublished, as if their instance had died right after commit.
async fn leave_unpublished(app: &App, n: usize) -> Vec<String> {
    let alice = Username::parse("alice").unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let event = missive_app::events::new(
            EventKind::MessageDeleted,
            "tests",
            &alice,
            &json!({ "id": i.to_string() }),
        );
        ids.push(event.id().to_owned());
        let _left_unpublished = app.state.db.outbox_alone(event).await.unwrap();
    }
    ids
}

api_test!(
    a_relay_stands_aside_while_another_holds_the_lease,
    |b| async move {
        let app = App::start(b).await;
        leave_unpublished(&app, 3).await;
        assert!(
            app.state
                .db
                .acquire_relay_lease("relay-a", 60_000)
                .await
                .unwrap()
        );
        let (outbox, recorder) = outbox_with(&app, None);
        let report = outbox.relay("relay-b", Duration::ZERO).await.unwrap();
        assert!(!report.leased, "{report:?}");
        assert_eq!(report.published, 0);
        assert!(recorder.sent.lock().unwrap().is_empty());
        assert_eq!(app.state.db.unsent_count().await.unwrap(), 3);
        assert_eq!(
            lease(&app.state.db).await.0,
            "relay-a",
            "the holder keeps it"
        );
        // Once the holder is done, the next relay takes it and publishes everything.
        app.state.db.release_relay_lease("relay-a").await.unwrap();
        let report = outbox.relay("relay-b", Duration::ZERO).await.unwrap();
        assert!(report.leased);
        assert_eq!(report.published, 3);
        app.stop().await;
    }
);

api_test!(
    an_expired_lease_is_taken_over_from_a_relay_that_died,
    |b| async move {
        let app = App::start(b).await;
        let ids = leave_unpublished(&app, 2).await;
        // A relay took the lease for 1 ms and died without releasing it.
        assert!(app.state.db.acquire_relay_lease("dead", 1).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (outbox, recorder) = outbox_with(&app, None);
        let report = outbox.relay("alive", Duration::ZERO).await.unwrap();
        assert!(report.leased);
        assert_eq!(report.published, 2);
        let sent: Vec<String> = recorder
            .sent
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.0.clone())
            .collect();
        assert_eq!(sent, ids, "oldest first");
        app.stop().await;
    }
);

api_test!(
    the_lease_is_renewed_while_a_long_backlog_is_published,
    |b| async move {
        let app = App::start(b).await;
        // More than two of the relay's batches (100 rows each).
        leave_unpublished(&app, 230).await;
        let (outbox, recorder) = outbox_with(&app, None);
        let report = outbox.relay("relay", Duration::ZERO).await.unwrap();
        assert_eq!(report.published, 230);
        let sent = recorder.sent.lock().unwrap().clone();
        // Each batch renews the lease before publishing: the expiry seen during the
        // last batch is later than during the first.
        let (first, last) = (sent[0].1, sent[229].1);
        assert!(last > first, "lease not renewed: {first} then {last}");
        // And it is given back at the end.
        assert!(lease(&app.state.db).await.1 <= missive_core::time::now_millis());
        app.stop().await;
    }
);

api_test!(
    rows_sent_over_a_day_ago_are_purged_and_counted,
    |b| async move {
        let app = App::start(b).await;
        let ids = leave_unpublished(&app, 3).await;
        app.state.db.mark_sent(&ids[..2]).await.unwrap();
        // Two rows sent long ago; one unsent.
        sqlx::query("UPDATE outbox SET sent_at = 1 WHERE sent_at IS NOT NULL")
            .execute(app.state.db.writer().any())
            .await
            .unwrap();
        let (outbox, _recorder) = outbox_with(&app, None);
        let report = outbox.relay("relay", Duration::ZERO).await.unwrap();
        assert_eq!((report.published, report.purged), (1, 2), "{report:?}");
        let left: i64 = sqlx::query("SELECT COUNT(*) FROM outbox")
            .fetch_one(app.state.db.reader().any())
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(left, 1, "only the row just sent is kept");
        app.stop().await;
    }
);

api_test!(
    a_failure_part_way_marks_only_what_was_sent,
    |b| async move {
        let app = App::start(b).await;
        leave_unpublished(&app, 5).await;
        // The transport fails on the third event.
        let (outbox, recorder) = outbox_with(&app, Some(3));
        let err = outbox.relay("relay", Duration::ZERO).await.unwrap_err();
        assert!(format!("{err:#}").contains("the broker is down"), "{err:#}");
        assert_eq!(recorder.sent.lock().unwrap().len(), 2);
        assert_eq!(app.state.db.unsent_count().await.unwrap(), 3);
        // The lease is released, so the next run resumes at the third event at once.
        let (outbox, recorder) = outbox_with(&app, None);
        let report = outbox.relay("relay", Duration::ZERO).await.unwrap();
        assert_eq!(report.published, 3);
        assert_eq!(recorder.sent.lock().unwrap().len(), 3);
        app.stop().await;
    }
);
