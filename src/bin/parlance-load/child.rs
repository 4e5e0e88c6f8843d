//! A `parlance serve` child process on a fixed loopback port, which can be killed and
//! started again on the same port (as a restarted instance behind a balancer).

use crate::Signal;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start may take before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a SIGTERM drain may take (the child's `--shutdown-timeout` is shorter).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Instance {
    pub port: u16,
    command: Vec<String>,
    exe: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Instance {
    /// An instance of `exe` running `args` on `port`, logging to `log` (appended to
    /// across restarts); not started yet.
    pub fn new(exe: &Path, args: Vec<String>, port: u16, log: PathBuf) -> Instance {
        Instance {
            port,
            command: args,
            exe: exe.to_path_buf(),
            log,
            child: None,
        }
    }

    /// Starts the process and waits until it answers `/healthz`.
    pub async fn start(&mut self, client: &reqwest::Client) -> Result<(), String> {
        let log = self.open_log()?;
        let err_log = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.exe)
            .args(&self.command)
            .args(["--port", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.exe.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let url = format!("http://127.0.0.1:{}/healthz", self.port);
        loop {
            if let Some(status) = self.try_wait()? {
                return Err(format!(
                    "the server on port {} exited at start ({status}):\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            let up = client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the server on port {} did not answer within {}s:\n{}",
                    self.port,
                    START_TIMEOUT.as_secs(),
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the process with `signal` and waits until it is gone (a SIGTERM drain that
    /// takes longer than [`STOP_TIMEOUT`] is ended with SIGKILL).
    pub async fn stop(&mut self, signal: Signal) -> Result<(), String> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        match signal {
            Signal::Kill => {
                let _ = child.kill();
            }
            Signal::Term => {
                // std has no SIGTERM; `kill` is on every Unix.
                let sent = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status()
                    .map_err(|e| format!("cannot run kill: {e}"))?;
                if !sent.success() {
                    return Err(format!("kill -TERM {} failed", child.id()));
                }
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.kill_now();
                return Err(format!(
                    "the server on port {} did not stop within {}s of {}",
                    self.port,
                    STOP_TIMEOUT.as_secs(),
                    signal.name()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child = None;
        Ok(())
    }

    /// The last lines of this instance's log (to say why it failed).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>, String> {
        match self.child.as_mut() {
            Some(child) => child.try_wait().map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn open_log(&self) -> Result<File, String> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("cannot open {}: {e}", self.log.display()))
    }
}

impl Drop for Instance {
    /// No child outlives the tool, whatever ended the run.
    fn drop(&mut self) {
        self.kill_now();
    }
}
