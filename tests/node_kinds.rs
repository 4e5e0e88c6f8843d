//! Every node kind the schema documents compiles into the node kind of the same name,
//! so a kind added to the language cannot be half wired.

use parlance::compile::load_bot_allowing;
use parlance::diag::Code;
use parlance::spec::flow::NODE_KINDS;

/// A minimal valid body for each kind, as a designer would write it.
fn sample(kind: &str) -> &'static str {
    match kind {
        "say" => r#""Hello""#,
        "image" | "video" | "audio" | "document" | "sticker" => r#""https://example.com/file""#,
        "buttons" => "{ body: Pick, buttons: [{ id: a, title: A }] }",
        "list" => "{ body: Pick, button: Open, sections: [{ rows: [{ id: a, title: A }] }] }",
        "ask" => r#"{ text: "Your name?" }"#,
        "template" => "{ name: order_update, language: en_US }",
        "location" => "{ latitude: 52.5, longitude: 13.4 }",
        "request_location" => r#""Where are you?""#,
        "contacts" => "[{ name: { formatted_name: Ada } }]",
        "cta_url" => r#"{ body: Docs, button: Open, url: "https://example.com" }"#,
        "whatsapp_flow" => r#"{ body: Form, cta: Open, flow_id: "123" }"#,
        "react" => r#""👍""#,
        "payload" => "{ type: text, text: { body: Hi } }",
        "set" => "{ n: 1 }",
        "http" => r#"{ url: "https://example.com" }"#,
        "script" => r#""vars.n = 1 + 1;""#,
        "handover" => "",
        "wait" => "2s",
        "call" => "{ flow: other }",
        "end" => "",
        other => panic!("no sample for the node kind {other}: add one here"),
    }
}

#[test]
fn every_documented_kind_compiles_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("flows")).unwrap();
    let mut flow = String::from("nodes:\n");
    for kind in NODE_KINDS {
        flow.push_str(&format!("  node_{kind}:\n    {kind}: {}\n", sample(kind)));
    }
    std::fs::write(dir.path().join("flows/main.yaml"), flow).unwrap();
    std::fs::write(
        dir.path().join("flows/other.yaml"),
        "nodes:\n  hi:\n    say: Hi\n",
    )
    .unwrap();
    // handover compiles completely, but this build refuses to run it.
    let loaded = load_bot_allowing(dir.path(), &|_| None, &[Code::NotSupported]);
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| format!("{}: {}", d.code, d.path))
        .collect();
    assert_eq!(errors, ["not_supported: nodes.node_handover.handover"]);
    let bot = loaded.bot.expect("a bot");
    let main = &bot.flows[bot.flow_by_id("main").unwrap().0 as usize];
    let compiled: Vec<&str> = main.nodes.iter().map(|n| n.kind.name()).collect();
    assert_eq!(compiled, NODE_KINDS);
}
