//! [`AppState`]: the backends, built once per process and shared by every router in it.

use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::activity::ActivityLog;
use crate::config::Config;
use crate::db::Db;
use crate::events::{EventPublisher, InProcessBus};
use crate::kv::Kv;
use crate::outbox::Outbox;
use crate::sessions::Sessions;

/// Everything a handler may use. Cheap to clone (all handles).
#[derive(Clone)]
pub struct AppState {
    /// The configuration this process started with.
    pub config: Arc<Config>,
    /// The SQL database.
    pub db: Db,
    /// Redis or the in-process store.
    pub kv: Arc<dyn Kv>,
    /// Server-side sessions (on `kv`).
    pub sessions: Sessions,
    /// The activity log (on `kv`).
    pub activity: ActivityLog,
    /// The event transport (Kafka, a Knative sink, or the in-process bus).
    pub transport: Arc<dyn EventPublisher>,
    /// Publishes committed outbox entries through `transport`.
    pub outbox: Outbox,
    /// The in-process bus; consumers subscribe here when they run in this process.
    pub bus: Arc<InProcessBus>,
    /// Cancelled on SIGTERM; long-lived responses (SSE) end when it fires.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// Builds every backend from config without any network I/O (pools are lazy).
    pub fn build(config: Config) -> anyhow::Result<Self> {
        let url = config
            .database_url
            .as_ref()
            .context("DATABASE_URL is required (mysql://... or sqlite://...)")?;
        let db = Db::connect_lazy(url.expose_secret(), config.db_max_connections)?;
        let kv = crate::kv::from_url(
            config.redis_url.as_ref().map(|u| u.expose_secret()),
            &config.redis_key_prefix,
        )?;
        let (transport, bus) = crate::events::transport(&config)?;
        Ok(Self {
            outbox: Outbox::new(db.clone(), transport.clone()),
            sessions: Sessions::new(kv.clone(), config.session_ttl()),
            activity: ActivityLog::new(kv.clone()),
            config: Arc::new(config),
            db,
            kv,
            transport,
            bus,
            shutdown: CancellationToken::new(),
        })
    }
}
