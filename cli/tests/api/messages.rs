//! Posting, listing, getting and deleting messages; idempotency and pagination.

use axum::http::{Method, StatusCode};
use futures_util::future::join_all;
use missive_testkit::{Backends, TestRequest};
use serde_json::json;

use crate::support::{App, texts};

api_test!(creating_a_message_returns_it, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    let text = "안녕하세요 👋 — Grüße!";
    let msg = app.create(&cookie, text).await;
    assert_eq!(msg["text"], text);
    assert!(msg["id"].is_string());
    let created_at = msg["created_at"].as_str().unwrap();
    assert!(created_at.ends_with('Z'));
    time::OffsetDateTime::parse(created_at, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    let got = app
        .get(
            &format!("/api/messages/{}", msg["id"].as_str().unwrap()),
            Some(&cookie),
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json(), msg);
    app.stop().await;
});

api_test!(message_text_limits_are_enforced, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    // 4000 characters is fine even when they are 4-byte emoji.
    app.create(&cookie, &"😀".repeat(4000)).await;
    app.create(&cookie, "x").await;
    for text in [
        String::new(),
        " \n\t ".into(),
        "😀".repeat(4001),
        "a".repeat(4001),
    ] {
        let res = app
            .post("/api/messages", json!({ "text": text }), Some(&cookie))
            .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(res.error_code(), "invalid_text");
    }
    let list = app.get("/api/messages", Some(&cookie)).await;
    assert_eq!(texts(&list.json()).len(), 2);
    app.stop().await;
});

api_test!(message_endpoints_require_a_session, |b| async move {
    let app = App::start(b).await;
    let checks = [
        app.post("/api/messages", json!({"text": "hi"}), None).await,
        app.get("/api/messages", None).await,
        app.get("/api/messages/1", None).await,
        app.get("/api/messages/search?q=hi", None).await,
        app.delete("/api/messages/1", None).await,
        app.get("/api/activity", None).await,
        app.get("/api/activity/stream", None).await,
    ];
    for res in checks {
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        assert_eq!(res.error_code(), "unauthenticated");
    }
    app.stop().await;
});

api_test!(
    concurrent_posts_are_each_stored_once_for_their_author,
    |b| async move {
        // Posts that arrive together are committed together; each must still land, once,
        // with its own author and id.
        let app = App::start(b).await;
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        let posts = (0..40).map(|i| {
            let cookie = if i % 2 == 0 {
                alice.clone()
            } else {
                bob.clone()
            };
            let app = &app;
            async move { app.create(&cookie, &format!("post {i}")).await }
        });
        let created = join_all(posts).await;
        let ids: std::collections::HashSet<&str> =
            created.iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 40);
        for (cookie, parity) in [(&alice, 0), (&bob, 1)] {
            let body = app
                .get("/api/messages?limit=100", Some(cookie))
                .await
                .json();
            let mut mine = texts(&body);
            mine.sort();
            let mut expected: Vec<String> = (0..40)
                .filter(|i| i % 2 == parity)
                .map(|i| format!("post {i}"))
                .collect();
            expected.sort();
            assert_eq!(mine, expected);
            assert_eq!(app.search(cookie, "post").await.len(), 20);
        }
        app.stop().await;
    }
);

api_test!(idempotency_key_replays_the_first_response, |b| async move {
    let app = App::start(b).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let post = |cookie: String, text: &'static str, key: &'static str| {
        let app = &app;
        async move {
            app.send(
                TestRequest::new(Method::POST, "/api/messages")
                    .json(&json!({ "text": text }))
                    .header("idempotency-key", key)
                    .cookie(Some(&cookie)),
            )
            .await
        }
    };
    let first = post(alice.clone(), "once", "draft-1").await;
    assert_eq!(first.status, StatusCode::CREATED);
    // Any text, not only ASCII, is stored with its key (the response is replayed as is).
    let korean = post(alice.clone(), "안녕 🦀", "draft-ko").await;
    assert_eq!(korean.status, StatusCode::CREATED, "{}", korean.json());
    let replay = post(alice.clone(), "안녕 🦀", "draft-ko").await;
    assert_eq!(replay.json(), korean.json());
    let again = post(alice.clone(), "once", "draft-1").await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(
        again.json(),
        first.json(),
        "the first response, not a new message"
    );
    // The same key for another text is a client bug, not a retry: refused, nothing made.
    let edited = post(alice.clone(), "once, edited", "draft-1").await;
    assert_eq!(edited.status, StatusCode::CONFLICT);
    assert_eq!(edited.error_code(), "idempotency_key_reused");
    // Double click: many at once with one key make one message.
    let burst = join_all((0..6).map(|_| post(alice.clone(), "burst", "draft-2"))).await;
    let ids: std::collections::HashSet<String> = burst
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1);
    // Keys are per user.
    let bobs = post(bob.clone(), "bob's", "draft-1").await;
    assert_ne!(bobs.json()["id"], first.json()["id"]);
    let list = app.get("/api/messages", Some(&alice)).await;
    assert_eq!(texts(&list.json()), ["burst", "안녕 🦀", "once"]);
    // Only message.created events for real creations.
    let created = app
        .activity_types(&alice)
        .await
        .into_iter()
        .filter(|t| t == "message.created")
        .count();
    assert_eq!(created, 3);
    for bad in ["", &"k".repeat(256), "has space", "é"] {
        let res = app
            .send(
                TestRequest::new(Method::POST, "/api/messages")
                    .json(&json!({"text": "x"}))
                    .header("idempotency-key", bad)
                    .cookie(Some(&alice)),
            )
            .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
        assert_eq!(res.error_code(), "invalid_idempotency_key");
    }
    app.stop().await;
});

api_test!(listing_pages_newest_first_across_pages, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    for i in 0..45 {
        app.create(&cookie, &format!("message {i}")).await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/messages?limit=20".to_owned();
    let mut pages = 0;
    loop {
        let page = app.get(&path, Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK);
        let body = page.json();
        seen.extend(texts(&body));
        pages += 1;
        match body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/messages?limit=20&before={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..45).rev().map(|i| format!("message {i}")).collect();
    assert_eq!(seen, expected);
    // Default page size is 20, and a full page that is not the last has a cursor.
    let body = app.get("/api/messages", Some(&cookie)).await.json();
    assert_eq!(texts(&body).len(), 20);
    assert!(body["next_cursor"].is_string());
    // A page that ends exactly at the last row has no cursor: 45 rows as 45, and as
    // 20 + 25.
    let body = app
        .get("/api/messages?limit=45", Some(&cookie))
        .await
        .json();
    assert_eq!(texts(&body).len(), 45);
    assert!(body["next_cursor"].is_null(), "{body}");
    let first = app
        .get("/api/messages?limit=20", Some(&cookie))
        .await
        .json();
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let body = app
        .get(
            &format!("/api/messages?limit=25&before={cursor}"),
            Some(&cookie),
        )
        .await
        .json();
    assert_eq!(texts(&body).len(), 25);
    assert!(body["next_cursor"].is_null(), "{body}");
    // A page larger than what is left has no cursor either.
    let body = app
        .get("/api/messages?limit=100", Some(&cookie))
        .await
        .json();
    assert_eq!(texts(&body).len(), 45);
    assert!(body["next_cursor"].is_null());
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=101", "invalid_limit"),
        ("limit=abc", "invalid_limit"),
        ("limit=-1", "invalid_limit"),
        ("before=nope", "invalid_cursor"),
        ("before=MTI", "invalid_cursor"),
    ] {
        let res = app
            .get(&format!("/api/messages?{query}"), Some(&cookie))
            .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(res.error_code(), code, "{query}");
    }
    app.stop().await;
});

api_test!(users_see_only_their_own_messages, |b| async move {
    let app = App::start(b).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let secret = app.create(&alice, "alice's secret plan").await;
    let id = secret["id"].as_str().unwrap();
    assert!(texts(&app.get("/api/messages", Some(&bob)).await.json()).is_empty());
    assert!(app.search(&bob, "secret").await.is_empty());
    let path = format!("/api/messages/{id}");
    for res in [
        app.get(&path, Some(&bob)).await,
        app.delete(&path, Some(&bob)).await,
    ] {
        assert_eq!(res.status, StatusCode::NOT_FOUND, "never 403");
        assert_eq!(res.error_code(), "not_found");
    }
    // Still there for its owner.
    assert_eq!(app.get(&path, Some(&alice)).await.status, StatusCode::OK);
    app.stop().await;
});

api_test!(get_and_delete_unknown_ids_are_404, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    for id in ["999999", "abc", "0", "-1", "01", "99999999999999999999999"] {
        let path = format!("/api/messages/{id}");
        assert_eq!(
            app.get(&path, Some(&cookie)).await.status,
            StatusCode::NOT_FOUND,
            "{id}"
        );
        assert_eq!(
            app.delete(&path, Some(&cookie)).await.status,
            StatusCode::NOT_FOUND,
            "{id}"
        );
    }
    app.stop().await;
});

api_test!(
    deleting_removes_the_message_and_its_search_entry,
    |b| async move {
        let app = App::start(b).await;
        let cookie = app.signup("alice").await;
        let msg = app.create(&cookie, "ephemeral words").await;
        app.create(&cookie, "lasting words").await;
        let path = format!("/api/messages/{}", msg["id"].as_str().unwrap());
        assert_eq!(
            app.delete(&path, Some(&cookie)).await.status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            app.delete(&path, Some(&cookie)).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            app.get(&path, Some(&cookie)).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(app.search(&cookie, "words").await, ["lasting words"]);
        assert!(app.search(&cookie, "ephem").await.is_empty());
        app.stop().await;
    }
);

api_test!(an_idempotency_key_expires_after_a_day, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    let post = |text: &'static str| {
        app.send(
            TestRequest::new(Method::POST, "/api/messages")
                .json(&json!({ "text": text }))
                .header("idempotency-key", "draft-old")
                .cookie(Some(&cookie)),
        )
    };
    let first = post("yesterday").await;
    assert_eq!(first.status, StatusCode::CREATED);
    // The key was used just over 24 h ago.
    let day_ago = missive_core::time::now_millis() - 24 * 3600 * 1000 - 1000;
    sqlx::query("UPDATE idempotency_keys SET created_at = ?")
        .bind(day_ago)
        .execute(app.state.db.writer().any())
        .await
        .unwrap();
    // Expired: the retry is a new message, and its key now replays the new one.
    let second = post("today").await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert_ne!(second.json()["id"], first.json()["id"]);
    assert_eq!(second.json()["text"], "today");
    let replay = post("today").await;
    assert_eq!(replay.json(), second.json());
    let list = app.get("/api/messages", Some(&cookie)).await;
    assert_eq!(texts(&list.json()), ["today", "yesterday"]);
    // Just inside the window it still replays.
    let almost = missive_core::time::now_millis() - 24 * 3600 * 1000 + 60_000;
    sqlx::query("UPDATE idempotency_keys SET created_at = ?")
        .bind(almost)
        .execute(app.state.db.writer().any())
        .await
        .unwrap();
    assert_eq!(post("today").await.json(), second.json());
    app.stop().await;
});

// A replay must not answer 201 for a message a GET then says does not exist: once the
// message is deleted, its key is spent.
api_test!(
    an_idempotency_key_of_a_deleted_message_is_spent,
    |b| async move {
        let app = App::start(b).await;
        let cookie = app.signup("alice").await;
        let post = || {
            app.send(
                TestRequest::new(Method::POST, "/api/messages")
                    .json(&json!({ "text": "short-lived" }))
                    .header("idempotency-key", "k-1")
                    .cookie(Some(&cookie)),
            )
        };
        let first = post().await;
        assert_eq!(first.status, StatusCode::CREATED);
        let path = format!("/api/messages/{}", first.json()["id"].as_str().unwrap());
        assert_eq!(
            app.delete(&path, Some(&cookie)).await.status,
            StatusCode::NO_CONTENT
        );
        let replay = post().await;
        assert_eq!(replay.status, StatusCode::CONFLICT, "{}", replay.json());
        assert_eq!(replay.error_code(), "idempotency_key_reused");
        assert!(texts(&app.get("/api/messages", Some(&cookie)).await.json()).is_empty());
        app.stop().await;
    }
);
