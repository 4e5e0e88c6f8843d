//! The load tool keeps working: a small bounded run of each mode completes and reports
//! its figures; the crash and several-instances modes run the real `parlance` binary,
//! kill it mid-load and find nothing lost and nothing out of order.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished run printed.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Both streams, for assertion messages.
    fn text(&self) -> String {
        format!("{}\n--- stderr:\n{}", self.stdout, self.stderr)
    }
}

/// Runs `parlance-load` with `args`, killed if it is not done `within` (its own
/// `--timeout` should end it long before).
fn run_load(args: &[&str], within: Duration) -> Run {
    let dir = tempfile::tempdir().expect("a temp dir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_parlance-load"));
    // A developer's PARLANCE_* settings would reach the servers the tool starts.
    for (name, _) in std::env::vars() {
        if name.starts_with("PARLANCE_") || name == "RUST_LOG" {
            cmd.env_remove(name);
        }
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("parlance-load runs");
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the run can be waited for") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let run = Run {
        success: status.is_some_and(|s| s.success()),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "parlance-load did not finish within {within:?}:\n{}",
        run.text()
    );
    run
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A successful run with every expected reply, none lost or out of order.
fn assert_clean(run: &Run, expected: usize) {
    let text = run.text();
    assert!(run.success, "{text}");
    assert!(
        run.stdout
            .contains(&format!("replies: expected {expected}, ")),
        "{text}"
    );
    assert!(run.stdout.contains(", lost 0, "), "{text}");
    assert!(run.stdout.contains(", out of order 0 "), "{text}");
    assert!(run.stdout.contains(", unexpected 0"), "{text}");
}

#[test]
fn a_small_load_run_delivers_every_reply() {
    let run = run_load(
        &[
            "--users",
            "5",
            "--messages",
            "4",
            "--concurrency",
            "4",
            "--timeout",
            "30",
        ],
        Duration::from_secs(60),
    );
    let text = run.text();
    assert!(run.success, "{text}");
    assert!(run.stdout.contains("webhooks accepted: 20 in "), "{text}");
    assert!(
        run.stdout
            .contains("all 20 replies delivered to the fake Graph API"),
        "{text}"
    );
}

#[test]
fn crash_mode_kills_the_server_twice_and_loses_nothing() {
    let run = run_load(
        &[
            "--crash",
            "2",
            "--users",
            "10",
            "--messages",
            "3",
            "--timeout",
            "60",
            "--parlance",
            env!("CARGO_BIN_EXE_parlance"),
        ],
        Duration::from_secs(90),
    );
    assert_clean(&run, 90);
    let text = run.text();
    assert!(
        run.stdout.contains("1 × `parlance serve` on SQLite"),
        "{text}"
    );
    assert!(
        run.stdout.contains("kill 1: SIGKILL to server 0 at "),
        "{text}"
    );
    assert!(
        run.stdout.contains("kill 2: SIGKILL to server 0 at "),
        "{text}"
    );
}

#[test]
fn crash_mode_with_sigterm_sends_each_reply_exactly_once() {
    // Without --parlance: the tool finds the `parlance` binary next to itself.
    let run = run_load(
        &[
            "--crash",
            "2",
            "--signal",
            "term",
            "--users",
            "10",
            "--messages",
            "3",
            "--timeout",
            "60",
        ],
        Duration::from_secs(90),
    );
    assert_clean(&run, 90);
    let text = run.text();
    assert!(
        run.stdout.contains("kill 2: SIGTERM to server 0 at "),
        "{text}"
    );
    // A drained server records every send it made: nothing goes out twice.
    assert!(run.stdout.contains(", duplicated 0, "), "{text}");
}

#[test]
fn two_instances_on_redis_lose_nothing() {
    let redis = redis_url();
    let run = run_load(
        &[
            "--instances",
            "2",
            "--redis",
            &redis,
            "--users",
            "10",
            "--messages",
            "3",
            "--timeout",
            "60",
            "--parlance",
            env!("CARGO_BIN_EXE_parlance"),
        ],
        Duration::from_secs(90),
    );
    assert_clean(&run, 90);
    let text = run.text();
    assert!(
        run.stdout.contains("2 × `parlance serve` on Redis "),
        "{text}"
    );
    assert!(
        run.stdout.contains("webhooks acknowledged: 30 of 30 in "),
        "{text}"
    );
}

#[test]
fn two_instances_with_a_kill_lose_nothing() {
    // The killed instance's users wait for its leases to expire (8 s) before the other
    // instance takes them over.
    let redis = redis_url();
    let run = run_load(
        &[
            "--instances",
            "2",
            "--crash",
            "1",
            "--redis",
            &redis,
            "--users",
            "10",
            "--messages",
            "3",
            "--timeout",
            "60",
            "--parlance",
            env!("CARGO_BIN_EXE_parlance"),
        ],
        Duration::from_secs(90),
    );
    assert_clean(&run, 90);
    let text = run.text();
    assert!(
        run.stdout.contains("kill 1: SIGKILL to server 0 at "),
        "{text}"
    );
}
