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

/// The turn every ```rhai example of docs/scripts.md runs against (the page says so).
struct ExampleTurn {
    vars: serde_json::Map<String, serde_json::Value>,
    profile: serde_json::Map<String, serde_json::Value>,
    message: serde_json::Value,
    contact: serde_json::Value,
    session: serde_json::Value,
    env: serde_json::Map<String, serde_json::Value>,
}

fn script_example_turn() -> ExampleTurn {
    let obj = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
    ExampleTurn {
        vars: obj(serde_json::json!({ "qty": 3, "size": "medium", "pizza": "quattro_formaggi" })),
        profile: obj(serde_json::json!({ "lang": "en" })),
        message: serde_json::json!({ "id": "wamid.1", "type": "text", "text": "order 2 margherita, ref AB-1234", "timestamp": "2026-01-05T09:00:00Z" }),
        contact: serde_json::json!({ "wa_id": "15550001111", "name": "Ada" }),
        session: serde_json::json!({ "id": "s1", "started_at": "2026-01-05T09:00:00Z", "window_open": true, "turn": 1, "flow": "main", "node": "script" }),
        env: obj(serde_json::json!({ "SHOP_URL": "https://shop.example" })),
    }
}

/// `vars.NAME = …;  // VALUE` lines of an example: NAME must end up as VALUE.
fn expectations(code: &str) -> Vec<(String, serde_json::Value)> {
    code.lines()
        .filter_map(|line| {
            let (statement, comment) = line.split_once("//")?;
            let name = statement.trim().strip_prefix("vars.")?;
            let name = name
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()?;
            let value = serde_json::from_str(comment.trim()).ok()?;
            Some((name.to_string(), value))
        })
        .collect()
}

#[test]
fn every_script_example_runs_and_gives_what_it_says() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/scripts.md"))
            .unwrap();
    let sandbox = parlance::script::Sandbox::default();
    let turn = script_example_turn();
    let mut lines = doc.lines().enumerate();
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut values_checked = 0;
    while let Some((i, line)) = lines.next() {
        if line.trim() != "```rhai" {
            continue;
        }
        let code: String = lines
            .by_ref()
            .map(|(_, l)| l)
            .take_while(|l| l.trim() != "```")
            .collect::<Vec<_>>()
            .join("\n");
        checked += 1;
        let input = parlance::script::Input {
            vars: &turn.vars,
            profile: &turn.profile,
            message: &turn.message,
            contact: &turn.contact,
            session: &turn.session,
            env: &turn.env,
            now: 1_767_603_600,
        };
        let outcome = sandbox
            .compile(&code)
            .and_then(|program| sandbox.run(&program, input, true));
        match outcome {
            Err(e) => failures.push(format!("docs/scripts.md:{}: {e:?}", i + 1)),
            Ok(out) => {
                for (name, want) in expectations(&code) {
                    values_checked += 1;
                    let got = out
                        .vars
                        .get(&name)
                        .cloned()
                        .unwrap_or(serde_json::Value::Null);
                    if got != want {
                        failures.push(format!(
                            "docs/scripts.md:{}: vars.{name} is {got}, the page says {want}",
                            i + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(checked >= 5, "found only {checked} rhai examples");
    assert!(values_checked >= 30, "checked only {values_checked} values");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The transformer examples of docs/scripts.md ("Endpoint transformers") compile as
/// transformers and run on the example turn without an error.
#[test]
fn every_transformer_example_runs() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/scripts.md"))
            .unwrap();
    let sandbox = parlance::script::Sandbox::default();
    let turn = script_example_turn();
    let payload = serde_json::json!({
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": "15550001111",
        "type": "text", "text": { "body": "Hello" },
    });
    let mut blocks = doc.split("```rhai\n").skip(1);
    let mut checked = Vec::new();
    for block in blocks.by_ref() {
        let code = block.split("\n```").next().unwrap_or_default();
        let (name, arg) = if code.contains("fn input(") {
            ("input", turn.message.clone())
        } else if code.contains("fn output(") {
            ("output", payload.clone())
        } else if code.contains("fn finished(") {
            (
                "finished",
                serde_json::json!({ "message": turn.message, "sent": [payload] }),
            )
        } else {
            continue;
        };
        let program = sandbox
            .compile_transformer(code, name)
            .unwrap_or_else(|e| panic!("the {name} example does not compile: {e:?}"))
            .unwrap_or_else(|| panic!("the {name} example does not define fn {name}"));
        let input = parlance::script::Input {
            vars: &turn.vars,
            profile: &turn.profile,
            message: &turn.message,
            contact: &turn.contact,
            session: &turn.session,
            env: &turn.env,
            now: 1_767_603_600,
        };
        let (returned, _) = sandbox
            .call(&program, input, &arg)
            .unwrap_or_else(|e| panic!("the {name} example fails: {e:?}"));
        if name != "finished" {
            assert!(returned.is_map(), "the {name} example returns {returned:?}");
        }
        checked.push(name);
    }
    assert_eq!(checked, ["input", "output", "finished"]);
}
