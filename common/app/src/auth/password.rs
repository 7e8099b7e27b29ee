//! Password hashing with argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane), always on
//! the blocking pool: a hash takes tens of milliseconds of CPU, which would stall every
//! other request on an async worker.
//!
//! Memory is bounded and allocated once:
//! - At most one hash per CPU runs at a time; the rest wait without holding memory.
//!   More would not finish sooner on the same CPUs.
//! - Each running hash borrows one of those 19 MiB buffers and gives it back. Before,
//!   every hash allocated its own buffer, and glibc kept the freed 19 MiB blocks in its
//!   per-thread arenas. That measured 436 MB peak RSS for 8 concurrent logins, against
//!   a 256 MiB container limit.
//!
//! Waiting is bounded too: a flood of logins for random names must not queue real ones
//! until the request timeout. A hash that would wait more than [`MAX_WAIT`] for a CPU
//! is refused at once with [`Busy`] (503 `overloaded` with `Retry-After`), judged from
//! the queue ahead of it and the measured time of a hash, and never waits past
//! [`MAX_WAIT`] anyway. And a client that failed recently (a guesser, most likely)
//! queues behind every other ([`Priority`]), so a flood delays the owner's login by
//! about one hash, not by the flood's queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

use missive_core::domain::Password;

fn argon2(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes that may run at once: one per CPU the process may use (cgroup quota included).
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Argon2 working memory, one buffer per CPU slot of [`GATE`], allocated on first use.
static BUFFERS: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// The longest a hash waits for a CPU before the request is answered 503 instead: with
/// the hash itself (tens of milliseconds) a login is answered within a second.
pub const MAX_WAIT: Duration = Duration::from_millis(800);

/// Hashes were refused because the queue for the CPUs is longer than [`MAX_WAIT`].
#[derive(Debug, thiserror::Error)]
#[error("password hashing is busy")]
pub struct Busy;

/// Moving average of one hash's time on a CPU, microseconds (starts at a typical 30 ms).
static HASH_MICROS: AtomicU64 = AtomicU64::new(30_000);

/// Where a check stands in the line for a CPU. Under a flood, the guessers (clients that
/// failed recently) are [`Priority::Low`]: every waiting [`Priority::Normal`] check gets
/// a CPU before any of them, and they give up sooner, so a client that has not failed
/// waits at most for the hashes already running and the other normal checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// First in line; waits up to [`MAX_WAIT`].
    Normal,
    /// After every normal check; waits up to half of [`MAX_WAIT`].
    Low,
}

impl Priority {
    fn max_wait(self) -> Duration {
        match self {
            Self::Normal => MAX_WAIT,
            Self::Low => MAX_WAIT / 2,
        }
    }
}

/// The CPUs for hashing, one [`Slot`] each, handed to waiters by [`Priority`], first come
/// first served within one priority. (A semaphore serves strictly in arrival order, which
/// put the owner's login behind a flood's queue.)
static GATE: LazyLock<Mutex<Gate>> = LazyLock::new(|| {
    Mutex::new(Gate {
        free: cpus(),
        normal: VecDeque::new(),
        low: VecDeque::new(),
    })
});

struct Gate {
    free: usize,
    normal: VecDeque<oneshot::Sender<Slot>>,
    low: VecDeque<oneshot::Sender<Slot>>,
}

fn gate() -> MutexGuard<'static, Gate> {
    // The state stays consistent whatever panicked while holding it (each change is one
    // push, pop or count).
    GATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One CPU for one hash; handed to the next waiter (or freed) when dropped.
struct Slot;

impl Drop for Slot {
    fn drop(&mut self) {
        let mut gate = gate();
        loop {
            let next = gate.normal.pop_front().or_else(|| gate.low.pop_front());
            let Some(waiter) = next else {
                gate.free += 1;
                return;
            };
            match waiter.send(Slot) {
                Ok(()) => return,
                // That waiter gave up; the slot is still this one's to hand on (dropping
                // it here would lock the gate again).
                Err(slot) => std::mem::forget(slot),
            }
        }
    }
}

/// A CPU slot for `priority`, or [`Busy`] at once when the wait ahead (the checks served
/// first, `cpus()` at a time, after the running ones) is over its limit, or [`Busy`] when
/// the limit passes while waiting.
async fn acquire(priority: Priority) -> Result<Slot, Busy> {
    let max_wait = priority.max_wait();
    let waiting = {
        let mut gate = gate();
        if gate.free > 0 && gate.normal.is_empty() && gate.low.is_empty() {
            gate.free -= 1;
            return Ok(Slot);
        }
        // Waiters that gave up are still queued until a slot skips them; count only the
        // live ones.
        gate.normal.retain(|waiter| !waiter.is_closed());
        gate.low.retain(|waiter| !waiter.is_closed());
        // A free slot is never left while someone waits (a released slot goes to the next
        // waiter), so free slots here mean only given-up waiters were queued.
        if gate.free > 0 {
            gate.free -= 1;
            return Ok(Slot);
        }
        let ahead = match priority {
            Priority::Normal => gate.normal.len(),
            Priority::Low => gate.normal.len() + gate.low.len(),
        };
        // Every CPU is busy: at least the running hashes must finish first.
        let rounds = (ahead / cpus()) as u64 + 1;
        let expected =
            Duration::from_micros(rounds.saturating_mul(HASH_MICROS.load(Ordering::Relaxed)));
        if expected > max_wait {
            return Err(Busy);
        }
        let (tx, rx) = oneshot::channel();
        match priority {
            Priority::Normal => gate.normal.push_back(tx),
            Priority::Low => gate.low.push_back(tx),
        }
        rx
    };
    match tokio::time::timeout(max_wait, waiting).await {
        Ok(Ok(slot)) => Ok(slot),
        // Timed out: the queued sender is skipped (its slot goes to the next waiter).
        Ok(Err(_)) | Err(_) => Err(Busy),
    }
}

fn record_hash_time(took: Duration) {
    let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    let old = HASH_MICROS.load(Ordering::Relaxed);
    // An 1/8 weight: follows a slower CPU within a few hashes, ignores one outlier.
    HASH_MICROS.store(old - old / 8 + took / 8, Ordering::Relaxed);
}

/// Runs `work` with a memory buffer of at least `blocks` blocks, on the blocking pool and
/// holding a CPU slot of [`GATE`]; [`Busy`] when that would mean waiting over [`MAX_WAIT`].
async fn with_memory<T: Send + 'static>(
    blocks: usize,
    priority: Priority,
    work: impl FnOnce(&mut [Block]) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let slot = acquire(priority).await?;
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let started = Instant::now();
        let pooled = BUFFERS
            .lock()
            .map_err(|_| anyhow::anyhow!("buffer pool poisoned"))?
            .pop();
        let mut buffer = pooled.unwrap_or_default();
        if buffer.len() < blocks {
            buffer.resize(blocks, Block::default());
        }
        let result = work(&mut buffer[..blocks]);
        record_hash_time(started.elapsed());
        // Only buffers of the current parameters go back; an old hash's larger ones do not
        // stay around.
        if buffer.len() == Params::default().block_count()
            && let Ok(mut pool) = BUFFERS.lock()
        {
            pool.push(buffer);
        }
        result
    })
    .await
    .context("hashing task")?
}

/// Hashes a password into a PHC string (salt and parameters included).
pub async fn hash(password: Password) -> anyhow::Result<String> {
    let params = Params::default();
    with_memory(params.block_count(), Priority::Normal, move |memory| {
        let salt: [u8; 16] = rand::random();
        phc(password.expose().as_bytes(), &salt, params, memory)
    })
    .await
}

/// The PHC string of `password` hashed with `salt` and `params` in `memory`.
fn phc(
    password: &[u8],
    salt: &[u8],
    params: Params,
    memory: &mut [Block],
) -> anyhow::Result<String> {
    let mut raw = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2(params.clone())
        .hash_password_into_with_memory(password, salt, &mut raw, memory)
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
    let salt = SaltString::encode_b64(salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let hash = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| anyhow::anyhow!("params: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&raw).map_err(|e| anyhow::anyhow!("output: {e}"))?),
    };
    Ok(hash.to_string())
}

/// A real hash (current parameters) of a random password nobody kept, verified against
/// when the user does not exist, so an unknown username costs the same time as a wrong
/// password. A constant: computing it at run time made the first such login slower than
/// the rest (and cost every cold start a hash). Even its password would not log anyone
/// in: [`verify`] answers `false` without a real stored hash.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$eUCXKKmozcX+4WSPlismOA$Qq03cy9wugGUWQHccySr8j6gkWJxRbhP9gxon8m9YZk";

/// Checks `password` against `stored` (a PHC string). With no stored hash (unknown user)
/// or no acceptable password (wrong length) it still spends a full verification on a
/// dummy hash, so the answer takes the same time, and returns `false`.
pub async fn verify(password: Option<Password>, stored: Option<String>) -> anyhow::Result<bool> {
    verify_as(password, stored, Priority::Normal).await
}

/// [`verify`] with a place in the line by `priority`.
pub async fn verify_as(
    password: Option<Password>,
    stored: Option<String>,
    priority: Priority,
) -> anyhow::Result<bool> {
    let real = stored.is_some() && password.is_some();
    let stored = stored.unwrap_or_else(|| DUMMY_HASH.to_owned());
    let parsed = PasswordHash::new(&stored).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
    anyhow::ensure!(
        parsed.algorithm == argon2::ARGON2ID_IDENT,
        "stored hash is not argon2id"
    );
    let params =
        Params::try_from(&parsed).map_err(|e| anyhow::anyhow!("stored hash params: {e}"))?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        anyhow::bail!("stored hash lacks its salt or output");
    };
    let mut salt_bytes = [0u8; 64];
    let salt = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| anyhow::anyhow!("stored salt: {e}"))?
        .to_vec();
    with_memory(params.block_count(), priority, move |memory| {
        let candidate = password.as_ref().map_or("", |p| p.expose());
        let mut raw = vec![0u8; expected.len()];
        argon2(params)
            .hash_password_into_with_memory(candidate.as_bytes(), &salt, &mut raw, memory)
            .map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
        // Output's equality is constant-time.
        let matches = Output::new(&raw).is_ok_and(|computed| computed == expected);
        Ok(matches && real)
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    fn password(text: &str) -> Password {
        Password::parse(secrecy::SecretString::from(text.to_owned())).expect("valid test password")
    }

    #[tokio::test]
    async fn hashes_are_standard_phc_argon2id_both_ways() {
        let ours = hash(password("correct horse battery")).await.unwrap();
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        // The argon2 crate's own verifier accepts our hashes...
        let parsed = PasswordHash::new(&ours).unwrap();
        let reference = argon2(Params::default());
        assert!(
            reference
                .verify_password(b"correct horse battery", &parsed)
                .is_ok()
        );
        // ...and we accept its hashes (those stored before this module kept buffers).
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let theirs = reference
            .hash_password(b"correct horse battery", &salt)
            .unwrap()
            .to_string();
        assert!(
            verify(
                Some(password("correct horse battery")),
                Some(theirs.clone())
            )
            .await
            .unwrap()
        );
        assert!(
            !verify(Some(password("wrong horse battery")), Some(theirs))
                .await
                .unwrap()
        );
        assert!(
            !verify(Some(password("correct horse battery")), None)
                .await
                .unwrap()
        );
        assert!(!verify(None, Some(ours)).await.unwrap());
    }

    #[test]
    fn the_dummy_hash_has_the_current_parameters() {
        let parsed = PasswordHash::new(DUMMY_HASH).unwrap_or_else(|_| {
            let mut memory = vec![Block::default(); Params::default().block_count()];
            let (password, salt): ([u8; 16], [u8; 16]) = (rand::random(), rand::random());
            let fresh = phc(&password, &salt, Params::default(), &mut memory).unwrap();
            panic!("DUMMY_HASH is not a PHC string; use {fresh}")
        });
        let (ours, current) = (Params::try_from(&parsed).unwrap(), Params::default());
        assert_eq!(
            (ours.m_cost(), ours.t_cost(), ours.p_cost()),
            (current.m_cost(), current.t_cost(), current.p_cost())
        );
        assert_eq!(parsed.algorithm, argon2::ARGON2ID_IDENT);
    }

    #[tokio::test]
    async fn concurrent_hashes_share_at_most_one_buffer_per_cpu() {
        let tasks: Vec<_> = (0..8)
            .map(|i| tokio::spawn(hash(password(&format!("password number {i}")))))
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let pooled = BUFFERS.lock().unwrap().len();
        assert!(
            pooled >= 1 && pooled <= cpus(),
            "{pooled} buffers for {} CPUs",
            cpus()
        );
    }

    /// The owner's login under a flood: a normal check waits for the running hashes
    /// only, not for the low-priority ones queued before it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_normal_check_goes_before_the_low_ones_waiting() {
        let timed = |priority| async move {
            let result = verify_as(Some(password("wrong horse battery")), None, priority).await;
            (result.is_ok(), Instant::now())
        };
        // Every CPU busy and a line of low-priority checks behind them.
        let low: Vec<_> = (0..3 * cpus())
            .map(|_| tokio::spawn(timed(Priority::Low)))
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (normal_ok, normal_done) = timed(Priority::Normal).await;
        assert!(normal_ok, "the normal check was refused");
        let mut low_done = Vec::new();
        for task in low {
            let (ok, done) = task.await.unwrap();
            if ok {
                low_done.push(done);
            }
        }
        let after = low_done.iter().filter(|done| **done > normal_done).count();
        assert!(
            after >= cpus(),
            "only {after} of {} low checks finished after the normal one",
            low_done.len()
        );
    }

    /// A check that would wait past its limit is refused at once, and a refused waiter
    /// does not keep a CPU slot: afterwards every slot is free again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_and_finished_checks_give_every_slot_back() {
        let checks: Vec<_> = (0..60 * cpus())
            .map(|_| {
                tokio::spawn(verify_as(
                    Some(password("wrong horse battery")),
                    None,
                    Priority::Low,
                ))
            })
            .collect();
        let mut busy = 0;
        for check in checks {
            if let Err(err) = check.await.unwrap() {
                assert!(err.is::<Busy>(), "{err:#}");
                busy += 1;
            }
        }
        assert!(busy > 0, "60 hashes per CPU should overflow 400 ms");
        // Other tests of this binary may hash at the same time; wait for them.
        for _ in 0..100 {
            if gate().free == cpus() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{} of {} slots free", gate().free, cpus());
    }
}
