//! Scripts under `parlance serve`: a runaway script is stopped at its limit and the
//! fallback answers, while other users' turns go on without waiting for it.

#![cfg(unix)]

use parlance::testing::fake_graph::FakeGraph;
use std::path::Path;
use std::time::{Duration, Instant};

mod support;
use support::{Server, deliver_text};

const SECRET: &str = "script-app-secret";
const NUMBER: &str = "3003";

/// "spin…" runs a script that never ends (stopped after 1 s); "ping…" answers at once.
fn write_bot(dir: &Path, graph: &FakeGraph) {
    std::fs::create_dir_all(dir.join("flows")).unwrap();
    std::fs::write(
        dir.join("parlance.yaml"),
        format!(
            "bot: {{ entry: ping, fallback: sorry }}\nwhatsapp:\n  access_token: test-token\n  phone_number_id: \"{NUMBER}\"\n  verify_token: let-me-in\n  app_secret: {SECRET}\n  base_url: {}\n  message_delay_ms: 0\nsession: {{ store: \"sqlite://{}\" }}\nscripts:\n  timeout: 1s\n  max_operations: 100000000000\n",
            graph.base_url(),
            dir.join("state.db").display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/spin.yaml"),
        "triggers:\n  - regex: \"^spin\"\nnodes:\n  spin:\n    script: |\n      let n = 0;\n      loop { n += 1; }\n  never:\n    say: \"the loop ended\"\n    next: end\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/ping.yaml"),
        "nodes:\n  pong:\n    say: \"pong {{ message.text }}\"\n    next: end\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("flows/sorry.yaml"),
        "nodes:\n  sorry:\n    say: \"sorry {{ message.text }}\"\n    next: end\n",
    )
    .unwrap();
}

fn text_to(graph: &FakeGraph, user: &str) -> Option<String> {
    graph
        .accepted()
        .iter()
        .find(|m| m["to"] == user)
        .and_then(|m| m["text"]["body"].as_str().map(str::to_string))
}

async fn wait_text(graph: &FakeGraph, user: &str, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(t) = text_to(graph, user) {
            return Some(t);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_scripts_do_not_hold_up_other_users() {
    let graph = FakeGraph::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &graph);
    let mut server = Server::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    // As many runaway scripts as the server has worker threads, and one more.
    let spinners: Vec<String> = (0..3).map(|i| format!("49170000005{i:02}")).collect();
    // Side by side, as Meta delivers them (each webhook is answered after its turn).
    let mut spinning = Vec::new();
    for (i, u) in spinners.iter().enumerate() {
        let (client, port, u) = (client.clone(), server.port, u.clone());
        spinning.push(tokio::spawn(async move {
            deliver_text(
                &client,
                port,
                (NUMBER, SECRET),
                &u,
                &format!("wamid.spin{i}"),
                &format!("spin{i}"),
            )
            .await;
        }));
    }
    // Setup, not an assertion: let the spinners' turns begin.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    for i in 0..10 {
        let u = format!("49170000006{i:02}");
        deliver_text(
            &client,
            server.port,
            (NUMBER, SECRET),
            &u,
            &format!("wamid.ping{i}"),
            &format!("ping{i}"),
        )
        .await;
        let got = wait_text(&graph, &u, Duration::from_secs(5)).await;
        assert_eq!(
            got.as_deref(),
            Some(format!("pong ping{i}").as_str()),
            "{}",
            server.logs()
        );
    }
    let took = started.elapsed();
    // Every ping was answered while the spinners still ran (each runs 1 s).
    assert!(
        took < Duration::from_millis(500),
        "ten pings took {took:?} behind runaway scripts"
    );
    for task in spinning {
        task.await.unwrap();
    }
    for (i, u) in spinners.iter().enumerate() {
        let got = wait_text(&graph, u, Duration::from_secs(10)).await;
        assert_eq!(
            got.as_deref(),
            Some(format!("sorry spin{i}").as_str()),
            "{}",
            server.logs()
        );
    }
}
