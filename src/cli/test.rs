//! `parlance test [DIR]`: run the bot's conversation tests. Validates the bot and the
//! test files first; prints one line per test, the failures with the step's position,
//! and a closing `N passed, N failed` line.

use super::{EXIT_ERRORS, EXIT_OK, load_runnable};
use crate::compile::load_tests;
use crate::testing;
use std::path::Path;

pub fn run(dir: &Path) -> u8 {
    let bot = match load_runnable(dir) {
        Ok(bot) => bot,
        Err(code) => return code,
    };
    let tests = load_tests(dir);
    let broken = tests.diagnostics.iter().any(|d| d.is_error());
    for d in &tests.diagnostics {
        eprintln!("{d}");
    }
    if broken {
        return EXIT_ERRORS;
    }
    if tests.files.is_empty() {
        println!("no conversation tests in {}", dir.join("tests").display());
        println!("0 passed, 0 failed");
        return EXIT_OK;
    }
    let env = super::chat::exposed_env(&bot);
    let (mut passed, mut failed) = (0, 0);
    for (file, test) in &tests.files {
        let report = testing::run(&bot, file, test, env.clone());
        match &report.failure {
            None => {
                passed += 1;
                println!("ok   {} ({})", report.name, report.file.display());
            }
            Some(f) => {
                failed += 1;
                println!("FAIL {} ({})", report.name, report.file.display());
                for line in f.to_string().lines() {
                    println!("     {line}");
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 { EXIT_OK } else { EXIT_ERRORS }
}
