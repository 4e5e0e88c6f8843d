//! The accept loop: HTTP/1.1 connections with a header timeout, a body timeout, an idle
//! timeout and a cap on open connections, so slow or idle clients cannot wedge the
//! server (`axum::serve` has none of these).
//!
//! - A request head must arrive within `header_timeout` of its first byte (slow-loris).
//! - A request body must arrive within `body_timeout` (tower-http's body timeout).
//! - A connection with no request under way and nothing sent or received for
//!   `idle_timeout` is closed (new connections that never send, idle keep-alives).
//! - Beyond `max_connections` open connections a new one is answered `503` at once and
//!   closed, so `/healthz` and Meta get a fast answer rather than a hung socket, and the
//!   server recovers as soon as connections close.
//!
//! Only HTTP/1.1 is served: Meta's webhooks use it, and one protocol keeps these bounds
//! simple to reason about.

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tower::ServiceExt;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// The bounds of the HTTP server (`serve --header-timeout` and the like).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_BODY_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// Well under the usual 1,024 open files, which the server shares with its SQLite
/// files, the Graph API client and the sockets refused with 503.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(DEFAULT_HEADER_TIMEOUT_SECS),
            body_timeout: Duration::from_secs(DEFAULT_BODY_TIMEOUT_SECS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
        }
    }
}

/// How long a refused connection may take to send its request before it gets the 503.
const REFUSE_WAIT: Duration = Duration::from_millis(200);
/// How long a refused connection may take to receive its 503 before it is dropped.
const REFUSE_LINGER: Duration = Duration::from_millis(500);
/// Most refused connections lingering for their 503 at once; beyond, the 503 is written
/// at once without reading the request.
const MAX_REFUSING: usize = 64;
/// How long open connections may take to finish once the server stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 46\r\n\r\n{\"error\": \"too many open connections; retry\"}\n";

/// Serves `app` on `listener` until `shutdown` resolves, then lets open requests finish
/// (up to a grace period).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with_grace(listener, app, limits, shutdown, SHUTDOWN_GRACE).await
}

/// [`serve`], with the time open requests get after `shutdown` resolves. `parlance
/// serve` drains its turns before it stops the HTTP server, so little is left by then.
pub async fn serve_with_grace(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()> {
    let app = app.layer(RequestBodyTimeoutLayer::new(limits.body_timeout));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, mostly: wait for some to close rather
                    // than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            match Arc::clone(&refusing).try_acquire_owned() {
                Ok(permit) => {
                    tokio::spawn(async move {
                        refuse(stream).await;
                        drop(permit);
                    });
                }
                // Too many refusals lingering already: answer at once, without waiting
                // for the request, so the client still gets a 503 rather than a bare
                // reset, and no descriptor is held.
                Err(_) => {
                    let _ = stream.try_write(BUSY_RESPONSE);
                }
            }
            continue;
        };
        // Answers are one small write each: send them at once rather than wait
        // for the client's ACK of the last one (Nagle's algorithm).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let app = app.clone();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            serve_connection(stream, app, limits, stopping).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot: all slots back means all connections ended.
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(grace, slots.acquire_many(all)).await;
    if drained.is_err() {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
    Ok(())
}

/// Answers 503 and closes. The request is read first (briefly: a client that sends
/// nothing gets the 503 after [`REFUSE_WAIT`]), because an HTTP client that receives an
/// answer before it sent its request reports an error instead of the 503; and a little
/// is read after, because closing a socket with unread data resets it.
async fn refuse(mut stream: TcpStream) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(REFUSE_WAIT, stream.read(&mut sink)).await;
    let _ = tokio::time::timeout(REFUSE_LINGER, async {
        stream.write_all(BUSY_RESPONSE).await?;
        stream.shutdown().await?;
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), io::Error>(())
    })
    .await;
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let on_request = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let app = app.clone();
        let activity = Arc::clone(&on_request);
        activity.request_started();
        async move {
            let response = app.oneshot(req.map(Body::new)).await;
            activity.request_ended();
            response
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        // Our own watchdog bounds header reads and idle time (see `Activity`).
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut shutting_down = false;
    loop {
        let deadline = activity.deadline(&limits);
        tokio::select! {
            _ = conn.as_mut() => return,
            () = activity.changed.notified() => {}
            () = tokio::time::sleep_until(deadline.into()) => {
                if activity.deadline(&limits) <= Instant::now() {
                    // Dropping the connection closes the socket.
                    return;
                }
            }
            changed = stopping.changed(), if !shutting_down => {
                shutting_down = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// What one connection is doing, for the watchdog: requests under way, when bytes last
/// moved, and when the current request head started arriving.
struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` of the last byte read or written, at least 1: 0 means
    /// none yet.
    last_io_ms: AtomicU64,
    /// When the first byte of the head now arriving was read (none between requests).
    head_started: Mutex<Option<Instant>>,
    /// Wakes the watchdog when its deadline moves earlier (a head starts arriving) or
    /// a request ends.
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_io_ms: AtomicU64::new(0),
            head_started: Mutex::new(None),
            changed: Notify::new(),
        }
    }

    fn touch(&self) {
        // A request read and answered within the connection's first millisecond is
        // still I/O: without the `max`, a connection whose answer streams on (the
        // `/dev` event stream) would get the header timeout, not the idle timeout.
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_io_ms.store(ms.max(1), Ordering::Relaxed);
    }

    fn head(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.head_started.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_some(&self) {
        self.touch();
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let mut head = self.head();
            if head.is_none() {
                *head = Some(Instant::now());
                self.changed.notify_one();
            }
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        *self.head() = None;
    }

    fn request_ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.touch();
        self.changed.notify_one();
    }

    /// When the connection is to be closed if nothing changes: never while a request
    /// is handled (the body timeout bounds that), the header timeout from the first
    /// byte of a head (or from the start, for a connection that sent nothing yet, when
    /// that is shorter than the idle timeout), the idle timeout from the last byte
    /// otherwise.
    fn deadline(&self, limits: &Limits) -> Instant {
        let now = Instant::now();
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return now + limits.idle_timeout;
        }
        if let Some(started) = *self.head() {
            return started + limits.header_timeout;
        }
        let last_io = self.last_io_ms.load(Ordering::Relaxed);
        if last_io == 0 {
            // A new connection that has sent nothing yet owes us a request head: it
            // gets no longer than one would (an idle flood frees its slots sooner).
            return self.epoch + limits.header_timeout.min(limits.idle_timeout);
        }
        self.epoch + Duration::from_millis(last_io) + limits.idle_timeout
    }
}

/// The socket, telling `Activity` when bytes move.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_some();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::{Activity, Limits};
    use std::time::{Duration, Instant};

    #[test]
    fn io_in_the_first_millisecond_counts_as_io() {
        let limits = Limits {
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            ..Limits::default()
        };
        let activity = Activity::new();
        // Nothing yet: the header timeout.
        assert!(activity.deadline(&limits) < Instant::now() + Duration::from_secs(2));
        activity.touch();
        assert!(activity.deadline(&limits) > Instant::now() + Duration::from_secs(30));
    }
}
