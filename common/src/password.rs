//! Password hashing with argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane), always on
//! the blocking pool: a hash takes tens of milliseconds of CPU, which would stall every
//! other request on an async worker.

use std::sync::LazyLock;

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::domain::Password;

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// Hashes a password into a PHC string (salt and parameters included).
pub async fn hash(password: Password) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
            .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        argon2()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing: {e}"))
    })
    .await
    .context("hashing task")?
}

// A real hash of a random password, verified against when the user does not exist, so an
// unknown username costs the same time as a wrong password.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let salt =
        SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("BUG: 16 bytes is a valid salt");
    argon2()
        .hash_password(&rand::random::<[u8; 16]>(), &salt)
        .expect("BUG: hashing with default params succeeds")
        .to_string()
});

/// Checks `password` against `stored` (a PHC string). With no stored hash (unknown user)
/// or no acceptable password (wrong length) it still spends a full verification on a
/// dummy hash, so the answer takes the same time, and returns `false`.
pub async fn verify(password: Option<Password>, stored: Option<String>) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || {
        let real = stored.is_some() && password.is_some();
        let stored = stored.unwrap_or_else(|| DUMMY_HASH.clone());
        let parsed = PasswordHash::new(&stored).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
        let candidate = password.as_ref().map_or("", |p| p.expose());
        let matches = argon2()
            .verify_password(candidate.as_bytes(), &parsed)
            .is_ok();
        Ok(matches && real)
    })
    .await
    .context("verification task")?
}
