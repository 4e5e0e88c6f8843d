//! The documentation's YAML examples are real: every block that starts with a
//! `# yaml-language-server: $schema=...` line is loaded as the file it claims to be and
//! must produce no diagnostic. And every diagnostic code is documented.

use parlance::compile::{load_bot_with_env, load_tests};
use parlance::diag::Code;
use std::path::Path;

const MINIMAL_FLOW: &str = "nodes:\n  hello:\n    say: \"Hello\"\n";

fn no_env(_: &str) -> Option<String> {
    None
}

/// (file, line, schema name, block text) of every complete example in a Markdown file.
fn examples(markdown: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        if line.trim() != "```yaml" {
            continue;
        }
        let block: Vec<&str> = lines
            .by_ref()
            .map(|(_, l)| l)
            .take_while(|l| l.trim() != "```")
            .collect();
        if let Some(first) = block.first()
            && let Some(schema) = first.split("$schema=").nth(1)
        {
            let name = schema.rsplit('/').next().unwrap_or_default().to_string();
            out.push((i + 1, name, block.join("\n") + "\n"));
        }
    }
    out
}

fn check_example(schema: &str, text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("flows")).unwrap();
    std::fs::create_dir_all(d.join("tests")).unwrap();
    match schema {
        "flow.schema.json" => std::fs::write(d.join("flows/main.yaml"), text).unwrap(),
        "config.schema.json" => {
            std::fs::write(d.join("parlance.yaml"), text).unwrap();
            std::fs::write(d.join("flows/main.yaml"), MINIMAL_FLOW).unwrap();
            std::fs::write(d.join("flows/fallback.yaml"), MINIMAL_FLOW).unwrap();
        }
        "test.schema.json" => {
            std::fs::write(d.join("tests/example.yaml"), text).unwrap();
            std::fs::write(d.join("flows/main.yaml"), MINIMAL_FLOW).unwrap();
        }
        other => return vec![format!("unknown schema {other}")],
    }
    let mut diags = load_bot_with_env(d, &no_env).diagnostics;
    diags.extend(load_tests(d).diagnostics);
    diags.iter().map(ToString::to_string).collect()
}

#[test]
fn documented_examples_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "md") {
            docs.push(e.path());
        }
    }
    let mut checked = 0;
    let mut failures = Vec::new();
    for doc in docs {
        let markdown = std::fs::read_to_string(&doc).unwrap();
        for (line, schema, text) in examples(&markdown) {
            checked += 1;
            for problem in check_example(&schema, &text) {
                failures.push(format!("{}:{line}: {problem}", doc.display()));
            }
        }
    }
    assert!(checked >= 4, "found only {checked} examples");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_diagnostic_code_is_documented() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/diagnostics.md"))
            .unwrap();
    for code in Code::ALL {
        let heading = format!("### `{}`", code.as_str());
        assert!(
            doc.contains(&heading),
            "docs/diagnostics.md has no section {heading}"
        );
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/invalid")
            .join(code.as_str())
            .join("expected.txt");
        if let Ok(expected) = std::fs::read_to_string(fixture) {
            for line in expected.lines() {
                assert!(
                    doc.contains(line),
                    "docs/diagnostics.md shows stale output for {}: {line}",
                    code.as_str()
                );
            }
        }
    }
}
