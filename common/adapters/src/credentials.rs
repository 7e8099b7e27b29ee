//! Backend credentials that do not live in a URL: a password kept in a secret store and
//! rotated there, or a short-lived token signed from the process's cloud identity (the
//! `aws` feature: [`crate::aws`]). The database pool ([`crate::sql`]) and the Redis
//! client ([`crate::kv`]) take a [`CredentialSource`] through a [`CredentialCache`]:
//! fetched before the first connection, fetched again when the backend refuses the
//! ones in use (the secret was rotated), and, for tokens, before they expire.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};

/// A user name and password (or token used as one).
#[derive(Clone)]
pub struct Credentials {
    /// `None` keeps the user name of the URL.
    pub username: Option<String>,
    /// The password or token.
    pub password: SecretString,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        self.username == other.username
            && self.password.expose_secret() == other.password.expose_secret()
    }
}

/// Where credentials come from.
#[async_trait::async_trait]
pub trait CredentialSource: Send + Sync + fmt::Debug {
    /// Fetches the current credentials (a network call: a secret store, or signing with
    /// freshly loaded cloud credentials).
    async fn fetch(&self) -> anyhow::Result<Credentials>;

    /// How long fetched credentials may be used for new connections: `Some` for tokens
    /// (fetched again before they expire), `None` for passwords, which last until the
    /// backend refuses them.
    fn lifetime(&self) -> Option<Duration>;

    /// What the credentials are for and where they come from, for errors and logs (the
    /// variable that configured it, never a secret).
    fn describe(&self) -> String;
}

/// Fetched credentials, shared by every connection of one backend.
#[derive(Debug)]
pub struct CredentialCache {
    source: Arc<dyn CredentialSource>,
    current: tokio::sync::Mutex<Option<(Instant, Credentials)>>,
}

/// After a refusal the source is asked again, but not more often than this: a backend
/// that refuses every attempt (a wrong secret) must not turn into a loop of secret-store
/// calls, one per connection attempt.
pub const REFETCH_AFTER_REFUSAL: Duration = Duration::from_secs(5);

impl CredentialCache {
    /// Nothing is fetched until the first connection needs it.
    pub fn new(source: Arc<dyn CredentialSource>) -> Self {
        Self {
            source,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The credentials to connect with: cached ones while they are valid, else fresh
    /// ones (one fetch however many connections ask at once).
    pub async fn get(&self) -> anyhow::Result<Credentials> {
        self.get_within(self.source.lifetime()).await
    }

    /// For a new connection whose client cannot say why its last one failed (Redis
    /// reconnects by itself): credentials fetched within the quiet period, else fresh
    /// ones. New connections are rare (one per process, and reconnects), so a rotated
    /// secret is picked up by the first reconnect after the quiet period.
    pub async fn get_for_new_connection(&self) -> anyhow::Result<Credentials> {
        let max_age = match self.source.lifetime() {
            Some(lifetime) => lifetime.min(REFETCH_AFTER_REFUSAL),
            None => REFETCH_AFTER_REFUSAL,
        };
        self.get_within(Some(max_age)).await
    }

    async fn get_within(&self, max_age: Option<Duration>) -> anyhow::Result<Credentials> {
        let mut current = self.current.lock().await;
        if let Some((fetched, credentials)) = current.as_ref()
            && max_age.is_none_or(|max_age| fetched.elapsed() < max_age)
        {
            return Ok(credentials.clone());
        }
        let fresh = self.fetch().await?;
        *current = Some((Instant::now(), fresh.clone()));
        Ok(fresh)
    }

    /// How long fetched credentials last (`None`: until refused).
    pub fn lifetime(&self) -> Option<Duration> {
        self.source.lifetime()
    }

    /// Whether cached credentials are due for renewal (tokens near their lifetime; never
    /// for passwords, nor before the first fetch).
    pub fn due(&self) -> bool {
        let Some(lifetime) = self.source.lifetime() else {
            return false;
        };
        match self.current.try_lock() {
            Ok(current) => current
                .as_ref()
                .is_some_and(|(fetched, _)| fetched.elapsed() >= lifetime),
            // Someone is fetching right now.
            Err(_) => false,
        }
    }

    /// The backend refused `used`: the next [`CredentialCache::get`] fetches again,
    /// unless someone already did (concurrent refusals fetch once) or the last fetch is
    /// too recent. Returns whether fresh credentials may now differ from `used`.
    pub async fn refused(&self, used: &Credentials) -> bool {
        let mut current = self.current.lock().await;
        match current.as_ref() {
            Some((_, credentials)) if credentials != used => true,
            Some((fetched, _)) if fetched.elapsed() < REFETCH_AFTER_REFUSAL => false,
            _ => {
                *current = None;
                true
            }
        }
    }

    /// What the source is, for messages.
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    async fn fetch(&self) -> anyhow::Result<Credentials> {
        let started = Instant::now();
        let fetched = self.source.fetch().await;
        match &fetched {
            Ok(_) => tracing::info!(
                source = %self.source.describe(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "fetched credentials"
            ),
            Err(err) => tracing::warn!(
                source = %self.source.describe(),
                error = format!("{err:#}"),
                "fetching credentials failed"
            ),
        }
        fetched.map_err(|err| err.context(format!("fetching {}", self.source.describe())))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[derive(Debug)]
    struct Counting {
        fetches: AtomicU32,
        lifetime: Option<Duration>,
    }

    #[async_trait::async_trait]
    impl CredentialSource for Counting {
        async fn fetch(&self) -> anyhow::Result<Credentials> {
            let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(Credentials {
                username: None,
                password: format!("password-{n}").into(),
            })
        }
        fn lifetime(&self) -> Option<Duration> {
            self.lifetime
        }
        fn describe(&self) -> String {
            "a counting source".into()
        }
    }

    fn cache(lifetime: Option<Duration>) -> (Arc<Counting>, CredentialCache) {
        let source = Arc::new(Counting {
            fetches: AtomicU32::new(0),
            lifetime,
        });
        (source.clone(), CredentialCache::new(source))
    }

    #[tokio::test]
    async fn passwords_are_fetched_once_and_again_after_a_refusal() {
        let (source, cache) = cache(None);
        let first = cache.get().await.unwrap();
        assert_eq!(cache.get().await.unwrap(), first);
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
        assert!(!cache.due(), "a password never expires by itself");

        // A refusal right after the fetch does not fetch again (a wrong secret must
        // not become a loop of secret-store calls) ...
        assert!(!cache.refused(&first).await);
        assert_eq!(cache.get().await.unwrap(), first);
        // ... but one of credentials someone already replaced says "try again".
        let stale = Credentials {
            username: None,
            password: "old".to_owned().into(),
        };
        assert!(cache.refused(&stale).await);
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_refusal_after_the_quiet_period_fetches_again() {
        let (source, cache) = cache(None);
        let first = cache.get().await.unwrap();
        std::thread::sleep(REFETCH_AFTER_REFUSAL + Duration::from_millis(50));
        assert!(cache.refused(&first).await);
        let second = cache.get().await.unwrap();
        assert_ne!(second, first);
        assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn tokens_are_fetched_again_when_their_lifetime_is_over() {
        let (source, cache) = cache(Some(Duration::from_millis(200)));
        let first = cache.get().await.unwrap();
        assert!(!cache.due());
        assert_eq!(cache.get().await.unwrap(), first);
        std::thread::sleep(Duration::from_millis(250));
        assert!(cache.due());
        assert_ne!(cache.get().await.unwrap(), first);
        assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
        assert!(!cache.due());
    }

    #[test]
    fn debug_never_shows_the_password() {
        let credentials = Credentials {
            username: Some("app".into()),
            password: "hunter2".to_owned().into(),
        };
        let shown = format!("{credentials:?}");
        assert!(
            shown.contains("app") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
