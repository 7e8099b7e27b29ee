//! [`AppState`]: the backends, built once per process and shared by every router in it.

use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::activity::ActivityLog;
use crate::config::Config;
use crate::db::Db;
use crate::events::{CloudEvent, EventPublisher, InProcessBus};
use crate::kv::Kv;
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
    /// Where events go.
    pub events: Arc<dyn EventPublisher>,
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
        let (events, bus) = crate::events::publisher(config.k_sink.as_deref())?;
        Ok(Self {
            sessions: Sessions::new(kv.clone(), config.session_ttl()),
            activity: ActivityLog::new(kv.clone()),
            config: Arc::new(config),
            db,
            kv,
            events,
            bus,
            shutdown: CancellationToken::new(),
        })
    }

    /// Publishes an event after the state change it describes has been committed. A
    /// failure is logged, not returned: the change happened and the client must hear so.
    /// (Until the transactional outbox exists, such an event is lost.)
    pub async fn emit(&self, event: CloudEvent) {
        if let Err(err) = self.events.publish(&event).await {
            tracing::error!(
                error = format!("{err:#}"),
                event.id = %event.id,
                event.r#type = %event.ty,
                "event not delivered"
            );
        }
    }
}
