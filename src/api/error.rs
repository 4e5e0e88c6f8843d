//! The API's one error shape, `{"error": {"code", "message"}}`, for every answer that is
//! not a success: the handlers' own, axum's rejections (bad JSON, wrong content type,
//! a body over the limit), unknown routes and wrong methods.

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// Every API error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs: `api_off`, `unauthorized`, `not_found`, `invalid_body`, …
    /// (docs/api.md lists them).
    pub code: String,
    /// For people: what was wrong and, where it helps, what to do.
    pub message: String,
}

/// An error answer: a status, a stable code and a message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// A request body that is well-formed JSON but not what the route takes.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message)
    }

    /// The store did not answer: nothing was done; the client may retry.
    pub fn store(e: &impl std::fmt::Display) -> Self {
        tracing::warn!(error = %e, "an API request could not reach the store");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store did not answer; nothing was done, retry later",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"parlance\""),
            );
        }
        response
    }
}

/// A JSON request body, read within the API's size limit and decoded into `T`, with
/// every failure in the API's error shape: 415 without `Content-Type: application/json`,
/// 413 over the limit, 400 for text that is not JSON, 422 for JSON that is not `T`
/// (serde's message names the field: `missing field \`user\``, `unknown field \`x\``).
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime_type::Essence>().ok())
            .is_some_and(|m| m.is_json());
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        decode(&bytes).map(Json)
    }
}

/// `T` from a JSON body: 400 when it is not JSON, 422 when it is not a `T`, naming
/// the field (`text: invalid type: integer \`5\`, expected a string`).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        use serde_json::error::Category;
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            Category::Data if path == "." => {
                ApiError::invalid(format!("the body does not fit this route: {inner}"))
            }
            Category::Data => ApiError::invalid(format!("{path}: {inner}")),
            Category::Syntax | Category::Eof | Category::Io => malformed(&inner),
        }
    })?;
    // Nothing but white space may follow the value.
    json.end().map_err(|e| malformed(&e))?;
    Ok(value)
}

fn malformed(e: &serde_json::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "malformed_json",
        format!("the body is not JSON: {e}"),
    )
}

/// For optional request fields: absent is `None`, but `null` is refused like any other
/// wrong type (the OpenAPI document says the field is a string, not a string or null).
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

fn body_rejection(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the body is over the API's limit of {} bytes",
                super::MAX_BODY_BYTES
            ),
        );
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "unreadable_body",
        format!("the body could not be read: {e}"),
    )
}

/// A path parameter axum could not decode (invalid percent-encoding).
pub fn path_rejection(e: &PathRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_path",
        format!("the path could not be read: {e}"),
    )
}

/// `404` for any other path under `/api`.
pub async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!(
            "no API route {}; see /api/openapi.json",
            uri.path().chars().take(200).collect::<String>()
        ),
    )
}

/// `405` for a route asked with a method it does not take.
pub async fn wrong_method(method: axum::http::Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route does not take {method}; see /api/openapi.json"),
    )
}

/// The media type of a `Content-Type` header, without parameters.
mod mime_type {
    pub struct Essence(String);

    impl std::str::FromStr for Essence {
        type Err = ();

        fn from_str(s: &str) -> Result<Self, ()> {
            let essence = s.split(';').next().ok_or(())?.trim().to_ascii_lowercase();
            Ok(Essence(essence))
        }
    }

    impl Essence {
        /// `application/json`, or a `+json` type (`application/problem+json`).
        pub fn is_json(&self) -> bool {
            self.0 == "application/json"
                || (self.0.starts_with("application/") && self.0.ends_with("+json"))
        }
    }
}
