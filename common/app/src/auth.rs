//! Accounts and sessions: signup, login (with throttling of failed attempts), logout, and
//! who is logged in. Passwords are hashed with argon2id ([`password`]); sessions live in
//! the key-value store ([`sessions`]) and reach the browser as an HttpOnly cookie
//! ([`crate::http`]).
//!
//! Each service writes its event with its change and publishes it itself: a handler
//! cannot forget to.

pub mod password;
pub mod sessions;
mod store;

use std::time::Duration;

use missive_core::domain::{Password, SessionId, Username};
use missive_core::event::{EventKind, UserData};
use missive_serve::ApiError;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use sessions::{CurrentUser, Sessions};

use crate::AppState;
use crate::http::ClientAddr;
use missive_adapters::kv::Counter;

/// Failed logins of the whole deployment in the current [`GLOBAL_WINDOW`].
const GLOBAL_FAILURES: &str = "login_failures_global";

/// A user's row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserId(pub i64);

/// The window in which failed logins are counted per account and client, and per client
/// (limits: `LOGIN_FAILURES_PER_ACCOUNT`, `LOGIN_FAILURES_PER_CLIENT`).
pub const ATTEMPT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The window of the global failure count (`LOGIN_FAILURES_GLOBAL_PER_MINUTE`).
pub const GLOBAL_WINDOW: Duration = Duration::from_secs(60);

/// Window of a client's unanswered login attempts, which decide its place in the line
/// for a CPU (see `password::Priority`).
pub const PRIORITY_WINDOW: Duration = Duration::from_secs(60);

/// The window of the signup count per client (`SIGNUPS_PER_CLIENT_PER_HOUR`).
pub const SIGNUP_WINDOW: Duration = Duration::from_secs(3600);

/// How long a client is asked to wait when password hashing is at capacity.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A hashing failure as the client sees it: 503 `overloaded` when the CPUs are booked
/// for longer than [`password::MAX_WAIT`], else what the error is.
fn hashing_error(err: anyhow::Error) -> ApiError {
    if err.is::<password::Busy>() {
        ApiError::Overloaded {
            what: "password checking",
            retry_after: BUSY_RETRY_AFTER,
        }
    } else {
        err.into()
    }
}

/// `POST /api/auth/signup` and `POST /api/auth/login`.
#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    /// 3-32 characters of `a-z`, `0-9` and `_` ([`Username`]).
    #[schema(
        example = "alice",
        min_length = 3,
        max_length = 32,
        pattern = "^[a-z0-9_]{3,32}$"
    )]
    pub username: String,
    /// 8-128 characters (Unicode scalar values, as JSON Schema counts) ([`Password`]).
    #[schema(value_type = String, format = Password, min_length = 8, max_length = 128)]
    pub password: SecretString,
}

/// Who is logged in.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserBody {
    /// The username.
    #[schema(example = "alice")]
    pub username: String,
}

impl From<&CurrentUser> for UserBody {
    fn from(user: &CurrentUser) -> Self {
        Self {
            username: user.username.as_str().to_owned(),
        }
    }
}

/// The event of `kind` about `user`, from `function`.
fn user_event(kind: EventKind, function: &str, user: &Username) -> missive_core::event::CloudEvent {
    crate::events::new(
        kind,
        function,
        user,
        &UserData {
            username: user.as_str().to_owned(),
        },
    )
}

/// Creates an account and logs it in: the user and its `user.registered` event in one
/// transaction that commits only once the session is stored. 409 `username_taken` if the
/// name is taken; with the session store or the database down, 503 and nothing created,
/// so the retry succeeds.
pub async fn signup(
    state: &AppState,
    function: &str,
    credentials: Credentials,
    client: &ClientAddr,
) -> Result<(CurrentUser, SessionId), ApiError> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let username = Username::parse(&credentials.username)?;
    let password = Password::parse(credentials.password)?;
    // Before the hash: a client making accounts in bulk costs one counter each, not a CPU.
    let (signups, window_left) = state
        .kv
        .incr_window(&format!("signups:{}", client.0), SIGNUP_WINDOW)
        .await?;
    if signups > state.config.signups_per_client_per_hour {
        return Err(ApiError::TooManyAttempts {
            retry_after: window_left,
        });
    }
    let hash = password::hash(password).await.map_err(hashing_error)?;
    let event = user_event(EventKind::UserRegistered, function, &username);
    let session = SessionId::generate();
    let session_stored = AtomicBool::new(false);
    let inserted = store::insert_user(&state.db, &username, &hash, event, async |id| {
        let user = CurrentUser {
            id,
            username: username.clone(),
        };
        state.sessions.store(&session, &user).await?;
        session_stored.store(true, Ordering::Relaxed);
        Ok(user)
    })
    .await;
    let (_, entry, user) = match inserted {
        Ok(Some(inserted)) => inserted,
        Ok(None) => return Err(ApiError::UsernameTaken),
        Err(err) => {
            // The commit failed after the session was stored: the session names a user
            // that does not exist (and whose id a later signup may get). End it.
            if session_stored.load(Ordering::Relaxed)
                && let Err(cleanup) = state.sessions.delete(&session).await
            {
                tracing::error!(
                    error = format!("{cleanup:#}"),
                    "could not end the session of a signup that did not commit"
                );
            }
            return Err(err.into());
        }
    };
    missive_telemetry::metrics::get().signups.add(1, &[]);
    state.outbox.publish(vec![entry]).await;
    Ok((user, session))
}

/// Checks a password and starts a fresh session, ending `previous` (the session the
/// request came with) if any. 401 `invalid_credentials` for an unknown user and a wrong
/// password alike.
///
/// 429 `too_many_attempts`, before any password is checked, when within
/// [`ATTEMPT_WINDOW`] this client failed for this username more than
/// `LOGIN_FAILURES_PER_ACCOUNT` times, or for any usernames more than
/// `LOGIN_FAILURES_PER_CLIENT` times; or when the whole deployment saw more than
/// `LOGIN_FAILURES_GLOBAL_PER_MINUTE` failures this minute and this client is one that
/// failed. A guesser therefore locks out only itself: the owner, from their own
/// client, still logs in.
pub async fn login(
    state: &AppState,
    function: &str,
    credentials: Credentials,
    previous: Option<SessionId>,
    client: &ClientAddr,
) -> Result<(CurrentUser, SessionId), ApiError> {
    let config = &state.config;
    let parsed = Username::parse(&credentials.username);
    // Count the attempt before checking it, atomically, so parallel guesses cannot slip
    // in between a check and an increment; a success takes it back.
    let client_key = format!("login_failures_client:{}", client.0);
    // Every attempt of this client not followed by a success, refused ones included: a
    // client refused for lack of CPU retries at once, and must not then go ahead of those
    // who wait their turn.
    let attempts_key = format!("login_attempts_client:{}", client.0);
    let pair_key = parsed
        .as_ref()
        .ok()
        .map(|username| format!("login_failures:{username}:{}", client.0));
    let mut counters = vec![
        Counter {
            key: &client_key,
            by: 1,
            ttl: ATTEMPT_WINDOW,
        },
        Counter {
            key: GLOBAL_FAILURES,
            by: 0,
            ttl: GLOBAL_WINDOW,
        },
        Counter {
            key: &attempts_key,
            by: 1,
            ttl: PRIORITY_WINDOW,
        },
    ];
    if let Some(pair_key) = &pair_key {
        counters.push(Counter {
            key: pair_key,
            by: 1,
            ttl: ATTEMPT_WINDOW,
        });
    }
    let counted = state.kv.incr_windows(&counters).await?;
    let (by_client, client_left) = counted[0];
    let (global, global_left) = counted[1];
    let (attempts, _) = counted[2];
    let (by_pair, pair_left) = counted.get(3).copied().unwrap_or((0, ATTEMPT_WINDOW));
    let refused = if by_pair > config.login_failures_per_account {
        Some(pair_left)
    } else if by_client > config.login_failures_per_client {
        Some(client_left)
    } else if global > config.login_failures_global_per_minute && by_client > 1 {
        Some(global_left)
    } else {
        None
    };
    if let Some(retry_after) = refused {
        return Err(ApiError::TooManyAttempts { retry_after });
    }
    // `success`: the attempts count starts over too.
    let take_back = async |pair_by: i64, success: bool| {
        let mut counters = vec![Counter {
            key: &client_key,
            by: -1,
            ttl: ATTEMPT_WINDOW,
        }];
        if success {
            counters.push(Counter {
                key: &attempts_key,
                by: -i64::try_from(attempts).unwrap_or(i64::MAX),
                ttl: PRIORITY_WINDOW,
            });
        }
        if let Some(pair_key) = &pair_key {
            counters.push(Counter {
                key: pair_key,
                by: -pair_by,
                ttl: ATTEMPT_WINDOW,
            });
        }
        state.kv.incr_windows(&counters).await.map(drop)
    };
    // A client that tried before without success (failed, or was refused and retries)
    // waits behind the others for a CPU (see `password::Priority`).
    let priority = if attempts > 1 || by_client > 1 || by_pair > 1 {
        password::Priority::Low
    } else {
        password::Priority::Normal
    };
    // A name that breaks the signup rule cannot exist: same answer as an unknown user.
    let checked = async {
        let password = Password::parse(credentials.password).ok();
        let Ok(username) = parsed else {
            password::verify_as(password, None, priority).await?;
            return Ok(None);
        };
        let found = store::find_user(&state.db, &username).await?;
        let (id, hash) = match found {
            Some((id, hash)) => (Some(id), Some(hash)),
            None => (None, None),
        };
        let ok = password::verify_as(password, hash, priority).await?;
        Ok::<_, anyhow::Error>(id.filter(|_| ok).map(|id| (id, username)))
    }
    .await;
    let (id, username) = match checked {
        Ok(Some(found)) => found,
        Ok(None) => return Err(failed(state).await),
        Err(err) => {
            // Nothing was checked (hashing is busy, the database is down): the attempt is
            // not held against the client.
            if let Err(undo) = take_back(1, false).await {
                tracing::warn!(
                    error = format!("{undo:#}"),
                    "could not take back a login attempt"
                );
            }
            return Err(hashing_error(err));
        }
    };
    // Not a failure after all: this client's attempt is taken back, its count for this
    // account starts over.
    take_back(i64::try_from(by_pair).unwrap_or(i64::MAX), true).await?;
    if let Some(old) = previous {
        state.sessions.delete(&old).await?;
    }
    let user = CurrentUser { id, username };
    let session = state.sessions.create(&user).await?;
    let entry = state
        .db
        .outbox_alone(user_event(
            EventKind::UserLoggedIn,
            function,
            &user.username,
        ))
        .await?;
    missive_telemetry::metrics::get().logins.add(1, &[]);
    state.outbox.publish(vec![entry]).await;
    Ok((user, session))
}

/// A failed login: counted in the global window; 401 `invalid_credentials`.
async fn failed(state: &AppState) -> ApiError {
    let counted = state
        .kv
        .incr_windows(&[Counter {
            key: GLOBAL_FAILURES,
            by: 1,
            ttl: GLOBAL_WINDOW,
        }])
        .await;
    match counted {
        Ok(_) => ApiError::InvalidCredentials,
        Err(err) => err.into(),
    }
}

/// Ends `session` server-side, if it is a live one, with its `user.logged_out` event;
/// with `everywhere`, every session of its user (other browsers and devices too). Ending
/// no session (or an unknown one) is not an error.
pub async fn logout(
    state: &AppState,
    function: &str,
    session: Option<SessionId>,
    everywhere: bool,
) -> Result<(), ApiError> {
    if let Some(id) = session
        && let Some(user) = state.sessions.get(&id).await?
    {
        state.sessions.delete(&id).await?;
        if everywhere {
            let ended = state.sessions.delete_all(user.id).await?;
            tracing::info!(sessions = ended, "logged out everywhere");
        }
        let entry = state
            .db
            .outbox_alone(user_event(
                EventKind::UserLoggedOut,
                function,
                &user.username,
            ))
            .await?;
        state.outbox.publish(vec![entry]).await;
    }
    Ok(())
}
