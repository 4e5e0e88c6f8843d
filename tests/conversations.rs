//! `parlance test` and `parlance chat` as a user runs them: the real binary on the demo
//! bot and the examples, exact output.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn parlance(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_parlance"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the parlance binary runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("parlance finishes")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn every_bot_passes_its_conversation_tests() {
    let mut bots = vec![".".to_string()];
    for e in std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .flatten()
    {
        if e.path().join("tests").is_dir() {
            bots.push(format!("examples/{}", e.file_name().to_string_lossy()));
        }
    }
    for bot in bots {
        let out = parlance(&["test", &bot], "");
        let text = stdout(&out);
        let last = text.lines().last().unwrap_or_default().to_string();
        assert!(last.ends_with(" passed, 0 failed"), "{bot}:\n{text}");
        let passed: usize = last
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(
            passed >= 3,
            "{bot} has at least 3 conversation tests:\n{text}"
        );
        assert_eq!(out.status.code(), Some(0), "{bot}:\n{text}");
    }
}

#[test]
fn a_broken_expectation_fails_and_points_at_its_step() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["flows", "tests"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for e in std::fs::read_dir(root().join(sub)).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "yaml") {
                std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).unwrap();
            }
        }
    }
    std::fs::copy(
        root().join("parlance.yaml"),
        dir.path().join("parlance.yaml"),
    )
    .unwrap();
    let menu = std::fs::read_to_string(dir.path().join("tests/menu.yaml")).unwrap();
    let broken = menu.replace("hello@example.com.", "help@example.com.");
    assert_ne!(menu, broken);
    std::fs::write(dir.path().join("tests/menu.yaml"), &broken).unwrap();
    let line = broken
        .lines()
        .position(|l| l.contains("help@example.com"))
        .unwrap()
        + 1;

    let d = dir.path().to_string_lossy().into_owned();
    let out = parlance(&["test", &d], "");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "FAIL greets by name and shows the contact details ({d}/tests/menu.yaml)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{d}/tests/menu.yaml:{line}:5: step 5: expected the text \"You can reach the team at help@example.com.\""
        )),
        "{text}"
    );
    assert!(text.contains("received from main.contact (say):"), "{text}");
    assert!(
        text.contains("You can reach the team at hello@example.com."),
        "{text}"
    );
    assert!(text.ends_with("2 passed, 1 failed\n"), "{text}");
}

#[test]
fn chat_shows_the_conversation_as_a_user_reads_it() {
    let out = parlance(&["chat", "examples/pizza"], "hi\n1\n");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "you: hi
bot: Hi there 👋 Welcome to *Pronto Pizza*!
bot: *Pronto Pizza 🍕*
     What would you like today? Tap *See pizzas* to choose.
     _Small €7.50 · Medium €9.50 · Large €12.50_
     ☰ See pizzas
       Classics
       [1] Margherita — Tomato, mozzarella, fresh basil
       [2] Marinara — Tomato, garlic, oregano, olive oil (vegan)
       [3] Funghi — Tomato, mozzarella, mushrooms
       [4] Prosciutto — Tomato, mozzarella, cooked ham
       Specials
       [5] Diavola — Spicy salami, chili, mozzarella 🌶️
       [6] Capricciosa — Ham, mushrooms, artichokes, olives
       [7] Quattro Formaggi — Mozzarella, gorgonzola, parmesan, fontina
       [8] Vegana — Grilled vegetables, vegan cheese
you: 1
bot: One Margherita, coming up! Which size?
     [1] Small · €7.50  [2] Medium · €9.50  [3] Large · €12.50
"
    );
}

#[test]
fn chat_json_prints_exact_payloads_and_commands_work() {
    let out = parlance(
        &["chat", "--json", "--user", "4915112345678", "."],
        "hi\n3\n",
    );
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON payload per line"))
        .collect();
    assert_eq!(lines.len(), 3, "buttons, then the two contact texts");
    assert_eq!(lines[0]["to"], "4915112345678");
    assert_eq!(
        lines[0]["interactive"]["action"]["buttons"][2]["reply"]["id"],
        "contact"
    );
    assert_eq!(
        lines[1],
        serde_json::json!({
            "messaging_product": "whatsapp", "recipient_type": "individual", "to": "4915112345678",
            "type": "text", "text": { "preview_url": false, "body": "You can reach the team at hello@example.com." }
        })
    );

    let out = parlance(
        &["chat", "."],
        "hi\n/trace\n/location 52.52 13.40\n/vars\n/nope\n/reset\n/quit\nnever read\n",
    );
    let text = stdout(&out);
    assert!(
        text.contains("you: /trace\n  main.welcome (buttons) flows/main.yaml:7:3\n"),
        "{text}"
    );
    assert!(text.contains("you: /location 52.52 13.40"), "{text}");
    assert!(
        text.contains("(unknown command /nope; /help for commands)"),
        "{text}"
    );
    assert!(text.contains("(new conversation)"), "{text}");
    assert!(!text.contains("never read"), "{text}");
}

#[test]
fn a_bot_with_errors_does_not_run() {
    let out = parlance(&["test", "fixtures/invalid/unknown_node"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error[unknown_node]"));
    let out = parlance(&["chat", "fixtures/invalid/unknown_node"], "hi\n");
    assert_eq!(out.status.code(), Some(1));
}

/// A bot that echoes what the user writes, with `config` as its parlance.yaml, and a
/// conversation test that sends it 100,000 characters and expects `expect` back.
fn echo_bot(config: &str, expect: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["flows", "tests"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    std::fs::write(
        dir.path().join("flows/main.yaml"),
        "nodes:\n  back:\n    say: \"{{ message.text }}\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("flows/sorry.yaml"),
        "nodes:\n  sorry:\n    say: \"Sorry, that went wrong.\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("parlance.yaml"),
        format!("bot: {{ entry: main, fallback: sorry }}\n{config}"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tests/echo.yaml"),
        format!(
            "name: a long echo\nsteps:\n  - user: \"{}\"\n  - bot: \"{expect}\"\n",
            "x".repeat(100_000)
        ),
    )
    .unwrap();
    dir
}

#[test]
fn parlance_test_fails_an_over_long_echo_with_the_reason() {
    let dir = echo_bot("", "Sorry, that went wrong.");
    let d = dir.path().to_string_lossy().into_owned();
    let out = parlance(&["test", &d], "");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "{d}/tests/echo.yaml:3:5: step 1: the bot stopped with an error: flows/main.yaml:2:3: main.back: the text is 100000 characters after rendering; WhatsApp allows at most 4096 (set render.overflow: truncate to shorten it instead); the fallback flow takes over"
        )),
        "{text}"
    );
}

#[test]
fn parlance_test_passes_an_over_long_echo_shortened_with_overflow_truncate() {
    let shortened = format!("{}…", "x".repeat(4095));
    let dir = echo_bot("render: { overflow: truncate }\n", &shortened);
    let d = dir.path().to_string_lossy().into_owned();
    let out = parlance(&["test", &d], "");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.ends_with("1 passed, 0 failed\n"), "{text}");
}

#[test]
fn chat_answers_an_over_long_echo_with_the_fallback_and_says_why() {
    let dir = echo_bot("", "");
    let d = dir.path().to_string_lossy().into_owned();
    let out = parlance(&["chat", &d], &format!("{}\n", "x".repeat(100_000)));
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.ends_with(
            "x\nbot: Sorry, that went wrong.\n     — conversation ended; your next message starts a new one —\n"
        ),
        "{}",
        text.chars().skip(99_900).collect::<String>()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: flows/main.yaml:2:3: main.back: the text is 100000 characters after rendering; WhatsApp allows at most 4096 (set render.overflow: truncate to shorten it instead); the fallback flow takes over\n"
    );
}

/// A bot whose only message's `on_error` (taken when WhatsApp reports it `failed`)
/// apologises, with `extra` added to that node (e.g. its `on_window_closed`), and
/// `test` as its one conversation test.
fn failed_status_bot(extra: &str, test: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["flows", "tests"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    std::fs::write(
        dir.path().join("flows/main.yaml"),
        format!(
            "nodes:
  shipped:
    say: \"Your order is on its way.\"
    on_error: not_delivered
    next: end
  not_delivered:
    say: \"We could not reach you, {{{{ contact.name }}}} ({{{{ message.error.code }}}}: {{{{ message.error.reason }}}}).\"
{extra}    next: end
"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("flows/sorry.yaml"),
        "nodes:\n  sorry:\n    say: \"Sorry, that went wrong.\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("parlance.yaml"),
        "bot: { entry: main, fallback: sorry }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("tests/failed.yaml"), test).unwrap();
    dir
}

const WE_MISS_YOU: &str = "    on_window_closed: { name: we_miss_you, language: en_US, body: [\"{{ contact.name }}\"] }\n";

#[test]
fn a_failed_status_after_the_window_closed_sends_the_on_window_closed_template() {
    let dir = failed_status_bot(
        WE_MISS_YOU,
        "name: the apology after 25 hours is a template
contact: { name: Ada }
steps:
  - user: hi
  - bot: \"Your order is on its way.\"
  - advance: 25h
  - status: { failed: 131026 }
  - bot:
      template:
        name: we_miss_you
        payload:
          template:
            language: { code: en_US }
            components: [{ type: body, parameters: [{ type: text, text: Ada }] }]
",
    );
    let d = dir.path().to_string_lossy().into_owned();
    let out = parlance(&["test", &d], "");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.ends_with("1 passed, 0 failed\n"), "{text}");

    // Inside the window the same status gets the free text, with Meta's code and title.
    let dir = failed_status_bot(
        WE_MISS_YOU,
        "name: the apology within the window is free text
contact: { name: Ada }
steps:
  - user: hi
  - bot: \"Your order is on its way.\"
  - advance: 5m
  - status: { failed: { code: 131049, reason: Not delivered, node: main.shipped } }
  - bot: \"We could not reach you, Ada (131049: Not delivered).\"
",
    );
    let d = dir.path().to_string_lossy().into_owned();
    let out = parlance(&["test", &d], "");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.ends_with("1 passed, 0 failed\n"), "{text}");
}

#[test]
fn a_failed_status_after_the_window_closed_without_a_template_fails_the_step() {
    let dir = failed_status_bot(
        "",
        "name: the apology after 25 hours has no template
steps:
  - user: hi
  - bot: \"Your order is on its way.\"
  - advance: 25h
  - status: { failed: 131026 }
",
    );
    let d = dir.path().to_string_lossy().into_owned();
    let out = parlance(&["test", &d], "");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "{d}/tests/failed.yaml:6:5: step 4: the bot stopped with an error: flows/main.yaml:6:3: main.not_delivered: the user's 24-hour window is closed and the node has no on_window_closed template; nothing was sent; the fallback flow takes over\n"
        )),
        "{text}"
    );
}

#[test]
fn a_failed_status_needs_a_message_the_bot_sent() {
    let dir = failed_status_bot(
        WE_MISS_YOU,
        "name: nothing was sent yet
steps:
  - advance: 1m
  - status: { failed: 131026 }
",
    );
    let d = dir.path().to_string_lossy().into_owned();
    let out = parlance(&["test", &d], "");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "{d}/tests/failed.yaml:4:5: step 2: a `failed` status reports on the bot's last message, but the bot has sent nothing yet in this test\n"
        )),
        "{text}"
    );

    let dir = failed_status_bot(
        WE_MISS_YOU,
        "name: the named node sent nothing
steps:
  - user: hi
  - bot: \"Your order is on its way.\"
  - status: { failed: { code: 131026, node: main.not_delivered } }
",
    );
    let d = dir.path().to_string_lossy().into_owned();
    let out = parlance(&["test", &d], "");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "{d}/tests/failed.yaml:5:5: step 3: a `failed` status names main.not_delivered, but that node has sent no message yet in this test (messages came from main.shipped)\n"
        )),
        "{text}"
    );
}

/// `chat` runs the transformers as `serve` does: a dropped message is said so (and the
/// buttons before it can still be tapped), changed payloads are shown as sent.
#[test]
fn chat_runs_the_transformers() {
    let out = parlance(
        &["chat", "examples/concierge"],
        "  HI \n👍\n2\n  The   AIRPORT\n",
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "you:   HI 
bot: Hello there! How may I help?
     _Hotel Aurora_
     [1] Breakfast hours
     [2] Book a taxi
you: 👍
     (the input transformer dropped this message)
you: 2
bot: Where would you like to go?
     
     — Hotel Aurora concierge
you:   The   AIRPORT
bot: A taxi to the airport will wait at the entrance in 15 minutes.
     
     — Hotel Aurora concierge
     — conversation ended; your next message starts a new one —
"
    );
}

/// A transformer that fails in `parlance test` fails the step, naming the file and
/// position: `serve` would go on without it, and the designer should know first.
#[test]
fn a_failing_transformer_fails_the_test_step() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (rel, content) in [
        ("flows/main.yaml", "nodes:\n  hi:\n    say: \"Hi\"\n"),
        (
            "parlance.yaml",
            "transformers:\n  output: transformers/output.rhai\n",
        ),
        (
            "transformers/output.rhai",
            "fn output(payload) {\n  payload.text.body += 1 / 0;\n  payload\n}\n",
        ),
        (
            "tests/hi.yaml",
            "name: hi\nsteps:\n  - user: hi\n  - bot: Hi\n",
        ),
    ] {
        std::fs::create_dir_all(d.join(rel).parent().unwrap()).unwrap();
        std::fs::write(d.join(rel), content).unwrap();
    }
    let out = parlance(&["test", &d.to_string_lossy()], "");
    let text = stdout(&out).replace(&*d.to_string_lossy(), "BOT");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL hi (BOT/tests/hi.yaml)"), "{text}");
    assert!(
        text.contains("step 1: transformers/output.rhai:2:"),
        "{text}"
    );
    assert!(
        text.contains("output transformer error: division by zero"),
        "{text}"
    );
}
