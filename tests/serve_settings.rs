//! Serve-time settings are checked when a bot loads, so `validate` and `serve` agree:
//! WhatsApp credentials come whole (with an app secret and a verify token), `${NAME}`
//! values keep their text, and the session store is one this build can open.

use parlance::compile::load_bot_with_env;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// A bot folder with this `parlance.yaml` and a one-node flow.
fn bot(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("flows")).unwrap();
    std::fs::write(dir.path().join("parlance.yaml"), config).unwrap();
    std::fs::write(
        dir.path().join("flows/main.yaml"),
        "nodes:\n  hi:\n    say: \"hello\"\n",
    )
    .unwrap();
    dir
}

/// The diagnostics of loading `dir` with `env`, one line each, paths made relative.
fn diagnostics(dir: &Path, env: &[(&str, &str)]) -> Vec<String> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let loaded = load_bot_with_env(dir, &|name| env.get(name).cloned());
    let prefix = format!("{}/", dir.display());
    loaded
        .diagnostics
        .iter()
        .map(|d| d.to_string().replace(&prefix, ""))
        .collect()
}

const README_CONFIG: &str = "whatsapp:
  access_token: ${WA_ACCESS_TOKEN}
  phone_number_id: ${WA_PHONE_NUMBER_ID}
  verify_token: ${WA_VERIFY_TOKEN}
  app_secret: ${WA_APP_SECRET}
  message_delay_ms: ${DELAY:-500}
  mark_as_read: ${READ:-true}
";

#[test]
fn interpolated_values_are_text_where_the_schema_wants_text() {
    let dir = bot(README_CONFIG);
    let env = [
        ("WA_ACCESS_TOKEN", "EAAG123"),
        ("WA_PHONE_NUMBER_ID", "106540352242922"),
        ("WA_VERIFY_TOKEN", "true"),
        ("WA_APP_SECRET", "1234567890"),
    ];
    assert_eq!(diagnostics(dir.path(), &env), Vec::<String>::new());
    let env: HashMap<&str, &str> = env.into_iter().collect();
    let bot = load_bot_with_env(dir.path(), &|n| env.get(n).map(|v| v.to_string()))
        .bot
        .expect("the bot loads");
    let wa = &bot.settings.whatsapp;
    assert_eq!(wa.phone_number_id.as_deref(), Some("106540352242922"));
    assert_eq!(wa.app_secret.as_deref(), Some("1234567890"));
    assert_eq!(wa.verify_token.as_deref(), Some("true"));
    // Where the schema wants a number or a boolean, `${NAME:-default}` still gives one.
    assert_eq!(wa.message_delay.as_millis(), 500);
    assert!(wa.mark_as_read);

    // Values that look like other YAML types stay text too.
    for id in ["1e5", "null", "0x1F", "12.50", "~"] {
        let env: HashMap<&str, &str> = [
            ("WA_ACCESS_TOKEN", "t"),
            ("WA_PHONE_NUMBER_ID", id),
            ("WA_VERIFY_TOKEN", "v"),
            ("WA_APP_SECRET", "s"),
        ]
        .into_iter()
        .collect();
        let loaded = load_bot_with_env(dir.path(), &|n| env.get(n).map(|v| v.to_string()));
        let bot = loaded
            .bot
            .unwrap_or_else(|| panic!("{id}: {:?}", loaded.diagnostics));
        assert_eq!(bot.settings.whatsapp.phone_number_id.as_deref(), Some(id));
    }
}

#[test]
fn an_alias_of_an_interpolated_value_is_typed_like_it() {
    let dir = bot(
        "whatsapp:\n  app_id: &id ${ID}\n  verify_token: *id\n  message_delay_ms: &d ${D}\n  max_messages_per_second: *d\n",
    );
    let env: HashMap<&str, &str> = [("ID", "1001"), ("D", "20")].into_iter().collect();
    let loaded = load_bot_with_env(dir.path(), &|n| env.get(n).map(|v| v.to_string()));
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let bot = loaded.bot.unwrap();
    assert_eq!(bot.settings.whatsapp.verify_token.as_deref(), Some("1001"));
    assert_eq!(bot.settings.whatsapp.max_messages_per_second, 20);
}

#[test]
fn a_number_where_a_number_is_wanted_is_still_checked() {
    let dir = bot("whatsapp:\n  message_delay_ms: ${DELAY}\n");
    assert_eq!(
        diagnostics(dir.path(), &[("DELAY", "soon")]),
        [
            "parlance.yaml:2:21: error[wrong_type] whatsapp.message_delay_ms: expected a whole number, found text"
        ]
    );
}

/// `parlance validate` on the demo bot (the repository root) with these variables.
fn validate_demo(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_parlance"));
    cmd.arg("validate").current_dir(env!("CARGO_MANIFEST_DIR"));
    for name in [
        "WA_APP_ID",
        "WA_ACCESS_TOKEN",
        "WA_PHONE_NUMBER_ID",
        "WA_APP_SECRET",
        "WA_VERIFY_TOKEN",
    ] {
        cmd.env_remove(name);
    }
    let out = cmd.envs(env.iter().copied()).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_readme_steps_validate_with_an_all_digit_id_and_secret() {
    let (code, said) = validate_demo(&[
        ("WA_APP_ID", "1234567890123456"),
        ("WA_ACCESS_TOKEN", "EAAG123"),
        ("WA_PHONE_NUMBER_ID", "106540352242922"),
        ("WA_APP_SECRET", "9876543210"),
        ("WA_VERIFY_TOKEN", "pick-a-secret"),
    ]);
    assert_eq!((code, said.as_str()), (Some(0), ""));
    // Only half of the steps done: the missing keys are named.
    let (code, said) = validate_demo(&[("WA_ACCESS_TOKEN", "EAAG123")]);
    assert_eq!(code, Some(1));
    assert!(
        said.starts_with(
            "parlance.yaml:5:1: error[missing_field] whatsapp: `phone_number_id` is missing"
        ),
        "{said}"
    );
}

#[test]
fn a_token_without_an_app_secret_is_a_load_error_unless_unsigned_is_allowed() {
    let config = "whatsapp:\n  access_token: t\n  phone_number_id: \"1001\"\n  verify_token: v\n";
    assert_eq!(
        diagnostics(bot(config).path(), &[]),
        [
            "parlance.yaml:1:1: error[missing_field] whatsapp: `app_secret` is missing: a number that can send must check webhook signatures, or anyone who reaches the server makes it send messages; hint: set app_secret: ${WA_APP_SECRET} (Meta app dashboard: App settings, Basic); for a test setup only, allow_unsigned: true"
        ]
    );
    let allowed = format!("{config}  allow_unsigned: true\n");
    assert_eq!(diagnostics(bot(&allowed).path(), &[]), Vec::<String>::new());
}

#[test]
fn half_configured_credentials_are_load_errors() {
    assert_eq!(
        diagnostics(
            bot("whatsapp:\n  access_token: t\n  app_secret: s\n  verify_token: v\n").path(),
            &[]
        ),
        [
            "parlance.yaml:1:1: error[missing_field] whatsapp: `phone_number_id` is missing: access_token is set, and sending needs the id of the number to send from; hint: set phone_number_id (WhatsApp Manager: API setup, \"Phone number ID\"), e.g. ${WA_PHONE_NUMBER_ID}; or remove access_token to run locally"
        ]
    );
    assert_eq!(
        diagnostics(bot("whatsapp:\n  phone_number_id: \"1001\"\n").path(), &[]),
        [
            "parlance.yaml:1:1: error[missing_field] whatsapp: `access_token` is missing: phone_number_id is set, but without a token nothing can be sent; hint: set access_token, e.g. ${WA_ACCESS_TOKEN}; or remove phone_number_id to run locally"
        ]
    );
    assert_eq!(
        diagnostics(
            bot("whatsapp:\n  access_token: t\n  phone_number_id: \"1001\"\n  app_secret: s\n")
                .path(),
            &[]
        ),
        [
            "parlance.yaml:1:1: error[missing_field] whatsapp: `verify_token` is missing: Meta cannot verify the webhook's callback URL without it; hint: set verify_token: ${WA_VERIFY_TOKEN} and enter the same text as \"Verify token\" in Meta's app dashboard"
        ]
    );
}

#[test]
fn an_empty_variable_is_an_error_naming_the_key_but_an_empty_default_is_local_mode() {
    let dir = bot(README_CONFIG);
    let env = [
        ("WA_ACCESS_TOKEN", ""),
        ("WA_PHONE_NUMBER_ID", "1001"),
        ("WA_VERIFY_TOKEN", "v"),
        ("WA_APP_SECRET", "s"),
    ];
    assert_eq!(
        diagnostics(dir.path(), &env),
        [
            "parlance.yaml:2:17: error[env_missing] whatsapp.access_token: environment variable WA_ACCESS_TOKEN is set but empty; hint: give WA_ACCESS_TOKEN a value, or write ${WA_ACCESS_TOKEN:-} where an empty value is meant"
        ]
    );
    // The examples' way of saying "local unless configured" keeps working.
    let local =
        bot("whatsapp:\n  access_token: ${T:-}\n  phone_number_id: ${P:-}\n  app_secret: ${S:-}\n");
    let loaded = load_bot_with_env(local.path(), &|_| None);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    assert!(loaded.bot.unwrap().settings.whatsapp.is_local());
}

#[test]
fn the_session_store_is_one_this_build_can_open() {
    let cases = [
        (
            "redis://",
            "parlance.yaml:1:19: error[invalid_value] session.store: the Redis URL is not usable: it names no host; hint: e.g. redis://127.0.0.1:6379/0 or redis://127.0.0.1:6379/0?prefix=shop:",
        ),
        (
            "redis://127.0.0.1:6379/0?db=2",
            "parlance.yaml:1:19: error[invalid_value] session.store: the Redis URL is not usable: unknown parameter \"db=2\" (only prefix=NAME is known); hint: e.g. redis://127.0.0.1:6379/0 or redis://127.0.0.1:6379/0?prefix=shop:",
        ),
        (
            "postgres://db/bot",
            "parlance.yaml:1:19: error[invalid_value] session.store: unknown session store \"postgres://\"; hint: sqlite://data/parlance.db for one instance, redis://host:6379/0 for several (memory:// keeps nothing across restarts)",
        ),
        (
            "data/bot.db",
            "parlance.yaml:1:19: error[invalid_value] session.store: \"data/bot.db\" is not a store URL; hint: sqlite://data/parlance.db for one instance, redis://host:6379/0 for several (memory:// keeps nothing across restarts)",
        ),
        (
            "sqlite://",
            "parlance.yaml:1:19: error[invalid_value] session.store: \"sqlite://\" names no database file; hint: write the file after sqlite://, e.g. sqlite://data/parlance.db",
        ),
    ];
    for (url, want) in cases {
        let dir = bot(&format!("session: {{ store: \"{url}\" }}\n"));
        assert_eq!(diagnostics(dir.path(), &[]), [want], "{url}");
        // `validate` says so, and `serve` refuses it with the same words before listening.
        let validate = Command::new(env!("CARGO_BIN_EXE_parlance"))
            .arg("validate")
            .arg(dir.path())
            .output()
            .unwrap();
        assert_eq!(validate.status.code(), Some(1), "{url}");
        let serve = Command::new(env!("CARGO_BIN_EXE_parlance"))
            .args(["serve", "--port", "0"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert_eq!(serve.status.code(), Some(1), "{url}");
        let said = String::from_utf8_lossy(&serve.stderr);
        let first = want.split_once(": error").map_or(want, |(_, rest)| rest);
        assert!(said.contains(first), "{url}: {said}");
    }
    for url in [
        "sqlite://data/bot.db",
        "memory://",
        "redis://127.0.0.1:6379/0?prefix=shop:",
    ] {
        let dir = bot(&format!("session: {{ store: \"{url}\" }}\n"));
        assert_eq!(diagnostics(dir.path(), &[]), Vec::<String>::new(), "{url}");
    }
}

/// A bot folder with this `parlance.yaml` and a flow that hands over.
fn handover_bot(config: &str) -> tempfile::TempDir {
    let dir = bot(config);
    std::fs::write(
        dir.path().join("flows/main.yaml"),
        "nodes:\n  agent:\n    handover: { queue: support }\n",
    )
    .unwrap();
    dir
}

#[test]
fn a_handover_node_needs_an_agent_webhook_with_a_secret() {
    let without = diagnostics(handover_bot("bot: { name: b }\n").path(), &[]);
    assert!(
        without.iter().any(|d| d.starts_with(
            "flows/main.yaml:3:5: error[missing_field] nodes.agent.handover: handover node \"agent\" has no agent inbox to hand over to: parlance.yaml has no `handover.webhook`; hint: add to parlance.yaml: handover: {"
        )),
        "{without:?}"
    );
    let no_secret = diagnostics(
        handover_bot("handover:\n  webhook: https://agents.example.com/in\n").path(),
        &[],
    );
    assert!(
        no_secret.iter().any(|d| d
            .starts_with("parlance.yaml:1:1: error[missing_field] handover: `secret` is missing")),
        "{no_secret:?}"
    );
    let bad_url = diagnostics(
        handover_bot("handover:\n  webhook: agents.example.com\n  secret: s\n").path(),
        &[],
    );
    assert!(
        bad_url.iter().any(|d| d.starts_with(
            "parlance.yaml:2:12: error[invalid_value] handover.webhook: \"agents.example.com\" is not an http or https URL"
        )),
        "{bad_url:?}"
    );
    let no_webhook = diagnostics(bot("handover:\n  secret: s\n").path(), &[]);
    assert_eq!(
        no_webhook,
        [
            "parlance.yaml:1:1: error[missing_field] handover: `webhook` is missing: handovers need the agent inbox's URL; hint: set webhook: ${AGENT_WEBHOOK_URL}, or remove `handover:`"
        ]
    );
    // From the environment, and the secret never shows in the settings' Debug.
    let dir = bot("handover:\n  webhook: ${HOOK}\n  secret: ${HOOK_SECRET}\n");
    let env: HashMap<String, String> = [
        ("HOOK".to_string(), "http://127.0.0.1:9/in".to_string()),
        ("HOOK_SECRET".to_string(), "s3cr3t-value".to_string()),
    ]
    .into();
    let loaded = load_bot_with_env(dir.path(), &|name| env.get(name).cloned());
    let settings = &loaded.bot.as_ref().expect("loads").settings;
    let handover = settings.handover.as_ref().expect("handover settings");
    assert_eq!(handover.webhook, "http://127.0.0.1:9/in");
    assert_eq!(handover.secret, "s3cr3t-value");
    assert!(!format!("{settings:?}").contains("s3cr3t-value"));
}
