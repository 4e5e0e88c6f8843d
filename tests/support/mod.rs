//! Helpers shared by the tests that run the real `parlance` binary. Each test file that
//! needs them says `mod support;`; not every file uses every helper.
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

/// The `parlance` binary, without the caller's `PARLANCE_*` and `RUST_LOG` variables, so
/// a developer's environment cannot change what a test sees.
pub fn parlance() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_parlance"));
    for (name, _) in std::env::vars() {
        if name.starts_with("PARLANCE_") || name == "RUST_LOG" {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether a server answers `/healthz` on `port` within 20 s.
pub async fn wait_until_up(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
