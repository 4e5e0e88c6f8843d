//! The crash and several-instances modes: real `parlance serve` child processes (on
//! SQLite, or on one Redis with `--instances`), webhooks posted like Meta does (each
//! re-posted until a 200), kills mid-load, then a count of what users received.

use crate::child::Instance;
use crate::tally::{Tally, tally};
use crate::{Args, NUMBER, SECRET, Signal, message_text, user_number, webhook};
use parlance::testing::fake_graph::FakeGraph;
use parlance::whatsapp::signature;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Replies the bot sends per message.
const REPLIES: usize = 3;
/// Between two posts of a webhook that was not acknowledged.
const REPOST_PAUSE: Duration = Duration::from_millis(50);

pub async fn run(args: &Args) -> Result<(), String> {
    let exe = parlance_exe(args)?;
    let instances = args.instances.map_or(1, |k| k as usize);
    let crashes = args.crash.unwrap_or(0);
    let graph = FakeGraph::start().await.map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let redis = (instances > 1)
        .then(|| RedisRun::new(&args.redis))
        .transpose()?;
    let store = match &redis {
        Some(r) => r.store_url(),
        None => "sqlite://data/load.db".to_string(),
    };
    write_bot(dir.path(), &graph, &store, args)?;

    // A dead instance's users wait for its leases to expire before another instance
    // takes them over: a short lease keeps that wait short (it must outlast the Graph
    // timeout by 5 s); the drain after SIGTERM is kept short too.
    let serve_args: Vec<String> = [
        "serve",
        &dir.path().to_string_lossy(),
        "--shutdown-timeout",
        "5",
        "--graph-timeout",
        "2s",
        "--lease-ttl",
        "8s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let client = reqwest::Client::new();
    let mut servers = Vec::new();
    for (i, port) in free_ports(instances)?.into_iter().enumerate() {
        let log = dir.path().join(format!("server-{i}.log"));
        servers.push(Instance::new(&exe, serve_args.clone(), port, log));
    }
    for server in &mut servers {
        server.start(&client).await?;
    }
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();

    let started = Instant::now();
    let plan = Plan {
        users: args.users,
        messages: args.messages,
        concurrency: args.concurrency,
        pause: Duration::from_millis(args.pause_ms),
        crashes,
        signal: args.signal,
        deadline: started + Duration::from_secs(args.timeout),
    };
    let total = plan.webhooks();
    let expected = expected_replies(args.users, args.messages);
    println!(
        "{} × `parlance serve` on {} (ports {ports:?}), {}; sending {total} webhooks ({} users × {} messages {} ms apart, {} in flight), {REPLIES} replies each, message_delay_ms {}",
        instances,
        match &redis {
            Some(r) => format!("Redis {} with prefix {}", r.url, r.prefix),
            None => "SQLite".to_string(),
        },
        match crashes {
            0 => "no kills".to_string(),
            n => format!("{n} kills ({})", args.signal.name()),
        },
        args.users,
        args.messages,
        args.pause_ms,
        args.concurrency,
        args.delay_ms
    );

    let progress = Arc::new(Progress::default());
    let load = tokio::spawn(send_load(
        client.clone(),
        ports,
        plan,
        Arc::clone(&progress),
    ));
    let crash_result = crash(&mut servers, &client, &graph, &progress, plan).await;
    let load_result = load.await.map_err(|e| e.to_string())?;
    let acked_in = match &load_result {
        Ok(done) => done.duration_since(started),
        Err(_) => started.elapsed(),
    };
    let tally = wait_for_replies(&graph, &expected, plan.deadline).await;
    let replied_in = started.elapsed();

    for server in &mut servers {
        // SIGTERM, as a deploy stops a server (a drain of at most --shutdown-timeout).
        let _ = server.stop(Signal::Term).await;
    }
    if let Some(r) = &redis
        && let Err(e) = r.clean_up().await
    {
        eprintln!(
            "warning: the run's Redis keys ({}*) were not deleted: {e}",
            r.prefix
        );
    }

    report(&tally, &progress, total, acked_in, replied_in);
    let failure = crash_result.err().or(load_result.err()).or_else(|| {
        (tally.failed() || !tally.complete()).then(|| {
            format!(
                "{} replies lost, {} users' replies out of order, {} unexpected",
                tally.lost, tally.out_of_order, tally.unexpected
            )
        })
    });
    match failure {
        Some(e) => {
            for (i, server) in servers.iter().enumerate() {
                eprintln!("--- the end of server {i}'s log:\n{}", server.log_tail());
            }
            Err(e)
        }
        None => Ok(()),
    }
}

/// `--parlance`, or the `parlance` binary next to this one.
fn parlance_exe(args: &Args) -> Result<PathBuf, String> {
    if let Some(path) = &args.parlance {
        return Ok(path.clone());
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let exe = me
        .with_file_name("parlance")
        .with_extension(std::env::consts::EXE_EXTENSION);
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!(
            "no parlance binary at {} (build it: cargo build --release; or give --parlance PATH)",
            exe.display()
        ))
    }
}

/// A bot whose every turn answers message "message N" with "message N 1", "… 2", "… 3".
fn write_bot(dir: &Path, graph: &FakeGraph, store: &str, args: &Args) -> Result<(), String> {
    std::fs::create_dir_all(dir.join("flows")).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("parlance.yaml"),
        format!(
            "whatsapp:\n  access_token: load\n  phone_number_id: \"{NUMBER}\"\n  verify_token: load\n  app_secret: {SECRET}\n  base_url: {}\n  max_messages_per_second: {}\n  message_delay_ms: {}\nsession: {{ store: \"{store}\" }}\n",
            graph.base_url(),
            args.rate,
            args.delay_ms
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("flows/main.yaml"),
        "nodes:\n  three:\n    say: [\"{{ message.text }} 1\", \"{{ message.text }} 2\", \"{{ message.text }} 3\"]\n    next: end\n",
    )
    .map_err(|e| e.to_string())
}

/// Per user, the replies in the order they must arrive.
fn expected_replies(users: usize, messages: usize) -> BTreeMap<String, Vec<String>> {
    (0..users)
        .map(|user| {
            let texts = (0..messages)
                .flat_map(|round| {
                    (1..=REPLIES).map(move |r| format!("{} {r}", message_text(round)))
                })
                .collect();
            (user_number(user), texts)
        })
        .collect()
}

/// `n` different loopback ports that were free a moment ago (all held at once while
/// they are picked, so none comes twice).
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let held = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("no free port: {e}"))?;
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("no free port: {e}"))
}

/// What one run does.
#[derive(Clone, Copy)]
struct Plan {
    users: usize,
    messages: usize,
    /// Webhook POSTs in flight at once.
    concurrency: usize,
    /// Between a user's messages.
    pause: Duration,
    crashes: usize,
    signal: Signal,
    /// When the run gives up.
    deadline: Instant,
}

impl Plan {
    fn webhooks(&self) -> usize {
        self.users * self.messages
    }

    fn replies(&self) -> usize {
        self.webhooks() * REPLIES
    }
}

#[derive(Default)]
struct Progress {
    /// Webhooks answered 200.
    acknowledged: AtomicUsize,
    /// Posts that got no 200 (the server was down, or draining) and were sent again.
    reposts: AtomicUsize,
}

/// Posts every user's messages in order, `pause` apart, each one until a server answers 200 (as Meta
/// redelivers), trying the instances in turn: a user's consecutive messages, and the
/// retries of one, go to different instances. Returns when the last was acknowledged.
async fn send_load(
    client: reqwest::Client,
    ports: Vec<u16>,
    plan: Plan,
    progress: Arc<Progress>,
) -> Result<Instant, String> {
    let Plan {
        users,
        messages,
        pause,
        deadline,
        ..
    } = plan;
    let permits = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let ports = Arc::new(ports);
    let mut tasks = Vec::with_capacity(users);
    for user in 0..users {
        let (client, ports, permits, progress) = (
            client.clone(),
            Arc::clone(&ports),
            Arc::clone(&permits),
            Arc::clone(&progress),
        );
        tasks.push(tokio::spawn(async move {
            for round in 0..messages {
                if round > 0 {
                    tokio::time::sleep(pause).await;
                }
                let body = webhook(user, round);
                let mut attempt = 0;
                loop {
                    let port = ports[(user + round + attempt) % ports.len()];
                    let status = {
                        let _permit = permits.acquire().await.map_err(|e| e.to_string())?;
                        post(&client, port, &body).await
                    };
                    match status {
                        200 => break,
                        0 | 500..=599 => {}
                        other => return Err(format!("a webhook was refused: HTTP {other}")),
                    }
                    if Instant::now() > deadline {
                        return Err("a webhook was not acknowledged before --timeout".into());
                    }
                    progress.reposts.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                    tokio::time::sleep(REPOST_PAUSE).await;
                }
                progress.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(Instant::now())
}

/// The HTTP status of one signed POST, 0 when none came (the server is down).
async fn post(client: &reqwest::Client, port: u16, body: &[u8]) -> u16 {
    client
        .post(format!("http://127.0.0.1:{port}/webhook"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature::sign(SECRET, body))
        .body(body.to_vec())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Stops and restarts a server `crashes` times, the k-th when Graph has accepted k/(N+1)
/// of the replies (so every kill lands mid-delivery), one instance per kill in turn.
async fn crash(
    servers: &mut [Instance],
    client: &reqwest::Client,
    graph: &FakeGraph,
    progress: &Progress,
    plan: Plan,
) -> Result<(), String> {
    let Plan {
        crashes,
        signal,
        deadline,
        ..
    } = plan;
    let (total, expected_total) = (plan.webhooks(), plan.replies());
    for k in 1..=crashes {
        let at = expected_total * k / (crashes + 1);
        let replies = loop {
            let n = graph.accepted().len();
            if n >= at {
                break n;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "only {} of {crashes} kills done: replies stopped at {n} of {expected_total}",
                    k - 1
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let i = (k - 1) % servers.len();
        let webhooks = progress.acknowledged.load(Ordering::Relaxed);
        let down = Instant::now();
        servers[i].stop(signal).await?;
        servers[i].start(client).await?;
        println!(
            "kill {k}: {} to server {i} at {replies}/{expected_total} replies, {webhooks}/{total} webhooks acknowledged; serving again after {} ms",
            signal.name(),
            down.elapsed().as_millis()
        );
    }
    Ok(())
}

/// Waits until every expected reply arrived or `deadline` passed, then counts.
async fn wait_for_replies(
    graph: &FakeGraph,
    expected: &BTreeMap<String, Vec<String>>,
    deadline: Instant,
) -> Tally {
    loop {
        let received: Vec<(String, String)> = graph
            .accepted()
            .iter()
            .map(|m| {
                let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
                (text(&m["to"]), text(&m["text"]["body"]))
            })
            .collect();
        let t = tally(expected, &received);
        if t.complete() || Instant::now() > deadline {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn report(t: &Tally, progress: &Progress, total: usize, acked_in: Duration, replied_in: Duration) {
    let acked = progress.acknowledged.load(Ordering::Relaxed);
    println!(
        "webhooks acknowledged: {acked} of {total} in {:.2}s = {:.0} webhooks/s ({} re-posted after no answer or 5xx)",
        acked_in.as_secs_f64(),
        acked as f64 / acked_in.as_secs_f64(),
        progress.reposts.load(Ordering::Relaxed)
    );
    println!(
        "replies accepted by the fake Graph API: {} in {:.2}s = {:.0} messages/s end to end",
        t.received,
        replied_in.as_secs_f64(),
        t.received as f64 / replied_in.as_secs_f64()
    );
    println!(
        "replies: expected {}, received {}, lost {}, duplicated {}, out of order {} (users), unexpected {}",
        t.expected, t.received, t.lost, t.duplicated, t.out_of_order, t.unexpected
    );
}

/// The Redis of a several-instances run, under a key prefix of its own.
struct RedisRun {
    url: String,
    prefix: String,
}

impl RedisRun {
    fn new(url: &str) -> Result<RedisRun, String> {
        if url.contains('?') {
            return Err(format!(
                "--redis {url}: give the URL without a query; the run picks its own key prefix"
            ));
        }
        // A fresh prefix per run: runs never see each other's users or dedupe records.
        let random = RandomState::new().hash_one(std::process::id());
        Ok(RedisRun {
            url: url.trim_end_matches('/').to_string(),
            prefix: format!("load-{random:016x}:"),
        })
    }

    fn store_url(&self) -> String {
        format!("{}?prefix={}", self.url, self.prefix)
    }

    /// Deletes every key of this run.
    async fn clean_up(&self) -> Result<(), String> {
        let err = |e: redis::RedisError| e.to_string();
        let client = redis::Client::open(self.url.as_str()).map_err(err)?;
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .map_err(err)?;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut con)
                .await
                .map_err(err)?;
            if !keys.is_empty() {
                let _: i64 = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut con)
                    .await
                    .map_err(err)?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}
