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

/// A user's row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserId(pub i64);

/// Failed logins allowed per username within [`ATTEMPT_WINDOW`].
pub const MAX_FAILED_ATTEMPTS: u64 = 5;

/// The window in which failed logins are counted.
pub const ATTEMPT_WINDOW: Duration = Duration::from_secs(15 * 60);

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
) -> Result<(CurrentUser, SessionId), ApiError> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let username = Username::parse(&credentials.username)?;
    let password = Password::parse(credentials.password)?;
    let hash = password::hash(password).await?;
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
/// password alike; 429 `too_many_attempts` after [`MAX_FAILED_ATTEMPTS`] failures within
/// [`ATTEMPT_WINDOW`].
pub async fn login(
    state: &AppState,
    function: &str,
    credentials: Credentials,
    previous: Option<SessionId>,
) -> Result<(CurrentUser, SessionId), ApiError> {
    // A name that breaks the signup rule cannot exist: same answer as an unknown user.
    let Ok(username) = Username::parse(&credentials.username) else {
        let _ = password::verify(Password::parse(credentials.password).ok(), None).await;
        return Err(ApiError::InvalidCredentials);
    };
    // Count the attempt before checking it, atomically: parallel guesses cannot slip in
    // between a check and an increment. Success clears the counter.
    let counter = format!("login_failures:{username}");
    let (attempts, window_left) = state.kv.incr_window(&counter, ATTEMPT_WINDOW).await?;
    if attempts > MAX_FAILED_ATTEMPTS {
        return Err(ApiError::TooManyAttempts {
            retry_after: window_left,
        });
    }
    let found = store::find_user(&state.db, &username).await?;
    let password = Password::parse(credentials.password).ok();
    let (id, hash) = match found {
        Some((id, hash)) => (Some(id), Some(hash)),
        None => (None, None),
    };
    let ok = password::verify(password, hash).await?;
    let Some(id) = id.filter(|_| ok) else {
        return Err(ApiError::InvalidCredentials);
    };
    state.kv.del(&counter).await?;
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

/// Ends `session` server-side, if it is a live one, with its `user.logged_out` event.
/// Ending no session (or an unknown one) is not an error.
pub async fn logout(
    state: &AppState,
    function: &str,
    session: Option<SessionId>,
) -> Result<(), ApiError> {
    if let Some(id) = session
        && let Some(user) = state.sessions.get(&id).await?
    {
        state.sessions.delete(&id).await?;
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
