//! The `http` node's performer: real HTTP calls for an [`engine::HttpRequest`], their
//! outcome as an [`EffectOutcome`].
//!
//! [`Caller::call`] never fails and never panics on what the network does: every problem
//! is an [`HttpFailure`] with a kind (`message.error.kind` in the node's `on_error`).
//! Hosts are checked before anything is sent and again at connect time
//! ([`guard`]); answers are read up to `http.max_body_bytes` ([`response`]); idempotent
//! requests are retried with exponential backoff and jitter (backon).
//!
//! Logs name the method, `scheme://host/path`, the status, the attempts and the time:
//! never the query string nor a header value, which carry secrets (`expose_env`).

pub mod guard;
mod response;

use crate::engine::{self, EffectOutcome, HttpErrorKind, HttpFailure, RequestBody};
use crate::flow::HttpMethod;
use crate::flow::settings::HttpSettings;
use backon::{ExponentialBuilder, Retryable};
use guard::{GuardedResolver, HostPolicy, Refused};
use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue, USER_AGENT};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Most redirects followed for one call.
pub const MAX_REDIRECTS: usize = 5;
/// The longest `Retry-After` waited for before a retry; a longer one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);
/// The backoff between tries: doubling from this, with jitter, up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Sent unless the node sets its own `User-Agent`.
const DEFAULT_USER_AGENT: &str = concat!("parlance/", env!("CARGO_PKG_VERSION"));

/// Makes `http` nodes' calls. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct Caller {
    client: reqwest::Client,
    policy: Arc<HostPolicy>,
    max_body_bytes: u64,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("policy", &self.policy)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

/// Why one try failed, and whether another may follow.
#[derive(Debug)]
pub(crate) struct Failure {
    kind: HttpErrorKind,
    status: Option<u16>,
    message: String,
    response: Option<Value>,
    /// A timeout, a connection error, a 5xx or a 429.
    retryable: bool,
    /// The answer's `Retry-After`.
    retry_after: Option<Duration>,
}

impl Failure {
    fn new(kind: HttpErrorKind, message: String) -> Failure {
        Failure {
            kind,
            status: None,
            message,
            response: None,
            retryable: false,
            retry_after: None,
        }
    }
}

impl Caller {
    /// A caller for a bot's `http:` settings; fails on an `allow_hosts` entry that is
    /// not a host (the loader reports those first) or when no client can be built.
    pub fn new(settings: &HttpSettings) -> Result<Caller, String> {
        let policy = Arc::new(HostPolicy::new(settings.allow_hosts.as_deref())?);
        Caller::build(Arc::clone(&policy), policy, settings.max_body_bytes)
    }

    /// A caller checking URLs (and redirect hops) with `policy` and resolved addresses
    /// with `resolving`: the same policy, but for a test that reaches the resolver's
    /// refusal with a URL the first check lets through.
    fn build(
        policy: Arc<HostPolicy>,
        resolving: Arc<HostPolicy>,
        max_body_bytes: u64,
    ) -> Result<Caller, String> {
        let hops = Arc::clone(&policy);
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            // `previous` holds the URL first asked for and each hop followed so far.
            if attempt.previous().len() > MAX_REDIRECTS {
                let e = RedirectRefused(format!("more than {MAX_REDIRECTS} redirects"));
                return attempt.error(e);
            }
            match hops.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(Refused(why)) => {
                    let e = RedirectRefused(format!(
                        "a redirect to {} was not followed: {why}",
                        shown(attempt.url())
                    ));
                    attempt.error(e)
                }
            }
        });
        let client = reqwest::Client::builder()
            // A proxy would resolve and connect for us, past the address check.
            .no_proxy()
            .dns_resolver(GuardedResolver { policy: resolving })
            .redirect(redirect)
            // The page a redirect came from may hold a secret in its query.
            .referer(false)
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(Caller {
            client,
            policy,
            max_body_bytes,
        })
    }

    /// Makes the call, with its retries: 2xx is [`EffectOutcome::Http`] holding
    /// `{status, headers, body}`; anything else [`EffectOutcome::HttpFailed`].
    pub async fn call(&self, request: &engine::HttpRequest) -> EffectOutcome {
        let started = Instant::now();
        let attempts = AtomicU32::new(0);
        let method = request.method.as_str();
        let (target, result) = match self.url(request) {
            Err(f) => (shown_url(&request.url), Err(f)),
            Ok(url) => {
                let target = shown(&url);
                let backoff = ExponentialBuilder::default()
                    .with_min_delay(MIN_BACKOFF)
                    .with_max_delay(MAX_BACKOFF)
                    .with_jitter()
                    .with_max_times(request.retries as usize);
                let result = (|| async {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    self.attempt(request, &url).await
                })
                .retry(backoff)
                .when(|f: &Failure| f.retryable && request.method.idempotent())
                .adjust(|f: &Failure, delay| {
                    delay.map(|d| match f.retry_after {
                        Some(after) => d.max(after.min(MAX_RETRY_AFTER)),
                        None => d,
                    })
                })
                .notify(|f: &Failure, delay| {
                    tracing::debug!(
                        method,
                        url = %target,
                        kind = f.kind.as_str(),
                        status = f.status,
                        retry_in_ms = delay.as_millis() as u64,
                        "http call failed; trying again"
                    );
                })
                .await;
                (target, result)
            }
        };
        log(
            method,
            &target,
            attempts.load(Ordering::Relaxed),
            started,
            &result,
        );
        match result {
            Ok(value) => EffectOutcome::Http(value),
            Err(f) => EffectOutcome::HttpFailed(HttpFailure {
                kind: f.kind,
                status: f.status,
                message: f.message,
                response: f.response,
            }),
        }
    }

    /// The URL with the query added, checked against the host policy: nothing is sent
    /// for a URL that fails.
    fn url(&self, request: &engine::HttpRequest) -> Result<Url, Failure> {
        let mut url = Url::parse(request.url.trim()).map_err(|e| {
            Failure::new(
                HttpErrorKind::Connect,
                format!("the url is not a URL ({e}): {}", shown_url(&request.url)),
            )
        })?;
        if !request.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&request.query);
        }
        self.policy
            .check_url(&url)
            .map_err(|Refused(why)| Failure::new(HttpErrorKind::Forbidden, why))?;
        Ok(url)
    }

    /// One try, bounded by the node's timeout from sending to the last byte read.
    async fn attempt(&self, request: &engine::HttpRequest, url: &Url) -> Result<Value, Failure> {
        let method = match request.method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Put => reqwest::Method::PUT,
            HttpMethod::Patch => reqwest::Method::PATCH,
            HttpMethod::Delete => reqwest::Method::DELETE,
        };
        let mut builder = self.client.request(method, url.clone());
        let mut has_agent = false;
        for (name, value) in &request.headers {
            let header = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                Failure::new(
                    HttpErrorKind::Connect,
                    format!("\"{name}\" is not a valid header name"),
                )
            })?;
            // The value may be a secret: the message names the header only.
            let value = HeaderValue::from_str(value).map_err(|_| {
                Failure::new(
                    HttpErrorKind::Connect,
                    format!("the value of header {name} is not a valid header value (a line break or control character?)"),
                )
            })?;
            has_agent |= header == USER_AGENT;
            builder = builder.header(header, value);
        }
        if !has_agent {
            builder = builder.header(USER_AGENT, DEFAULT_USER_AGENT);
        }
        builder = match &request.body {
            RequestBody::None => builder,
            RequestBody::Json(value) => builder.json(value),
            RequestBody::Form(pairs) => builder.form(pairs),
            RequestBody::Text(text) => builder.body(text.clone()),
        };
        let limit = self.max_body_bytes;
        let exchange = async {
            let answer = builder.send().await.map_err(|e| classify(&e))?;
            response::read(answer, limit).await
        };
        match tokio::time::timeout(request.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Failure {
                retryable: true,
                ..Failure::new(
                    HttpErrorKind::Timeout,
                    format!(
                        "no answer within {}",
                        humantime::format_duration(request.timeout)
                    ),
                )
            }),
        }
    }
}

/// A redirect the policy did not follow (its message names no query).
#[derive(Debug)]
struct RedirectRefused(String);

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedirectRefused {}

/// A client error as a failure. Its messages come from the error's causes, never from
/// reqwest's own text, which holds the URL and its query.
pub(crate) fn classify(e: &reqwest::Error) -> Failure {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<Refused>() {
            return Failure::new(HttpErrorKind::Forbidden, refused.0.clone());
        }
        if let Some(redirect) = s.downcast_ref::<RedirectRefused>() {
            return Failure::new(HttpErrorKind::Redirect, redirect.0.clone());
        }
        causes.push(s.to_string());
        source = s.source();
    }
    // The innermost cause says most (e.g. "Connection refused (os error 111)").
    let cause = causes
        .last()
        .cloned()
        .unwrap_or_else(|| "unknown error".into());
    let (kind, what) = if e.is_timeout() {
        (HttpErrorKind::Timeout, "timed out")
    } else if e.is_redirect() {
        (HttpErrorKind::Redirect, "redirect not followed")
    } else if e.is_connect() {
        (HttpErrorKind::Connect, "cannot connect")
    } else if e.is_body() || e.is_decode() {
        (HttpErrorKind::Connect, "the answer broke off")
    } else {
        (HttpErrorKind::Connect, "the request failed")
    };
    Failure {
        retryable: matches!(kind, HttpErrorKind::Timeout | HttpErrorKind::Connect),
        ..Failure::new(kind, format!("{what}: {cause}"))
    }
}

/// `scheme://host[:port]/path` of a URL: what logs and messages show of it (no query,
/// no user info, no fragment).
pub fn shown_url(url: &str) -> String {
    match Url::parse(url.trim()) {
        Ok(u) => shown(&u),
        Err(_) => "(not a URL)".into(),
    }
}

fn shown(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

fn log(
    method: &str,
    target: &str,
    attempts: u32,
    started: Instant,
    result: &Result<Value, Failure>,
) {
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(value) => tracing::info!(
            method,
            url = %target,
            status = value.get("status").and_then(serde_json::Value::as_u64),
            attempts,
            elapsed_ms,
            "http call"
        ),
        Err(f) => tracing::warn!(
            method,
            url = %target,
            status = f.status,
            kind = f.kind.as_str(),
            error = %f.message,
            attempts,
            elapsed_ms,
            "http call failed"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::HttpRequest;

    fn get(url: String) -> HttpRequest {
        HttpRequest {
            method: HttpMethod::Get,
            url,
            headers: Vec::new(),
            query: Vec::new(),
            body: RequestBody::None,
            timeout: Duration::from_secs(5),
            retries: 2,
        }
    }

    /// A name whose addresses the resolver refuses is `forbidden`, not a connection
    /// error, and is not retried. (`localhost` passes the URL check; the resolver here
    /// allows only another name, as it would refuse a name resolving to 169.254.169.254.)
    #[tokio::test]
    async fn a_refused_resolution_is_forbidden() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let only_other = HostPolicy::new(Some(&["api.example.com".into()])).unwrap();
        let caller =
            Caller::build(Arc::new(HostPolicy::default()), Arc::new(only_other), 1024).unwrap();
        let started = Instant::now();
        let outcome = caller.call(&get(format!("http://localhost:{port}/"))).await;
        let EffectOutcome::HttpFailed(f) = outcome else {
            panic!("expected a failure, got {outcome:?}");
        };
        assert_eq!(f.kind, HttpErrorKind::Forbidden, "{f:?}");
        assert!(f.message.contains("localhost"), "{}", f.message);
        // Not retried: no backoff was waited.
        assert!(started.elapsed() < MIN_BACKOFF, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_url_that_is_not_one_fails_without_a_call() {
        let caller = Caller::new(&HttpSettings::default()).unwrap();
        let outcome = caller.call(&get("not a url?key=SECRET".into())).await;
        let EffectOutcome::HttpFailed(f) = outcome else {
            panic!("expected a failure, got {outcome:?}");
        };
        assert_eq!(f.kind, HttpErrorKind::Connect);
        assert!(!f.message.contains("SECRET"), "{}", f.message);
    }
}
