//! Live activity for every stream of this process through one Redis subscription.
//!
//! Each open stream used to hold a pub/sub connection of its own, so one account could
//! exhaust Redis' `maxclients`. Now the process subscribes once to every activity
//! channel (`PSUBSCRIBE activity:*`) and fans each entry out in memory to the streams of
//! its user. The number of streams is capped per user ([`Full::User`], 429) and per
//! instance ([`Full::Instance`], 503).
//!
//! When the subscription drops (Redis restarted, the network blinked) or a stream falls
//! behind, its streams are told to [`Signal::Resync`]: they read what they missed from
//! the log itself, where every entry has its sequence number, so nothing is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use missive_adapters::kv::Kv;
use missive_core::domain::Username;
use tokio::sync::{broadcast, watch};

use super::CHANNEL_PREFIX;

/// What a stream hears.
#[derive(Debug, Clone)]
pub enum Signal {
    /// A new entry, as published (JSON of [`super::Entry`]).
    Entry(Arc<str>),
    /// Entries may have been missed: read the log after the last one sent.
    Resync,
}

/// Why a stream could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// This user has [`Caps::per_user`] streams open already.
    User,
    /// This instance serves [`Caps::per_instance`] streams already.
    Instance,
}

/// Stream limits.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Streams one user may hold open on one instance.
    pub per_user: usize,
    /// Streams one instance serves.
    pub per_instance: usize,
}

/// Entries buffered per user before a slow stream is told to resync instead.
const BUFFER: usize = 64;

/// How long to wait before subscribing again after the subscription failed.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// The process's fan-out. Cheap to clone (one `Arc`: it is cloned with the app state on
/// every request).
#[derive(Clone)]
pub struct Live(Arc<Shared>);

struct Shared {
    kv: Arc<dyn Kv>,
    caps: Caps,
    timeout: Duration,
    inner: Arc<Mutex<Inner>>,
    /// `true` while subscribed; `None` until the first stream starts the subscriber.
    connected: Mutex<Option<watch::Receiver<bool>>>,
}

#[derive(Default)]
struct Inner {
    users: HashMap<String, (broadcast::Sender<Signal>, usize)>,
    total: usize,
}

/// One stream's place: its receiver, and its slot in the counts (freed when dropped).
pub struct Listener {
    /// The user's signals.
    pub signals: broadcast::Receiver<Signal>,
    user: String,
    inner: Arc<Mutex<Inner>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut inner = lock(&self.inner);
        inner.total = inner.total.saturating_sub(1);
        if let Some((_, count)) = inner.users.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                inner.users.remove(&self.user);
            }
        }
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    // Every change under the lock is a counter or a map entry: consistent after a panic.
    inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Live {
    /// A fan-out over `kv`; subscribes on the first [`Live::listen`]. `timeout` bounds
    /// the wait for the subscription.
    pub fn new(kv: Arc<dyn Kv>, caps: Caps, timeout: Duration) -> Self {
        Self(Arc::new(Shared {
            kv,
            caps,
            timeout,
            inner: Arc::default(),
            connected: Mutex::default(),
        }))
    }

    /// Streams open on this instance now.
    pub fn open_streams(&self) -> usize {
        lock(&self.0.inner).total
    }

    /// A place for one more stream of `user`, once the subscription is up: entries
    /// published after this returns reach it. `Err(Full)` past a cap; an error marked
    /// unavailable when the subscription cannot be made.
    pub async fn listen(&self, user: &Username) -> anyhow::Result<Result<Listener, Full>> {
        let this = &self.0;
        let listener = {
            let mut inner = lock(&this.inner);
            if inner.total >= this.caps.per_instance {
                return Ok(Err(Full::Instance));
            }
            let (sender, count) = inner
                .users
                .entry(user.as_str().to_owned())
                .or_insert_with(|| (broadcast::channel(BUFFER).0, 0));
            if *count >= this.caps.per_user {
                return Ok(Err(Full::User));
            }
            *count += 1;
            let signals = sender.subscribe();
            inner.total += 1;
            Listener {
                signals,
                user: user.as_str().to_owned(),
                inner: this.inner.clone(),
            }
        };
        self.subscribed().await?;
        Ok(Ok(listener))
    }

    /// Starts the subscriber if it is not running, and waits until it is subscribed.
    async fn subscribed(&self) -> anyhow::Result<()> {
        let this = &self.0;
        let mut connected = {
            let mut slot = this
                .connected
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            slot.get_or_insert_with(|| {
                let (tx, rx) = watch::channel(false);
                tokio::spawn(subscriber(this.kv.clone(), this.inner.clone(), tx));
                rx
            })
            .clone()
        };
        tokio::time::timeout(this.timeout, connected.wait_for(|up| *up))
            .await
            .map_err(|_| {
                anyhow::anyhow!("subscribing to live activity timed out")
                    .context(missive_core::Unavailable::SESSION_STORE)
            })?
            .map_err(|_| anyhow::anyhow!("the live activity subscriber stopped"))?;
        Ok(())
    }
}

/// Subscribes to every activity channel and fans out, for the life of the process;
/// subscribes again when the subscription drops, and tells every stream to resync then.
async fn subscriber(kv: Arc<dyn Kv>, inner: Arc<Mutex<Inner>>, connected: watch::Sender<bool>) {
    loop {
        match kv.subscribe_prefix(CHANNEL_PREFIX).await {
            Ok(mut messages) => {
                connected.send_replace(true);
                // Whatever was published while we were away is in the logs.
                broadcast_to_all(&inner, &Signal::Resync);
                while let Some((channel, message)) = messages.next().await {
                    let Some(user) = channel.strip_prefix(CHANNEL_PREFIX) else {
                        continue;
                    };
                    if let Some((sender, _)) = lock(&inner).users.get(user) {
                        // No receiver left is fine: the stream just ended.
                        let _ = sender.send(Signal::Entry(message.into()));
                    }
                }
                connected.send_replace(false);
                tracing::warn!("the live activity subscription ended; subscribing again");
            }
            Err(err) => {
                tracing::warn!(
                    error = format!("{err:#}"),
                    "subscribing to live activity failed"
                );
            }
        }
        if connected.is_closed() && lock(&inner).users.is_empty() {
            // Nobody can listen any more (the app state is gone).
            return;
        }
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}

fn broadcast_to_all(inner: &Mutex<Inner>, signal: &Signal) {
    for (sender, _) in lock(inner).users.values() {
        let _ = sender.send(signal.clone());
    }
}
