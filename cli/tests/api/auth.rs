//! Signup, login, logout, sessions and login throttling.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use futures_util::future::join_all;
use missive_testkit::{Backends, TestRequest};
use serde_json::json;

use crate::support::App;

api_test!(
    signup_returns_201_and_a_hardened_session_cookie,
    |b| async move {
        let app = App::start(b).await;
        let res = app
            .post(
                "/api/auth/signup",
                json!({"username": "alice_01", "password": "12345678"}),
                None,
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED);
        assert_eq!(res.json(), json!({"username": "alice_01"}));
        let set_cookie = res.headers["set-cookie"].to_str().unwrap().to_owned();
        assert!(set_cookie.starts_with("missive_session="));
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"] {
            assert!(
                set_cookie.contains(attribute),
                "{set_cookie} lacks {attribute}"
            );
        }
        assert!(
            !set_cookie.contains("Secure"),
            "no Secure unless COOKIE_SECURE"
        );
        // 256 random bits, base64url.
        let id = res.session_cookie().unwrap();
        assert_eq!(id.len(), "missive_session=".len() + 43);
        let me = app.get("/api/auth/me", Some(&id)).await;
        assert_eq!(me.json(), json!({"username": "alice_01"}));
        app.stop().await;
    }
);

api_test!(cookie_is_secure_when_configured, |b| async move {
    let app = App::start_with(b, |c| c.cookie_secure = true).await;
    let res = app
        .post(
            "/api/auth/signup",
            json!({"username": "alice", "password": "12345678"}),
            None,
        )
        .await;
    let set_cookie = res.headers["set-cookie"].to_str().unwrap().to_owned();
    // The __Host- prefix: Secure, Path=/, no Domain, or the browser drops it.
    assert!(
        set_cookie.starts_with("__Host-missive_session="),
        "{set_cookie}"
    );
    assert!(set_cookie.ends_with("; Secure"), "{set_cookie}");
    assert!(set_cookie.contains("; Path=/;"), "{set_cookie}");
    assert!(
        !set_cookie.to_ascii_lowercase().contains("domain="),
        "{set_cookie}"
    );
    assert_eq!(res.headers["strict-transport-security"], "max-age=31536000");
    let cookie = res.session_cookie().unwrap();
    assert_eq!(
        app.get("/api/auth/me", Some(&cookie)).await.status,
        StatusCode::OK
    );
    // The same id under the plain name (planted over HTTP, say) is not a session here.
    let planted = cookie.replacen("__Host-", "", 1);
    assert_eq!(
        app.get("/api/auth/me", Some(&planted)).await.status,
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
});

api_test!(without_https_there_is_no_hsts, |b| async move {
    let app = App::start(b).await;
    let res = app.get("/api/auth/me", None).await;
    assert!(!res.headers.contains_key("strict-transport-security"));
    assert_eq!(res.headers["x-content-type-options"], "nosniff");
    app.stop().await;
});

api_test!(signup_validates_username_and_password, |b| async move {
    let app = App::start(b).await;
    let cases = [
        ("ab", "password1", "invalid_username"),
        (&"a".repeat(33), "password1", "invalid_username"),
        ("Alice", "password1", "invalid_username"),
        ("al ice", "password1", "invalid_username"),
        ("alice-x", "password1", "invalid_username"),
        ("alice", "1234567", "invalid_password"),
        ("alice", &"p".repeat(129), "invalid_password"),
    ];
    for (username, password, code) in cases {
        let res = app
            .post(
                "/api/auth/signup",
                json!({"username": username, "password": password}),
                None,
            )
            .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{username}");
        assert_eq!(res.error_code(), code, "{username}/{password}");
    }
    // The limits themselves are allowed; length is in characters, not bytes.
    for (username, password) in [
        ("abc", "한국어비밀번호다"),
        (&"a".repeat(32) as &str, &"p".repeat(128) as &str),
    ] {
        let res = app
            .post(
                "/api/auth/signup",
                json!({"username": username, "password": password}),
                None,
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{username}");
    }
    app.stop().await;
});

api_test!(taken_username_returns_409, |b| async move {
    let app = App::start(b).await;
    app.signup("alice").await;
    let res = app
        .post(
            "/api/auth/signup",
            json!({"username": "alice", "password": "another one"}),
            None,
        )
        .await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.error_code(), "username_taken");
    app.stop().await;
});

api_test!(
    racing_signups_for_one_name_create_one_account,
    |b| async move {
        let app = App::start(b).await;
        let attempts = (0..8).map(|i| {
            app.post(
                "/api/auth/signup",
                json!({"username": "racer", "password": format!("password{i}")}),
                None,
            )
        });
        let results = join_all(attempts).await;
        let created = results
            .iter()
            .filter(|r| r.status == StatusCode::CREATED)
            .count();
        let taken = results
            .iter()
            .filter(|r| r.status == StatusCode::CONFLICT)
            .count();
        assert_eq!((created, taken), (1, 7));
        app.stop().await;
    }
);

api_test!(
    login_returns_a_fresh_session_and_revokes_the_old_one,
    |b| async move {
        let app = App::start(b).await;
        let first = app.signup("alice").await;
        let res = app
            .send(
                TestRequest::new(Method::POST, "/api/auth/login")
                    .json(&json!({"username": "alice", "password": "correct horse"}))
                    .cookie(Some(&first)),
            )
            .await;
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(res.json(), json!({"username": "alice"}));
        let second = res.session_cookie().unwrap();
        assert_ne!(first, second);
        assert_eq!(
            app.get("/api/auth/me", Some(&second)).await.status,
            StatusCode::OK
        );
        assert_eq!(
            app.get("/api/auth/me", Some(&first)).await.status,
            StatusCode::UNAUTHORIZED
        );
        // A third login gives yet another id.
        let third = app.login("alice", "correct horse").await.session_cookie();
        assert_ne!(third.as_deref(), Some(second.as_str()));
        app.stop().await;
    }
);

api_test!(
    unknown_user_and_wrong_password_look_the_same,
    |b| async move {
        let app = App::start(b).await;
        app.signup("alice").await;
        let wrong = app.login("alice", "wrong password").await;
        let unknown = app.login("nobody", "wrong password").await;
        let malformed = app.login("NO", "x").await;
        for res in [&wrong, &unknown, &malformed] {
            assert_eq!(res.status, StatusCode::UNAUTHORIZED);
            assert_eq!(res.json(), wrong.json());
            assert!(res.session_cookie().is_none());
        }
        assert_eq!(wrong.error_code(), "invalid_credentials");
        app.stop().await;
    }
);

api_test!(
    five_failed_logins_lock_the_username_for_that_client_only,
    |b| async move {
        let app = App::start(b).await;
        app.signup("alice").await;
        app.signup("bob").await;
        let attacker = "198.51.100.7";
        for _ in 0..5 {
            let res = app.login_from(attacker, "alice", "wrong password").await;
            assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        }
        // From that client even the right password is refused now, with a Retry-After
        // inside the window...
        let res = app.login_from(attacker, "alice", "correct horse").await;
        assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.error_code(), "too_many_attempts");
        let retry: u64 = res.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=900).contains(&retry), "Retry-After {retry}");
        // ...but the owner, from their own client, logs in: guessing cannot lock them out.
        let owner = app
            .login_from("203.0.113.20", "alice", "correct horse")
            .await;
        assert_eq!(owner.status, StatusCode::OK, "{}", owner.json());
        // Other usernames from the guessing client are unaffected.
        let bob = app.login_from(attacker, "bob", "correct horse").await;
        assert_eq!(bob.status, StatusCode::OK);
        app.stop().await;
    }
);

api_test!(
    one_client_failing_across_usernames_is_stopped,
    |b| async move {
        let app = App::start_with(b, |c| c.login_failures_per_client = 8).await;
        app.signup("alice").await;
        let sprayer = "198.51.100.8";
        for i in 0..8 {
            let res = app
                .login_from(sprayer, &format!("user{i}"), "wrong password")
                .await;
            assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        }
        let res = app.login_from(sprayer, "alice", "correct horse").await;
        assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(res.headers.contains_key("retry-after"));
        let owner = app
            .login_from("203.0.113.21", "alice", "correct horse")
            .await;
        assert_eq!(owner.status, StatusCode::OK);
        app.stop().await;
    }
);

api_test!(
    past_the_global_ceiling_only_clients_that_failed_are_refused,
    |b| async move {
        let app = App::start_with(b, |c| c.login_failures_global_per_minute = 5).await;
        app.signup("alice").await;
        // Six clients (a botnet) fail once each: the deployment is past its ceiling.
        for i in 1..=6 {
            let res = app
                .login_from(&format!("198.51.100.{i}"), "alice", "wrong password")
                .await;
            assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        }
        // A client that failed is now refused before any password check...
        let res = app
            .login_from("198.51.100.1", "alice", "anything else")
            .await;
        assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = res.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        // ...one that did not still logs in.
        let owner = app
            .login_from("203.0.113.22", "alice", "correct horse")
            .await;
        assert_eq!(owner.status, StatusCode::OK);
        app.stop().await;
    }
);

api_test!(
    forwarded_addresses_count_only_behind_trusted_proxies,
    |b| async move {
        // Untrusted (the default): a guesser that invents a new X-Forwarded-For each time
        // is still one client.
        let app = App::start(b).await;
        app.signup("alice").await;
        let guess = |i: usize| {
            TestRequest::new(Method::POST, "/api/auth/login")
                .json(&json!({"username": "alice", "password": "wrong password"}))
                .header("x-forwarded-for", format!("192.0.2.{i}"))
                .from_ip("10.0.0.9")
        };
        for i in 0..5 {
            assert_eq!(app.send(guess(i)).await.status, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(
            app.send(guess(99)).await.status,
            StatusCode::TOO_MANY_REQUESTS
        );
        app.stop().await;
    }
);

api_test!(signups_are_limited_per_client, |b| async move {
    let app = App::start_with(b, |c| c.signups_per_client_per_hour = 3).await;
    let signup = |ip: &str, name: &str| {
        TestRequest::new(Method::POST, "/api/auth/signup")
            .json(&json!({"username": name, "password": "correct horse"}))
            .from_ip(ip)
    };
    for i in 0..3 {
        let res = app.send(signup("198.51.100.30", &format!("bulk{i}"))).await;
        assert_eq!(res.status, StatusCode::CREATED);
    }
    let res = app.send(signup("198.51.100.30", "bulk3")).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers.contains_key("retry-after"));
    let res = app.send(signup("203.0.113.30", "bulk3")).await;
    assert_eq!(res.status, StatusCode::CREATED);
    app.stop().await;
});

api_test!(parallel_guesses_cannot_exceed_the_limit, |b| async move {
    let app = App::start(b).await;
    app.signup("alice").await;
    let results = join_all((0..12).map(|_| app.login("alice", "wrong password"))).await;
    let judged = results
        .iter()
        .filter(|r| r.status == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(judged, 5, "only five guesses may be checked");
    app.stop().await;
});

api_test!(
    a_successful_login_resets_the_failure_count,
    |b| async move {
        let app = App::start(b).await;
        app.signup("alice").await;
        for _ in 0..4 {
            app.login("alice", "wrong password").await;
        }
        assert_eq!(
            app.login("alice", "correct horse").await.status,
            StatusCode::OK
        );
        for _ in 0..4 {
            assert_eq!(
                app.login("alice", "wrong password").await.status,
                StatusCode::UNAUTHORIZED
            );
        }
        app.stop().await;
    }
);

api_test!(logout_revokes_the_session_server_side, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    let res = app
        .send(
            TestRequest::new(Method::POST, "/api/auth/logout")
                .header("content-type", "application/json")
                .cookie(Some(&cookie)),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let cleared = res.headers["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with("missive_session=;") && cleared.contains("Max-Age=0"));
    // The old cookie, replayed, is dead.
    let me = app.get("/api/auth/me", Some(&cookie)).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    assert_eq!(me.error_code(), "unauthenticated");
    // Idempotent: again, and without any session.
    for cookie in [Some(cookie.as_str()), None] {
        let res = app
            .send(
                TestRequest::new(Method::POST, "/api/auth/logout")
                    .header("content-type", "application/json")
                    .cookie(cookie),
            )
            .await;
        assert_eq!(res.status, StatusCode::NO_CONTENT);
    }
    app.stop().await;
});

api_test!(me_requires_a_valid_session, |b| async move {
    let app = App::start(b).await;
    for cookie in [
        None,
        Some("missive_session=garbage"),
        Some("missive_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    ] {
        let res = app.get("/api/auth/me", cookie).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{cookie:?}");
        assert_eq!(res.error_code(), "unauthenticated");
    }
    app.stop().await;
});

api_test!(sessions_expire_and_slide, |b| async move {
    // Margins of 2 s either way: a loaded machine must not decide the outcome.
    let app = App::start_with(b, |c| c.session_ttl_secs = 3).await;
    let cookie = app.signup("alice").await;
    // Used every second, the session outlives its 3 s TTL.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            app.get("/api/auth/me", Some(&cookie)).await.status,
            StatusCode::OK
        );
    }
    // Left alone longer than the TTL, it is gone.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        app.get("/api/auth/me", Some(&cookie)).await.status,
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
});

/// When the window of failed logins ends, the username is open again. The window is
/// 15 minutes, so its end is brought forward on the real store (Redis `PEXPIRE` on the
/// counter); the in-process store's windows expire by the same contract
/// (common/adapters/tests/kv.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_username_opens_again_when_its_window_ends() {
    let app = App::start(Backends::Real).await;
    app.signup("alice").await;
    for _ in 0..6 {
        app.login("alice", "wrong password").await;
    }
    let locked = app.login("alice", "correct horse").await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    // The tests' requests carry no peer address: the client is "unknown".
    let key = format!(
        "{}login_failures:alice:unknown",
        app.state.config.redis_key_prefix
    );
    let url = missive_testkit::redis_url();
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0, "the counter has its window: {ttl} ms");
    let _: () = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(50)
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let open = app.login("alice", "correct horse").await;
    assert_eq!(open.status, StatusCode::OK, "{}", open.json());
    app.stop().await;
}

/// A flood of logins for random names (each from its own address, so no limit stops them
/// before the password check) does not queue everyone behind it until the request
/// timeout: whoever would wait more than about a second for a CPU is answered 503
/// `overloaded` with `Retry-After` at once. The time budget itself is measured by
/// bench/login_flood.py, not asserted here beyond "far from the 30 s timeout".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_is_answered_503_instead_of_queued() {
    let app = App::start(Backends::Embedded).await;
    let started = std::time::Instant::now();
    let flood = (0..200).map(|i| {
        let app = &app;
        async move {
            let res = app
                .login_from(
                    &format!("10.9.{}.{}", i / 250, i % 250 + 1),
                    &format!("random{i}"),
                    "wrong password",
                )
                .await;
            (res, started.elapsed())
        }
    });
    let answers = join_all(flood).await;
    let busy: Vec<_> = answers
        .iter()
        .filter(|(res, _)| res.status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(
        !busy.is_empty(),
        "200 hashes at once on this machine should overflow a second"
    );
    for (res, _) in &busy {
        assert_eq!(res.error_code(), "overloaded");
        assert_eq!(res.headers["retry-after"], "1");
    }
    for (res, _) in &answers {
        assert!(
            matches!(
                res.status,
                StatusCode::UNAUTHORIZED | StatusCode::SERVICE_UNAVAILABLE
            ),
            "{}",
            res.status
        );
    }
    // A login refused for lack of CPU checked nothing: it is not held against its
    // client (else a flood would push honest clients past their limits).
    let (i, _) = answers
        .iter()
        .enumerate()
        .find(|(_, (res, _))| res.status == StatusCode::SERVICE_UNAVAILABLE)
        .unwrap();
    let key = format!("login_failures_client:10.9.{}.{}", i / 250, i % 250 + 1);
    let counted = app
        .state
        .kv
        .incr_windows(&[missive_adapters::kv::Counter {
            key: &key,
            by: 0,
            ttl: Duration::from_secs(60),
        }])
        .await
        .unwrap();
    assert_eq!(counted[0].0, 0, "a 503 counted against {key}");
    // But it does count as an attempt: a client that retries at once after its 503 does
    // not go ahead of those waiting their turn for a CPU...
    let ip = format!("10.9.{}.{}", i / 250, i % 250 + 1);
    let attempts = |key: String| {
        let kv = app.state.kv.clone();
        async move {
            kv.incr_windows(&[missive_adapters::kv::Counter {
                key: &key,
                by: 0,
                ttl: Duration::from_secs(60),
            }])
            .await
            .unwrap()[0]
                .0
        }
    };
    let key = format!("login_attempts_client:{ip}");
    assert_eq!(attempts(key.clone()).await, 1);
    // ...until it logs in.
    app.signup("flooded").await;
    let res = app.login_from(&ip, "flooded", "correct horse").await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(attempts(key).await, 0);
    let slowest = answers.iter().map(|(_, took)| *took).max().unwrap();
    assert!(
        slowest < Duration::from_secs(10),
        "the slowest answer took {slowest:?}"
    );
    app.stop().await;
}

/// The owner's login during a flood of guessers (clients that failed before) is checked
/// before theirs: 200, not 503, however long their line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_logs_in_ahead_of_a_flood_of_guessers() {
    let app = App::start(Backends::Embedded).await;
    app.signup("owner").await;
    let guesser = |i: usize| format!("10.8.{}.{}", i / 250, i % 250 + 1);
    // Each guesser has failed once: from now on its checks queue behind everyone else's.
    for i in 0..40 {
        let res = app
            .login_from(&guesser(i), &format!("nobody{i}"), "wrong")
            .await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    }
    let flood = join_all((0..200).map(|n| {
        let (app, ip) = (&app, guesser(n % 40));
        async move {
            app.login_from(&ip, &format!("nobody{n}"), "wrong password")
                .await
                .status
        }
    }));
    let owner = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        let res = app.login_from("192.0.2.80", "owner", "correct horse").await;
        (res.status, started.elapsed())
    };
    let (flood, (owner, took)) = tokio::join!(flood, owner);
    assert!(
        flood.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "200 checks at once should overflow the guessers' line: {flood:?}"
    );
    assert_eq!(owner, StatusCode::OK, "the owner's login during the flood");
    assert!(took < Duration::from_secs(2), "the owner waited {took:?}");
    app.stop().await;
}

api_test!(logging_out_everywhere_ends_every_session, |b| async move {
    let app = App::start(b).await;
    app.signup("alice").await;
    let laptop = app
        .login("alice", "correct horse")
        .await
        .session_cookie()
        .unwrap();
    let phone = app
        .login("alice", "correct horse")
        .await
        .session_cookie()
        .unwrap();
    let bob = app.signup("bob").await;
    // An ordinary logout ends only its own session.
    let other = app
        .login("alice", "correct horse")
        .await
        .session_cookie()
        .unwrap();
    app.post("/api/auth/logout", json!({}), Some(&other)).await;
    assert_eq!(
        app.get("/api/auth/me", Some(&phone)).await.status,
        StatusCode::OK
    );
    // Everywhere: every session of hers ends; Bob's does not.
    let res = app
        .post(
            "/api/auth/logout",
            json!({"everywhere": true}),
            Some(&laptop),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    for cookie in [&laptop, &phone] {
        assert_eq!(
            app.get("/api/auth/me", Some(cookie)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        app.get("/api/auth/me", Some(&bob)).await.status,
        StatusCode::OK
    );
    // `everywhere` must be a boolean, and the body an object (not an array, which serde
    // would otherwise read as the struct's fields in order).
    for body in [json!({"everywhere": "yes"}), json!([]), json!([true])] {
        let res = app.post("/api/auth/logout", body.clone(), Some(&bob)).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{body}");
    }
    assert_eq!(
        app.get("/api/auth/me", Some(&bob)).await.status,
        StatusCode::OK
    );
    app.stop().await;
});

api_test!(
    a_session_ends_at_its_absolute_lifetime_however_active,
    |b| async move {
        let app = App::start_with(b, |c| c.session_max_age_secs = 2).await;
        let cookie = app.signup("alice").await;
        // Used every half second, it would slide forever; the absolute lifetime ends it.
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(1500) {
            assert_eq!(
                app.get("/api/auth/me", Some(&cookie)).await.status,
                StatusCode::OK
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(
            app.get("/api/auth/me", Some(&cookie)).await.status,
            StatusCode::UNAUTHORIZED
        );
        app.stop().await;
    }
);
