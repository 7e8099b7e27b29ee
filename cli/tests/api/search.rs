//! Searching messages.

use axum::http::StatusCode;
use missive_testkit::Backends;

use crate::support::{App, texts};

api_test!(search_matches_word_prefixes_in_any_script, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    app.create(&cookie, "Hello, World!").await;
    app.create(&cookie, "메시지를 보냈다").await;
    app.create(&cookie, "Party time 🎉 tonight").await;
    app.create(&cookie, "Straße und Übermut").await;
    app.create(&cookie, "help wanted").await;
    assert_eq!(app.search(&cookie, "hel wor").await, ["Hello, World!"]);
    assert_eq!(app.search(&cookie, "HELLO").await, ["Hello, World!"]);
    assert_eq!(
        app.search(&cookie, "hel").await,
        ["help wanted", "Hello, World!"]
    );
    assert_eq!(app.search(&cookie, "메시").await, ["메시지를 보냈다"]);
    assert_eq!(app.search(&cookie, "보냈다").await, ["메시지를 보냈다"]);
    assert_eq!(app.search(&cookie, "🎉").await, ["Party time 🎉 tonight"]);
    assert_eq!(
        app.search(&cookie, "über stra").await,
        ["Straße und Übermut"]
    );
    // Every word must match; a suffix is not a prefix.
    assert!(app.search(&cookie, "hello nothing").await.is_empty());
    assert!(app.search(&cookie, "orld").await.is_empty());
    app.stop().await;
});

api_test!(
    search_treats_sql_and_fulltext_syntax_as_text,
    |b| async move {
        let app = App::start(b).await;
        let cookie = app.signup("alice").await;
        app.create(&cookie, "50% off today").await;
        app.create(&cookie, "snake_case names").await;
        app.create(&cookie, "hello world").await;
        app.create(&cookie, "C++ (and C) rocks").await;
        // Alone, operator characters are no words: they match nothing rather than everything.
        for q in ["%", "_", "*", "+", "-", "\"", "(", "%%", "'", "\\", ";--"] {
            assert!(
                app.search(&cookie, q).await.is_empty(),
                "{q} matched something"
            );
        }
        assert_eq!(app.search(&cookie, "50%").await, ["50% off today"]);
        assert_eq!(
            app.search(&cookie, "snake_case").await,
            ["snake_case names"]
        );
        // In FULLTEXT boolean mode `-world` would exclude; here it is just the word "world".
        assert_eq!(app.search(&cookie, "+hello -world").await, ["hello world"]);
        assert_eq!(app.search(&cookie, "\"hello\"").await, ["hello world"]);
        assert_eq!(app.search(&cookie, "hel*").await, ["hello world"]);
        assert_eq!(app.search(&cookie, "(and").await, ["C++ (and C) rocks"]);
        assert_eq!(app.search(&cookie, "' OR 1=1 --").await.len(), 0);
        app.stop().await;
    }
);

api_test!(search_validates_query_and_limit, |b| async move {
    let app = App::start(b).await;
    let cookie = app.signup("alice").await;
    for i in 0..30 {
        app.create(&cookie, &format!("note {i}")).await;
    }
    let body = app
        .get("/api/messages/search?q=note", Some(&cookie))
        .await
        .json();
    assert_eq!(texts(&body).len(), 20, "default limit");
    assert_eq!(texts(&body)[0], "note 29", "newest first");
    let body = app
        .get("/api/messages/search?q=note&limit=25", Some(&cookie))
        .await
        .json();
    assert_eq!(texts(&body).len(), 25);
    let long = "a".repeat(201);
    for (query, code) in [
        ("", "invalid_query"),
        ("q=", "invalid_query"),
        ("q=%20%20", "invalid_query"),
        (&format!("q={long}") as &str, "invalid_query"),
        // Eleven different words (punctuation separates them too).
        ("q=a+b+c+d+e+f+g+h+i+j+k", "too_many_terms"),
        ("q=a,b.c;d-e_f/g(h)i%22j*k", "too_many_terms"),
        ("q=note&limit=0", "invalid_limit"),
        ("q=note&limit=101", "invalid_limit"),
    ] {
        let res = app
            .get(&format!("/api/messages/search?{query}"), Some(&cookie))
            .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(res.error_code(), code, "{query}");
    }
    // Ten is fine, and a repeated word counts once.
    for query in ["a+b+c+d+e+f+g+h+i+note", "note+note+note+a+b+c+d+e+f+g+h+i"] {
        let res = app
            .get(&format!("/api/messages/search?q={query}"), Some(&cookie))
            .await;
        assert_eq!(res.status, StatusCode::OK, "{query}: {}", res.json());
    }
    let res = app
        .get(
            "/api/messages/search?q=a+b+c+d+e+f+g+h+i+j+k",
            Some(&cookie),
        )
        .await;
    assert!(
        res.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 10")
    );
    let ok = app
        .get(
            &format!("/api/messages/search?q={}", "a".repeat(200)),
            Some(&cookie),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    app.stop().await;
});

api_test!(
    words_longer_than_the_index_width_are_found,
    |b| async move {
        // Tokens are indexed by their first 64 characters: a longer word is found by itself,
        // by any prefix, and by a longer query that shares those 64 characters.
        let app = App::start(b).await;
        let cookie = app.signup("alice").await;
        let long = format!("{}tail", "ü".repeat(70));
        app.create(&cookie, &format!("a {long} word")).await;
        app.create(&cookie, "something else").await;
        let expected = [format!("a {long} word")];
        assert_eq!(app.search(&cookie, &long).await, expected);
        assert_eq!(app.search(&cookie, &"Ü".repeat(10)).await, expected);
        let longer = format!("{}different", "ü".repeat(64));
        assert_eq!(app.search(&cookie, &longer).await, expected);
        // A query over its own limit (200 characters) is refused, not truncated.
        let res = app
            .get(
                &format!("/api/messages/search?q={}", "a".repeat(201)),
                Some(&cookie),
            )
            .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(res.error_code(), "invalid_query");
        app.stop().await;
    }
);

api_test!(
    composed_and_decomposed_accents_find_each_other,
    |b| async move {
        // Text is tokenized as NFC on both sides (docs/search/tokens.json).
        let app = App::start(b).await;
        let cookie = app.signup("alice").await;
        let decomposed = "Cafe\u{301} con leche";
        let composed = "Crème brûlée";
        app.create(&cookie, decomposed).await;
        app.create(&cookie, composed).await;
        assert_eq!(app.search(&cookie, "café").await, [decomposed]);
        assert_eq!(app.search(&cookie, "cafe\u{301}").await, [decomposed]);
        assert_eq!(app.search(&cookie, "cre\u{300}me").await, [composed]);
        // The text itself is returned as it was sent.
        let list = app.get("/api/messages", Some(&cookie)).await;
        assert!(texts(&list.json()).contains(&decomposed.to_owned()));
        app.stop().await;
    }
);

api_test!(
    migrate_reindexes_tokens_of_the_old_tokenizer,
    |b| async move {
        let app = App::start(b).await;
        let cookie = app.signup("alice").await;
        let text = "Cafe\u{301} au lait";
        let id = app.create(&cookie, text).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        // The index as the tokenizer before NFC left it: the decomposed word.
        let db = &app.state.db;
        sqlx::query("DELETE FROM message_tokens WHERE message_id = ?")
            .bind(id.parse::<i64>().unwrap())
            .execute(db.writer().any())
            .await
            .unwrap();
        for token in ["cafe\u{301}", "au", "lait"] {
            sqlx::query("INSERT INTO message_tokens (user_id, token, message_id) SELECT user_id, ?, id FROM messages WHERE id = ?")
            .bind(token)
            .bind(id.parse::<i64>().unwrap())
            .execute(db.writer().any())
            .await
            .unwrap();
        }
        sqlx::query("UPDATE search_index SET version = 1")
            .execute(db.writer().any())
            .await
            .unwrap();
        assert!(
            app.search(&cookie, "café").await.is_empty(),
            "the stale index misses it"
        );
        let reindexed = missive_app::messages::store::reindex_search(db)
            .await
            .unwrap();
        assert_eq!(reindexed, 1, "only the message whose text is not NFC");
        assert_eq!(app.search(&cookie, "café").await, [text]);
        assert_eq!(app.search(&cookie, "lait").await, [text]);
        // Done once: the version is recorded.
        assert_eq!(
            missive_app::messages::store::reindex_search(db)
                .await
                .unwrap(),
            0
        );
        app.stop().await;
    }
);
