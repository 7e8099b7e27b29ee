//! The transactional outbox: its rows (`store`), publishing, and the relay.
//!
//! Handlers write an event in the same database transaction as the change it describes
//! ([`OutboxEntry`], written by [`insert`]). After the commit they call [`Outbox::publish`], which
//! sends the entries to the event transport (Kafka, a Knative sink, or the in-process bus)
//! and marks them sent. If the transport is down the request still succeeds: the rows
//! stay unsent and `outbox-relay` publishes them later. Delivery is therefore
//! at-least-once; every consumer de-duplicates on the event's `source` + `id`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::Instrument as _;

mod store;

pub use store::{OutboxEntry, claim_event, insert, insert_one};

use missive_core::event::AttributesReader as _;
use missive_core::time::now_millis;

use crate::events::EventPublisher;
use crate::sql::Db;

/// How long a request waits for its events to be published before answering anyway.
pub const PUBLISH_WAIT: Duration = Duration::from_secs(2);

/// After the transport failed or was slow, requests stop waiting for it for this long:
/// during a broker outage each request would otherwise spend [`PUBLISH_WAIT`] on it. Their
/// events are still published in the background, or by the relay.
pub const DEGRADED_FOR: Duration = Duration::from_secs(10);

/// Rows per relay round trip.
const RELAY_BATCH: i64 = 100;

/// What one relay run did.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RelayReport {
    /// Whether this run held the lease (another relay may be running).
    pub leased: bool,
    /// Events published.
    pub published: u64,
    /// Old sent rows deleted.
    pub purged: u64,
}

/// Publishes outbox entries. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    db: Db,
    transport: Arc<dyn EventPublisher>,
    marker: Arc<OnceLock<mpsc::Sender<String>>>,
    /// Until when (Unix ms) [`Outbox::publish`] does not wait; see [`DEGRADED_FOR`].
    degraded_until: Arc<AtomicI64>,
}

/// The span in which committed entries are published, a child of the request's span.
fn publish_span(count: usize) -> tracing::Span {
    tracing::info_span!(
        "outbox publish",
        otel.name = "outbox publish",
        missive.outbox.events = count
    )
}

impl Outbox {
    /// An outbox on `db` publishing through `transport`.
    pub fn new(db: Db, transport: Arc<dyn EventPublisher>) -> Self {
        Self {
            db,
            transport,
            marker: Arc::new(OnceLock::new()),
            degraded_until: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Publishes committed entries in order and marks them sent. Waits at most
    /// [`PUBLISH_WAIT`]; publishing goes on in the background past that, and whatever
    /// fails is left for the relay. Never fails the caller: the change is committed.
    /// While the transport is known to be failing ([`DEGRADED_FOR`] after a failure or a
    /// timeout) it does not wait at all.
    pub async fn publish(&self, entries: Vec<OutboxEntry>) {
        if entries.is_empty() {
            return;
        }
        if now_millis() < self.degraded_until.load(Ordering::Relaxed) {
            self.publish_in_background(entries);
            return;
        }
        let this = self.clone();
        let span = publish_span(entries.len());
        let task = tokio::spawn(async move { this.publish_now(entries).await }.instrument(span));
        match tokio::time::timeout(PUBLISH_WAIT, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => {
                self.degrade();
                tracing::warn!(
                    error = format!("{err:#}"),
                    "event left in the outbox for the relay"
                );
            }
            Ok(Err(panic)) => tracing::error!(error = %panic, "publishing task failed"),
            Err(_) => {
                self.degrade();
                tracing::warn!("event transport is slow; publishing continues in the background")
            }
        }
    }

    fn degrade(&self) {
        let until = now_millis() + i64::try_from(DEGRADED_FOR.as_millis()).unwrap_or(i64::MAX);
        self.degraded_until.store(until, Ordering::Relaxed);
    }

    /// Like [`Outbox::publish`] without waiting at all, for callers whose answer does
    /// not depend on the event being out: an event function that has committed its work
    /// should take the next event, not wait for a broker round trip.
    pub fn publish_in_background(&self, entries: Vec<OutboxEntry>) {
        let this = self.clone();
        let span = publish_span(entries.len());
        tokio::spawn(
            async move {
                let result = this.publish_now(entries).await;
                if result.is_ok() {
                    // The transport works again: requests may wait for it again.
                    this.degraded_until.store(0, Ordering::Relaxed);
                }
                if let Err(err) = result {
                    this.degrade();
                    tracing::warn!(
                        error = format!("{err:#}"),
                        "event left in the outbox for the relay"
                    );
                }
            }
            .instrument(span),
        );
    }

    async fn publish_now(&self, entries: Vec<OutboxEntry>) -> anyhow::Result<()> {
        for entry in entries {
            // Stop at the first failure: later events must not overtake an earlier one.
            self.transport.publish(&entry.event).await?;
            self.mark_sent_later(entry.event.id().to_owned());
        }
        Ok(())
    }

    /// Queues `id` to be marked sent; marks are written in batches by one task, so a
    /// burst of requests costs one UPDATE, not one each. A lost mark only means the relay
    /// publishes the event again, which consumers ignore.
    fn mark_sent_later(&self, id: String) {
        let marker = self.marker.get_or_init(|| {
            let (tx, mut rx) = mpsc::channel::<String>(4096);
            let db = self.db.clone();
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(256);
                while rx.recv_many(&mut ids, 256).await > 0 {
                    if let Err(err) = db.mark_sent(&ids).await {
                        tracing::warn!(error = %err, count = ids.len(), "could not mark events sent");
                    }
                    ids.clear();
                }
            });
            tx
        });
        if marker.try_send(id).is_err() {
            tracing::debug!("mark queue full; the relay will republish an event");
        }
    }

    /// The relay: if this caller gets the lease, publishes every unsent row older than
    /// `min_age`, oldest first, then deletes rows sent more than a day ago. Safe to run
    /// concurrently: the lease admits one relay at a time, so none double-publishes and
    /// order is kept.
    pub async fn relay(&self, holder: &str, min_age: Duration) -> anyhow::Result<RelayReport> {
        let lease_ms = 60_000;
        match self.db.unsent_count().await {
            Ok(backlog) => missive_telemetry::metrics::get()
                .outbox_backlog
                .record(u64::try_from(backlog).unwrap_or(0), &[]),
            Err(err) => tracing::warn!(error = %err, "could not count the outbox backlog"),
        }
        if !self.db.acquire_relay_lease(holder, lease_ms).await? {
            return Ok(RelayReport::default());
        }
        let mut report = RelayReport {
            leased: true,
            ..RelayReport::default()
        };
        let result = async {
            let cutoff = now_millis() - i64::try_from(min_age.as_millis()).unwrap_or(i64::MAX);
            loop {
                let rows = self.db.unsent(cutoff, RELAY_BATCH).await?;
                if rows.is_empty() {
                    break;
                }
                // Keep the lease while working through a long backlog.
                self.db.acquire_relay_lease(holder, lease_ms).await?;
                let mut sent = Vec::with_capacity(rows.len());
                let mut failed = None;
                for row in &rows {
                    match self.transport.publish(&row.event).await {
                        Ok(()) => sent.push(row.event.id().to_owned()),
                        Err(err) => {
                            failed = Some(err);
                            break;
                        }
                    }
                }
                self.db.mark_sent(&sent).await?;
                report.published += sent.len() as u64;
                if let Some(err) = failed {
                    return Err(err.context("publishing from the outbox"));
                }
            }
            report.purged = self.db.purge_sent(now_millis() - 24 * 3600 * 1000).await?;
            anyhow::Ok(())
        }
        .await;
        self.db.release_relay_lease(holder).await?;
        result.map(|()| report)
    }
}
