//! The page's files, embedded in the binary at build time (every file under
//! `src/server/dev/assets/`, in debug builds too): the simulator works offline and
//! needs no build step. A file added to the folder is served without Rust changes
//! (`build.rs` rebuilds the crate when the folder changes).

use super::off;
use crate::server::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

#[derive(rust_embed::Embed)]
#[folder = "src/server/dev/assets/"]
struct Assets;

/// `GET /`: the simulator, in local mode (404 otherwise, as before it existed).
pub async fn root(State(state): State<AppState>) -> Response {
    if super::simulated(&state).is_empty() {
        return off().into_response();
    }
    Redirect::to("/dev").into_response()
}

/// `GET /dev`: the page.
pub async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    serve(&state, "index.html", &headers)
}

/// `GET /dev/assets/{path}`: one of the page's files.
pub async fn file(
    State(state): State<AppState>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(&state, &path, &headers)
}

fn serve(state: &AppState, path: &str, headers: &HeaderMap) -> Response {
    if super::simulated(state).is_empty() {
        return off().into_response();
    }
    let Some(file) = Assets::get(path) else {
        return crate::api::error::ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the page has no file {path}"),
        )
        .into_response();
    };
    // The content's hash: a browser revalidates (the binary may have new files) and
    // gets 304 while nothing changed.
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        file.data.into_owned().into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type(file.metadata.mimetype())) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The type with `charset=utf-8` for text (the page's files are UTF-8).
fn content_type(mime: &str) -> String {
    let text = mime.starts_with("text/")
        || matches!(
            mime,
            "application/javascript" | "application/json" | "image/svg+xml"
        );
    if text && !mime.contains("charset") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    }
}
