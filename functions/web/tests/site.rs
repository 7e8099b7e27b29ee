//! The web function's router on a built app laid out in a temporary directory, and on a
//! missing one.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt;

fn built_app(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("missive-web-{}-{test}", std::process::id()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><title>Missive</title>",
    )
    .unwrap();
    std::fs::write(dir.join("assets/app-1a2b.js"), "console.log(1)").unwrap();
    std::fs::write(dir.join("assets/app-1a2b.js.br"), b"brotli bytes").unwrap();
    std::fs::write(dir.join("assets/app-1a2b.js.gz"), b"gzip bytes").unwrap();
    dir
}

async fn get(app: &axum::Router, path: &str, encoding: Option<&str>) -> axum::response::Response {
    let mut req = Request::get(path);
    if let Some(encoding) = encoding {
        req = req.header(header::ACCEPT_ENCODING, encoding);
    }
    app.clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

async fn body_of(res: axum::response::Response) -> Vec<u8> {
    axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap()
        .to_vec()
}

fn header_of(res: &axum::response::Response, name: header::HeaderName) -> &str {
    res.headers().get(name).map_or("", |v| v.to_str().unwrap())
}

#[tokio::test]
async fn serves_the_app_with_spa_fallback_caching_and_precompressed_assets() {
    let dir = built_app("site");
    let app = web::router(dir.clone(), &web::SiteOptions::default());

    let ready = get(&app, "/readyz", None).await;
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(get(&app, "/healthz", None).await.status(), StatusCode::OK);

    let index = get(&app, "/", None).await;
    assert_eq!(index.status(), StatusCode::OK);
    assert_eq!(header_of(&index, header::CACHE_CONTROL), "no-cache");

    // A client-side route is the app, not a 404.
    let deep = get(&app, "/messages/42", None).await;
    assert_eq!(deep.status(), StatusCode::OK);
    assert!(header_of(&deep, header::CONTENT_TYPE).starts_with("text/html"));

    let asset = get(&app, "/assets/app-1a2b.js", Some("br, gzip")).await;
    assert_eq!(asset.status(), StatusCode::OK);
    assert_eq!(header_of(&asset, header::CONTENT_ENCODING), "br");
    assert_eq!(
        header_of(&asset, header::CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    // The body is the precompressed file itself, not the original.
    assert_eq!(body_of(asset).await, b"brotli bytes");
    let gzip = get(&app, "/assets/app-1a2b.js", Some("gzip")).await;
    assert_eq!(header_of(&gzip, header::CONTENT_ENCODING), "gzip");
    assert_eq!(body_of(gzip).await, b"gzip bytes");
    let plain = get(&app, "/assets/app-1a2b.js", None).await;
    assert_eq!(header_of(&plain, header::CONTENT_ENCODING), "");
    assert_eq!(body_of(plain).await, b"console.log(1)");

    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn an_unbuilt_app_is_alive_but_not_ready_and_says_how_to_build() {
    let app = web::router(
        PathBuf::from("/nonexistent/missive-dist"),
        &web::SiteOptions::default(),
    );
    assert_eq!(get(&app, "/healthz", None).await.status(), StatusCode::OK);
    let ready = get(&app, "/readyz", None).await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = axum::body::to_bytes(ready.into_body(), 4096).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "not_ready");
    let home = get(&app, "/", None).await;
    assert_eq!(home.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn serves_the_api_document_the_build_put_in_the_site() {
    let dir = built_app("document");
    std::fs::create_dir_all(dir.join("api")).unwrap();
    let document = "{\"openapi\":\"3.1.0\"}\n";
    std::fs::write(dir.join("api/openapi.json"), document).unwrap();
    let app = web::router(dir.clone(), &web::SiteOptions::default());
    let res = get(&app, "/api/openapi.json", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header_of(&res, header::CONTENT_TYPE), "application/json");
    assert_eq!(header_of(&res, header::CACHE_CONTROL), "no-cache");
    assert_eq!(body_of(res).await, document.as_bytes());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn api_paths_no_function_serves_get_the_json_404_not_the_app() {
    let dir = built_app("api");
    let app = web::router(dir.clone(), &web::SiteOptions::default());
    for path in ["/api", "/api/nope", "/api/messages/1/extra"] {
        let res = get(&app, path, None).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        let body = axum::body::to_bytes(res.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// The app runs only its own scripts, connects only to its origin and its collector, and
/// cannot be framed; over HTTPS browsers are told never to use plain HTTP.
#[tokio::test]
async fn the_app_is_served_with_its_security_headers() {
    let dir = built_app("csp");
    std::fs::write(
        dir.join("config.json"),
        r#"{"otlpTracesUrl":"https://otel.example.com:4318/v1/traces"}"#,
    )
    .unwrap();
    let options = web::SiteOptions {
        csp_connect_src: vec!["https://extra.example".to_owned()],
        hsts: true,
    };
    let app = web::router(dir.clone(), &options);
    for path in ["/", "/some/spa/route", "/assets/app-1a2b.js"] {
        let res = get(&app, path, None).await;
        let csp = header_of(&res, header::CONTENT_SECURITY_POLICY);
        for directive in [
            "default-src 'self'",
            "script-src 'self';",
            "style-src 'self';",
            "connect-src 'self' https://otel.example.com:4318 https://extra.example;",
            "object-src 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {directive} not in {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(header_of(&res, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert_eq!(
            header_of(&res, header::STRICT_TRANSPORT_SECURITY),
            "max-age=31536000"
        );
    }
    // Over plain HTTP (missive dev), no HSTS; without a collector, only the site.
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let app = web::router(dir.clone(), &web::SiteOptions::default());
    let res = get(&app, "/", None).await;
    assert!(header_of(&res, header::CONTENT_SECURITY_POLICY).contains("connect-src 'self';"));
    assert_eq!(header_of(&res, header::STRICT_TRANSPORT_SECURITY), "");
    std::fs::remove_dir_all(dir).unwrap();
}
