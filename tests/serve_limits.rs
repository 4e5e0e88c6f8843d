//! The HTTP server's bounds on loopback: slow clients are cut off, idle connections are
//! closed, and more connections than the limit get a fast 503 instead of a hung server.
//! Each test runs with short limits and bounds its own time.

use parlance::cli::LogFormat;
use parlance::cli::serve::{self, Options};
use parlance::server::listen::{self, Limits};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A local bot (no credentials) served with `limits`; dropping the sender stops it.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start(limits: Limits) -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("flows")).unwrap();
    std::fs::write(
        dir.path().join("parlance.yaml"),
        "session: { store: \"memory://\" }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("flows/main.yaml"),
        "nodes:\n  hi:\n    say: \"hello\"\n",
    )
    .unwrap();
    let options = Options {
        dirs: vec![dir.path().to_path_buf()],
        bind: "127.0.0.1".into(),
        port: 0,
        max_body_bytes: parlance::server::DEFAULT_MAX_BODY_BYTES,
        limits,
        log_format: LogFormat::Text,
        delivery: Default::default(),
    };
    let (state, _) = serve::build(&options).await.expect("the bot loads");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(listen::serve(
        listener,
        parlance::server::app(state),
        limits,
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        addr,
        stop: Some(stop),
        done,
        _dir: dir,
    }
}

fn limits(header: u64, body: u64, idle: u64, max_connections: usize) -> Limits {
    Limits {
        header_timeout: Duration::from_millis(header),
        body_timeout: Duration::from_millis(body),
        idle_timeout: Duration::from_millis(idle),
        max_connections,
    }
}

/// Reads until the server closes the connection (or `limit` passes): what it sent,
/// and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

async fn healthz(addr: SocketAddr) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let r = client.get(format!("http://{addr}/healthz")).send().await;
    r.ok().map(|r| r.status().as_u16())
}

#[tokio::test]
async fn a_slow_loris_is_cut_off_within_the_header_timeout() {
    let server = start(limits(800, 5_000, 5_000, 64)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.split();
    let started = Instant::now();
    // One byte every 100 ms: the whole head would take about 4 s.
    let head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let slow_writer = async {
        for byte in head {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Stay open: only the server may end this.
        std::future::pending::<()>().await;
    };
    let mut got = Vec::new();
    let reading = async {
        let mut buf = [0u8; 256];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        tokio::select! {
            () = slow_writer => {}
            () = reading => {}
        }
    })
    .await;
    let took = started.elapsed();
    assert!(closed.is_ok(), "the connection was still open after 3 s");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_millis(2500),
        "closed after {took:?}"
    );
    assert!(
        !String::from_utf8_lossy(&got).contains("200 OK"),
        "the slow request was served"
    );
    assert_eq!(healthz(server.addr).await, Some(200));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = start(limits(5_000, 5_000, 700, 64)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");
    // Kept alive, then nothing: the server closes it after the idle timeout.
    let answered = Instant::now();
    let (rest, closed) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    let took = answered.elapsed();
    assert!(closed, "still open after 3 s");
    assert_eq!(rest, "");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(2000),
        "closed after {took:?}"
    );
}

#[tokio::test]
async fn a_new_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let server = start(limits(700, 5_000, 5_000, 64)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let (rest, closed) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    let took = started.elapsed();
    assert!(closed, "a silent connection was still open after 3 s");
    assert_eq!(rest, "");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(2000),
        "closed after {took:?}"
    );
}

#[tokio::test]
async fn a_slow_body_is_cut_off_within_the_body_timeout() {
    let server = start(limits(5_000, 600, 5_000, 64)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /dev/message HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"from\":")
        .await
        .unwrap();
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    let took = started.elapsed();
    assert!(closed, "still open after 3 s: {answer}");
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
    assert!(
        answer.ends_with(
            "Failed to buffer the request body: data was not received within the designated timeout"
        ),
        "{answer}"
    );
    assert!(
        took < Duration::from_millis(2000),
        "answered after {took:?}"
    );
}

#[tokio::test]
async fn more_connections_than_the_limit_get_a_fast_503_and_the_server_recovers() {
    let server = start(limits(5_000, 5_000, 1_000, 8)).await;
    // Twenty connections that send nothing: eight take the slots.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = Instant::now();
    let status = healthz(server.addr).await;
    assert_eq!(status, Some(503), "a full server answers 503 at once");
    assert!(asked.elapsed() < Duration::from_millis(1000));
    // The ones over the limit were told so and closed.
    let mut refused = 0;
    for stream in &mut idle {
        let (answer, closed) = read_until_closed(stream, Duration::from_millis(800)).await;
        if closed && answer.starts_with("HTTP/1.1 503 Service Unavailable") {
            refused += 1;
        }
    }
    assert_eq!(refused, 12);
    // The idle ones are closed after the idle timeout, without the clients' help, and
    // the server answers again.
    let recovered = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            if healthz(server.addr).await == Some(200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(recovered.is_ok(), "the server did not recover");
    drop(idle);
}

#[tokio::test]
async fn ctrl_c_stops_the_server_with_an_idle_connection_open() {
    let mut server = start(limits(5_000, 5_000, 60_000, 64)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let _ = stream.read(&mut buf).await.unwrap();
    if let Some(stop) = server.stop.take() {
        let _ = stop.send(());
    }
    let stopped = tokio::time::timeout(Duration::from_secs(3), &mut server.done).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "serve returned: {stopped:?}"
    );
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(1)).await;
    assert!(closed, "the idle connection was closed on shutdown");
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "no longer listening"
    );
}
