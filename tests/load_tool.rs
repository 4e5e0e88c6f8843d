//! The load tool keeps working: a small bounded run completes and reports its figures.

use std::process::Command;

#[test]
fn a_small_load_run_delivers_every_reply() {
    let out = Command::new(env!("CARGO_BIN_EXE_parlance-load"))
        .args([
            "--users",
            "5",
            "--messages",
            "4",
            "--concurrency",
            "4",
            "--timeout",
            "30",
        ])
        .output()
        .expect("parlance-load runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("webhooks accepted: 20 in "), "{text}");
    assert!(
        text.contains("all 20 replies delivered to the fake Graph API"),
        "{text}"
    );
}
