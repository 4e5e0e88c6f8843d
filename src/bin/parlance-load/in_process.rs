//! The in-process mode: the fake Graph API and a real `parlance serve` server in this
//! process; posts signed webhooks from many users concurrently and waits until every
//! reply has reached the fake Graph API.

use crate::{Args, NUMBER, SECRET, webhook};
use parlance::cli::LogFormat;
use parlance::cli::serve::{self, Options};
use parlance::server::listen::{self, Limits};
use parlance::testing::fake_graph::FakeGraph;
use parlance::whatsapp::signature;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub async fn run(args: &Args) -> Result<(), String> {
    let graph = FakeGraph::start().await.map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir.path().join("flows")).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.path().join("parlance.yaml"),
        format!(
            "whatsapp:\n  access_token: load\n  phone_number_id: \"{NUMBER}\"\n  verify_token: load\n  app_secret: {SECRET}\n  base_url: {}\n  max_messages_per_second: {}\nsession: {{ store: \"sqlite://data/load.db\" }}\n",
            graph.base_url(),
            args.rate
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        dir.path().join("flows/main.yaml"),
        "nodes:\n  echo:\n    say: \"{{ contact.name | default('there') }}, you said: {{ message.text }}\"\n    next: end\n",
    )
    .map_err(|e| e.to_string())?;

    let options = Options {
        dirs: vec![dir.path().to_path_buf()],
        bind: "127.0.0.1".into(),
        port: 0,
        max_body_bytes: parlance::server::DEFAULT_MAX_BODY_BYTES,
        limits: Limits::default(),
        log_format: LogFormat::Text,
        delivery: Default::default(),
    };
    let (state, _) = serve::build(&options)
        .await
        .map_err(|code| format!("the load bot did not load (exit {code})"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let app = parlance::server::app(state);
        let _ = listen::serve(listener, app, Limits::default(), std::future::pending()).await;
    });

    let total = args.users * args.messages;
    println!(
        "sending {total} signed webhooks ({} users × {} messages, {} in flight) to http://{addr}/webhook",
        args.users, args.messages, args.concurrency
    );
    let client = reqwest::Client::new();
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let started = Instant::now();
    let mut posts = Vec::with_capacity(total);
    let mut latencies = Vec::with_capacity(total);
    for round in 0..args.messages {
        for user in 0..args.users {
            let permit = Arc::clone(&permits)
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            let client = client.clone();
            let body = webhook(user, round);
            posts.push(tokio::spawn(async move {
                let sig = signature::sign(SECRET, &body);
                let sent = Instant::now();
                let result = client
                    .post(format!("http://{addr}/webhook"))
                    .header("content-type", "application/json")
                    .header("x-hub-signature-256", sig)
                    .body(body)
                    .send()
                    .await;
                drop(permit);
                match result {
                    Ok(r) if r.status().is_success() => Ok(sent.elapsed()),
                    Ok(r) => Err(format!("HTTP {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            }));
        }
    }
    for p in posts {
        match p.await.map_err(|e| e.to_string())? {
            Ok(latency) => latencies.push(latency),
            Err(e) => return Err(format!("a webhook was refused: {e}")),
        }
    }
    let accepted_in = started.elapsed();
    let deadline = started + Duration::from_secs(args.timeout);
    loop {
        let replies = graph.messages().len();
        if replies >= total {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {replies} of {total} replies arrived within {}s",
                args.timeout
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let replied_in = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    println!(
        "webhooks accepted: {total} in {:.2}s = {:.0} webhooks/s",
        accepted_in.as_secs_f64(),
        total as f64 / accepted_in.as_secs_f64()
    );
    println!(
        "webhook answer latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        pct(1.0).as_secs_f64() * 1e3
    );
    println!(
        "all {total} replies delivered to the fake Graph API in {:.2}s = {:.0} messages/s end to end",
        replied_in.as_secs_f64(),
        total as f64 / replied_in.as_secs_f64()
    );
    Ok(())
}
