//! The key-value store's contract, held by both implementations: Redis (at
//! `MISSIVE_TEST_REDIS_URL`, default the local server; missing, the test fails) and the
//! in-process store of `missive dev`. Sessions, login throttling and the activity log are
//! written once on these primitives, so the two must agree.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use missive_adapters::kv::{Kv, LogEntry, MemoryKv, RedisKv};

fn redis_url() -> String {
    std::env::var("MISSIVE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A Redis store under a prefix of its own, and the prefix (to clean up after).
fn redis() -> (Arc<dyn Kv>, String) {
    let prefix = format!("missive-test:kv:{}:", uuid::Uuid::new_v4().simple());
    (
        Arc::new(RedisKv::new(&redis_url(), &prefix, Duration::from_secs(1)).unwrap()),
        prefix,
    )
}

/// Deletes the test's keys.
async fn purge(prefix: &str) {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// The next message of a subscription, within 5 s.
async fn next(subscription: &mut missive_adapters::kv::Subscription) -> Option<(String, String)> {
    tokio::time::timeout(Duration::from_secs(5), subscription.next())
        .await
        .expect("a message within 5 s")
}

fn memory() -> Arc<dyn Kv> {
    Arc::new(MemoryKv::default())
}

macro_rules! both {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn in_process() {
                ($body)(memory()).await;
            }

            #[tokio::test]
            async fn redis() {
                let (kv, prefix) = super::redis();
                ($body)(kv).await;
                purge(&prefix).await;
            }
        }
    };
}

both!(
    values_expire_and_get_ex_slides_them,
    |kv: Arc<dyn Kv>| async move {
        kv.ping().await.unwrap();
        let ttl = Duration::from_millis(1500);
        kv.set_ex("k", "v", ttl).await.unwrap();
        assert_eq!(kv.get_ex("k", ttl).await.unwrap().as_deref(), Some("v"));
        let (value, left) = kv.get_with_ttl("k").await.unwrap().unwrap();
        assert_eq!(value, "v");
        assert!(left <= ttl && left > Duration::ZERO, "{left:?}");
        // Read every 0.5 s, it outlives its TTL; left alone, it expires.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(kv.get_ex("k", ttl).await.unwrap().is_some());
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(kv.get_ex("k", ttl).await.unwrap(), None);
        assert_eq!(kv.get_with_ttl("k").await.unwrap(), None);
    }
);

both!(
    set_nx_sets_once_and_del_forgets,
    |kv: Arc<dyn Kv>| async move {
        let ttl = Duration::from_secs(60);
        assert!(kv.set_nx_ex("once", "a", ttl).await.unwrap());
        assert!(!kv.set_nx_ex("once", "b", ttl).await.unwrap());
        assert_eq!(kv.get_ex("once", ttl).await.unwrap().as_deref(), Some("a"));
        kv.del("once").await.unwrap();
        kv.del("never-set").await.unwrap();
        assert!(kv.set_nx_ex("once", "c", ttl).await.unwrap());
    }
);

both!(
    counters_count_within_a_fixed_window,
    |kv: Arc<dyn Kv>| async move {
        let window = Duration::from_millis(1500);
        for expected in 1..=3 {
            let (count, left) = kv.incr_window("tries", window).await.unwrap();
            assert_eq!(count, expected);
            assert!(left <= window && left > Duration::ZERO, "{left:?}");
        }
        // The window is fixed from the first increment: later ones do not extend it.
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert_eq!(kv.incr_window("tries", window).await.unwrap().0, 1);
    }
);

both!(
    several_counters_move_in_one_step,
    |kv: Arc<dyn Kv>| async move {
        use missive_adapters::kv::Counter;
        let (short, long) = (Duration::from_secs(60), Duration::from_secs(900));
        let step = |a: i64, b: i64| {
            [
                Counter {
                    key: "a",
                    by: a,
                    ttl: short,
                },
                Counter {
                    key: "b",
                    by: b,
                    ttl: long,
                },
            ]
        };
        let counted = kv.incr_windows(&step(1, 2)).await.unwrap();
        assert_eq!((counted[0].0, counted[1].0), (1, 2));
        assert!(counted[0].1 <= short && counted[1].1 > short, "{counted:?}");
        // 0 reads; a negative step takes back.
        let counted = kv.incr_windows(&step(0, -1)).await.unwrap();
        assert_eq!((counted[0].0, counted[1].0), (1, 1));
        // A read of a missing counter is 0.
        let counted = kv
            .incr_windows(&[Counter {
                key: "c",
                by: 0,
                ttl: short,
            }])
            .await
            .unwrap();
        assert_eq!(counted[0].0, 0);
    }
);

both!(
    lists_keep_the_newest_up_to_their_cap,
    |kv: Arc<dyn Kv>| async move {
        for i in 0..5 {
            kv.push_front_capped("log", &format!("e{i}"), 3)
                .await
                .unwrap();
        }
        assert_eq!(kv.list_front("log", 10).await.unwrap(), ["e4", "e3", "e2"]);
        assert_eq!(kv.list_front("log", 2).await.unwrap(), ["e4", "e3"]);
        assert!(kv.list_front("empty", 10).await.unwrap().is_empty());
    }
);

both!(
    subscribers_get_what_is_published_under_their_prefix_after_they_subscribed,
    |kv: Arc<dyn Kv>| async move {
        kv.publish("chan:a", "too early").await.unwrap();
        let mut chans = kv.subscribe_prefix("chan:").await.unwrap();
        let mut other = kv.subscribe_prefix("other:").await.unwrap();
        kv.publish("chan:a", "hello").await.unwrap();
        kv.publish("chan:b", "world").await.unwrap();
        kv.publish("elsewhere", "not for us").await.unwrap();
        // One subscription, every channel under the prefix, named without the key prefix.
        let pair = |c: &str, m: &str| Some((c.to_owned(), m.to_owned()));
        assert_eq!(next(&mut chans).await, pair("chan:a", "hello"));
        assert_eq!(next(&mut chans).await, pair("chan:b", "world"));
        // Another prefix hears nothing of it.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), other.next())
                .await
                .is_err()
        );
        // Pattern characters in a prefix are plain text.
        let mut star = kv.subscribe_prefix("a*").await.unwrap();
        kv.publish("ab", "not a*").await.unwrap();
        kv.publish("a*b", "a*").await.unwrap();
        assert_eq!(next(&mut star).await, pair("a*b", "a*"));
    }
);

both!(
    log_entries_are_numbered_kept_capped_published_and_appended_once,
    |kv: Arc<dyn Kv>| async move {
        let mut live = kv.subscribe_prefix("log:").await.unwrap();
        let entry = |once| LogEntry {
            log: "log:a",
            max_len: 2,
            counter: "log_seq:a",
            once,
            before: "{\"id\":",
            after: ",\"x\":1}",
        };
        assert_eq!(kv.append_to_log(entry(None)).await.unwrap(), Some(1));
        let once = Some(("seen:e1", Duration::from_secs(60)));
        assert_eq!(kv.append_to_log(entry(once)).await.unwrap(), Some(2));
        // The same event again: nothing written, nothing numbered.
        assert_eq!(kv.append_to_log(entry(once)).await.unwrap(), None);
        assert_eq!(kv.append_to_log(entry(None)).await.unwrap(), Some(3));
        assert_eq!(
            kv.list_front("log:a", 10).await.unwrap(),
            [r#"{"id":3,"x":1}"#, r#"{"id":2,"x":1}"#]
        );
        let pair = |n: u64| Some(("log:a".to_owned(), format!(r#"{{"id":{n},"x":1}}"#)));
        assert_eq!(next(&mut live).await, pair(1));
        assert_eq!(next(&mut live).await, pair(2));
        assert_eq!(next(&mut live).await, pair(3));
        // Another log counts on its own.
        let other = LogEntry {
            log: "log:b",
            counter: "log_seq:b",
            ..entry(None)
        };
        assert_eq!(kv.append_to_log(other).await.unwrap(), Some(1));
    }
);
