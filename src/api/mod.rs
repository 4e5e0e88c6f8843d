//! The HTTP API under `/api/v1` (docs/api.md): inject and notify, data requests, the
//! session trace, and the agent routes of handovers. Every route takes the Bearer key of a bot
//! ([`auth`]), answers errors in one shape ([`error`]), and is described by the OpenAPI
//! document generated from the handlers' own types (`GET /api/openapi.json`, checked in
//! as `docs/openapi.json`).
//!
//! A new group of routes is a module with `#[utoipa::path]` handlers, added in
//! [`routes`]; the document follows by itself.

pub mod auth;
pub mod error;
pub mod handover_routes;
pub mod handovers;
pub mod messages;
pub mod trace;
pub mod users;

use crate::server::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Request bodies larger than this get 413: the API takes small JSON objects.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Parlance API",
        description = "Inject messages into WhatsApp conversations, notify users, answer data requests, and let human agents take conversations (handovers). See docs/api.md.",
        license(name = "MIT", identifier = "MIT"),
    ),
    modifiers(&BearerKey),
    tags(
        (name = "messages", description = "Inject and notify"),
        (name = "users", description = "Data requests: export and erasure"),
        (name = "trace", description = "The session trace: why the bot said what it said"),
        (name = "handovers", description = "Agents: list, read, accept, reply to and resolve handovers"),
    )
)]
struct ApiDoc;

/// What the types cannot say: a request takes exactly one of some fields
/// (`InjectRequest`: text, reply, data; `NotifyRequest`: text, template, flow). The
/// handlers refuse anything else with 422; the document says so with a `oneOf`.
struct ExactlyOne;

impl Modify for ExactlyOne {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder};
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for (name, fields) in [
            ("InjectRequest", &["text", "reply", "data"][..]),
            ("NotifyRequest", &["text", "template", "flow"][..]),
            (
                "AgentMessageRequest",
                &[
                    "text", "image", "video", "audio", "document", "sticker", "template",
                ][..],
            ),
        ] {
            let Some(schema) = components.schemas.remove(name) else {
                continue;
            };
            let mut choices = OneOfBuilder::new();
            for field in fields.iter().copied() {
                choices = choices.item(ObjectBuilder::new().required(field));
            }
            let both = AllOfBuilder::new().item(schema).item(choices);
            components.schemas.insert(name.to_string(), both.into());
        }
    }
}

/// The `api_key` security scheme: `Authorization: Bearer <api.key>`.
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some("A bot's api.key from parlance.yaml".into());
        components.add_security_scheme("api_key", SecurityScheme::Http(scheme));
    }
}

/// The routes and the document describing them.
fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let v1 = OpenApiRouter::new()
        .routes(routes!(messages::inject))
        .routes(routes!(messages::notify))
        .routes(routes!(users::export, users::erase))
        .routes(routes!(trace::user_trace))
        .routes(routes!(handover_routes::list))
        .routes(routes!(handover_routes::get_one))
        .routes(routes!(handover_routes::accept))
        .routes(routes!(handover_routes::send_message))
        .routes(routes!(handover_routes::resolve));
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", v1)
        .split_for_parts();
    // After the routes brought their schemas in.
    ExactlyOne.modify(&mut doc);
    (router, doc)
}

/// The OpenAPI document (`parlance openapi`, `GET /api/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}

/// The document as served and checked in: pretty JSON with a final newline.
pub fn openapi_json() -> String {
    let mut text = openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// `/api/v1/*` and `/api/openapi.json`, with the API's body limit, JSON 404s for
/// unknown paths under `/api` and JSON 405s for wrong methods.
pub fn router() -> Router<AppState> {
    let (api, _) = routes();
    let document = openapi_json();
    api.route(
        "/api/openapi.json",
        get(move || async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                document,
            )
        }),
    )
    .route("/api", axum::routing::any(error::no_route))
    .route("/api/{*rest}", axum::routing::any(error::no_route))
    .method_not_allowed_fallback(error::wrong_method)
    .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}
