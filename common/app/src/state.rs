//! [`AppState`]: the backends, built once per process and shared by every router in it.

use std::sync::Arc;

use missive_adapters::events::{self, EventPublisher, InProcessBus, NoTransport};
use missive_adapters::kv::Kv;
use missive_adapters::outbox::Outbox;
use missive_adapters::sql::Db;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::activity::ActivityLog;
use crate::activity::live::{Caps, Live};
use crate::auth::Sessions;
use crate::config::Config;
use crate::messages::MessageStore;

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
    /// Live activity: one subscription per process, fanned out to its streams.
    pub live: Live,
    /// The messages (on `db`).
    pub messages: MessageStore,
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
    /// Builds every backend from config without any network I/O (pools are lazy). The
    /// event transport is Kafka (`KAFKA_BROKERS`), else HTTP to `K_SINK`, else the
    /// in-process bus.
    pub fn build(config: Config) -> anyhow::Result<Self> {
        let (transport, bus) = events::transport(
            config.kafka()?.as_ref(),
            &config.kafka_events_topic,
            config.k_sink.as_deref(),
        )?;
        Self::with_transport(config, transport, bus)
    }

    /// Like [`AppState::build`] for a function that publishes no event: it needs no
    /// transport, and starts without `KAFKA_BROKERS` or `K_SINK`.
    pub fn without_transport(config: Config) -> anyhow::Result<Self> {
        Self::with_transport(
            config,
            Arc::new(NoTransport),
            Arc::new(InProcessBus::default()),
        )
    }

    fn with_transport(
        config: Config,
        transport: Arc<dyn EventPublisher>,
        bus: Arc<InProcessBus>,
    ) -> anyhow::Result<Self> {
        let url = config.database_url()?;
        let mut db = Db::connect_lazy(url.expose_secret(), config.pool_settings())?;
        if let Some(source) = config.database_credentials()? {
            db = db.with_credentials(url.expose_secret(), source)?;
        }
        let kv = missive_adapters::kv::from_url(
            config.redis_url.as_ref().map(|u| u.expose_secret()),
            &missive_adapters::kv::RedisOptions {
                prefix: config.redis_key_prefix.clone(),
                timeout: config.backend_timeout(),
                ca_file: config.redis_ca_file.clone(),
                credentials: config.redis_credentials()?,
            },
        )?;
        Ok(Self {
            outbox: Outbox::new(db.clone(), transport.clone()),
            sessions: Sessions::new(kv.clone(), config.session_ttl(), config.session_max_age()),
            activity: ActivityLog::new(kv.clone()),
            live: Live::new(
                kv.clone(),
                Caps {
                    per_user: config.streams_per_user,
                    per_instance: config.streams_per_instance,
                },
                config.backend_timeout(),
            ),
            messages: MessageStore::new(db.clone()),
            config: Arc::new(config),
            db,
            kv,
            transport,
            bus,
            shutdown: CancellationToken::new(),
        })
    }

    /// What `/readyz` checks: the database (and its schema version) and the key-value
    /// store.
    pub fn readiness(&self) -> missive_serve::Readiness {
        let (db, kv) = (self.db.clone(), self.kv.clone());
        Arc::new(move || {
            let (db, kv) = (db.clone(), kv.clone());
            vec![
                ("database", Box::pin(async move { db.ping().await }) as _),
                ("redis", Box::pin(async move { kv.ping().await }) as _),
            ]
        })
    }

    /// The runtime contract's layers around `routes`, with this state's limits and
    /// readiness.
    pub fn serve(&self, routes: axum::Router) -> axum::Router {
        missive_serve::app(routes, self.config.limits(), self.readiness())
    }
}
