//! `/healthz` is liveness, `/readyz` readiness: a server whose store stops answering
//! stays alive (no restart would help) but says it is not ready, and why.

use axum::body::Body;
use axum::http::Request;
use parlance::cli::LogFormat;
use parlance::cli::serve::{self, Options};
use parlance::server::listen::Limits;
use serde_json::{Value, json};
use std::path::Path;
use tower::ServiceExt;

fn write_bot(dir: &Path) {
    std::fs::create_dir_all(dir.join("flows")).unwrap();
    std::fs::write(
        dir.join("parlance.yaml"),
        "session: { store: \"sqlite://data/ready.db\" }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/main.yaml"),
        "nodes:\n  hi:\n    say: \"hello\"\n",
    )
    .unwrap();
}

async fn get(app: axum::Router, path: &str) -> (u16, Vec<u8>) {
    let response = app
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, body.to_vec())
}

#[tokio::test]
async fn readyz_says_which_store_does_not_answer_while_healthz_stays_ok() {
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path());
    let options = Options {
        dirs: vec![dir.path().to_path_buf()],
        bind: "127.0.0.1".into(),
        port: 0,
        max_body_bytes: parlance::server::DEFAULT_MAX_BODY_BYTES,
        limits: Limits::default(),
        log_format: LogFormat::Text,
        delivery: Default::default(),
    };
    let (state, _) = serve::build(&options).await.expect("the bot loads");
    let app = parlance::server::app(state);

    let (status, body) = get(app.clone(), "/readyz").await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body,
        json!({
            "ready": true,
            "problems": [],
            "bots": [{ "phone_number_id": "local", "version": 1, "store": "ok", "sending": "ok" }]
        })
    );

    // Someone breaks the database under the running server.
    rusqlite::Connection::open(dir.path().join("data/ready.db"))
        .unwrap()
        .execute_batch("DROP TABLE d_sessions")
        .unwrap();
    let (status, body) = get(app.clone(), "/readyz").await;
    assert_eq!(status, 503);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body,
        json!({
            "ready": false,
            "problems": ["local: store: no such table: d_sessions"],
            "bots": [{ "phone_number_id": "local", "version": 1, "store": "store: no such table: d_sessions", "sending": "ok" }]
        })
    );
    let (status, body) = get(app, "/healthz").await;
    assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));
}
