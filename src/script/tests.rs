//! The sandbox on its own: what scripts see and change, and that every limit stops a
//! runaway within its bound.

use super::*;
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

const NOW: i64 = 1_767_603_600; // Monday 2026-01-05 09:00 UTC

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

struct Turn {
    vars: Map<String, Value>,
    profile: Map<String, Value>,
    message: Value,
    contact: Value,
    session: Value,
    env: Map<String, Value>,
}

impl Turn {
    fn new() -> Self {
        Turn {
            vars: obj(json!({ "qty": 2 })),
            profile: obj(json!({ "lang": "en" })),
            message: json!({ "type": "text", "text": "Hello" }),
            contact: json!({ "wa_id": "15550001111", "name": "Ada" }),
            session: json!({ "id": "s1", "turn": 3 }),
            env: obj(json!({ "SHOP": "https://shop.example" })),
        }
    }

    fn input(&self) -> Input<'_> {
        Input {
            vars: &self.vars,
            profile: &self.profile,
            message: &self.message,
            contact: &self.contact,
            session: &self.session,
            env: &self.env,
            now: NOW,
        }
    }
}

fn run_with(sandbox: &Sandbox, code: &str) -> Result<Outcome, ScriptError> {
    let program = sandbox.compile(code)?;
    sandbox.run(&program, Turn::new().input(), true)
}

fn run(code: &str) -> Result<Outcome, ScriptError> {
    run_with(&Sandbox::default(), code)
}

fn error(code: &str) -> ScriptError {
    match run(code) {
        Ok(o) => panic!("{code} should fail, got {o:?}"),
        Err(e) => e,
    }
}

#[test]
fn vars_and_profile_are_written_back() {
    let out =
        run("vars.total = vars.qty * 9.5; profile.lang = \"de\"; vars.remove(\"qty\");").unwrap();
    assert_eq!(Value::Object(out.vars), json!({ "total": 19.0 }));
    assert_eq!(Value::Object(out.profile), json!({ "lang": "de" }));
    assert_eq!(out.next, None);
}

#[test]
fn templates_values_are_readable() {
    let out = run(
        r#"vars.seen = `${message.text} from ${contact.name} (turn ${session.turn}) at ${env.SHOP}`;"#,
    )
    .unwrap();
    assert_eq!(
        out.vars["seen"],
        json!("Hello from Ada (turn 3) at https://shop.example")
    );
}

#[test]
fn message_contact_session_and_env_are_read_only() {
    for code in [
        "message.text = \"changed\";",
        "message = #{};",
        "contact.name = \"Eve\";",
        "session.turn = 0;",
        "env.SHOP = \"x\";",
    ] {
        let e = error(code);
        assert!(e.message.contains("constant"), "{code}: {e:?}");
    }
}

#[test]
fn next_node_chooses_the_next_node_and_the_last_call_wins() {
    let out = run("next_node(\"a\"); if vars.qty > 1 { next_node(\"big\"); }").unwrap();
    assert_eq!(out.next.as_deref(), Some("big"));
}

#[test]
fn next_node_is_refused_where_the_caller_does_not_allow_it() {
    let sandbox = Sandbox::default();
    let program = sandbox.compile("next_node(\"a\");").unwrap();
    let e = sandbox
        .run(&program, Turn::new().input(), false)
        .unwrap_err();
    assert!(
        e.message.contains("only available in a script node"),
        "{e:?}"
    );
}

#[test]
fn vars_must_stay_a_map() {
    let e = error("vars = 5;");
    assert_eq!(
        e.message,
        "vars must stay a map, but the script made it i64"
    );
}

#[test]
fn a_value_without_json_form_is_an_error_naming_it() {
    let e = error("vars.f = Fn(\"x\");");
    assert!(
        e.message.starts_with("vars.f holds a value of type Fn"),
        "{e:?}"
    );
}

#[test]
fn syntax_errors_have_their_line_and_column() {
    let e = Sandbox::default()
        .compile("let a = 1;\nlet b = a +* 2;\n")
        .unwrap_err();
    assert_eq!((e.line, e.column), (2, 12), "{e:?}");
    let e = Sandbox::default().compile("vars.x = totl;").unwrap_err();
    assert_eq!((e.line, e.column), (1, 10), "{e:?}");
    assert!(e.message.contains("totl"), "{e:?}");
}

#[test]
fn shadowing_the_scope_is_refused() {
    let e = error("let vars = #{ x: 1 };");
    assert!(e.message.contains("vars"), "{e:?}");
}

#[test]
fn runtime_errors_have_positions_without_rhai_s_suffix() {
    let e = error("let x = 1;\nlet y = x / 0;");
    assert_eq!(e.line, 2, "{e:?}");
    assert!(!e.message.contains("(line"), "{e:?}");
}

#[test]
fn no_io_is_possible() {
    // print and debug go nowhere; import and eval do not exist.
    assert!(run("print(\"x\"); debug(1);").is_ok());
    assert!(Sandbox::default().compile("import \"os\" as os;").is_err());
    assert!(Sandbox::default().compile("eval(\"1\")").is_err());
    // No wall clock.
    assert!(Sandbox::default().compile("timestamp()").is_ok());
    assert!(error("timestamp()").message.contains("timestamp"));
}

/// Every runaway stops with its own limit's message, fast.
fn stops(sandbox: &Sandbox, code: &str, key: &str) {
    let started = Instant::now();
    let e = run_with(sandbox, code).unwrap_err();
    let took = started.elapsed();
    assert!(e.message.contains(key), "{code}: {e:?}");
    assert!(took < Duration::from_secs(2), "{code} took {took:?}");
}

#[test]
fn an_endless_loop_stops_at_max_operations() {
    stops(&Sandbox::default(), "loop {}", "scripts.max_operations");
    stops(
        &Sandbox::default(),
        "while true { vars.n = 1; }",
        "scripts.max_operations",
    );
}

#[test]
fn an_endless_loop_stops_at_the_timeout() {
    let sandbox = Sandbox::new(Limits {
        max_operations: u64::MAX,
        timeout: Duration::from_millis(20),
        ..Limits::default()
    });
    let started = Instant::now();
    let e = run_with(&sandbox, "loop {}").unwrap_err();
    assert!(e.message.contains("scripts.timeout"), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn deep_recursion_stops_at_max_call_depth() {
    stops(
        &Sandbox::default(),
        "fn down(n) { down(n + 1) } down(0);",
        "scripts.max_call_depth",
    );
}

#[test]
fn growing_values_stop_at_their_size_limits() {
    let s = Sandbox::default();
    stops(
        &s,
        "let t = \"x\"; loop { t += t; }",
        "scripts.max_string_size",
    );
    stops(
        &s,
        "let t = \"x\"; t.pad(100000000, 'y');",
        "scripts.max_string_size",
    );
    stops(
        &s,
        "let a = [1]; loop { a += a; }",
        "scripts.max_array_size",
    );
    stops(
        &s,
        "let a = []; a.pad(100000000, 0);",
        "scripts.max_array_size",
    );
    stops(
        &s,
        "vars.big = \"x\".pad(70000, 'y');",
        "scripts.max_string_size",
    );
    stops(
        &s,
        "let t = \"xxxxxxxx\"; loop { t = to_json([t, t]); }",
        "scripts.max_string_size",
    );
}

#[test]
fn deep_expressions_are_refused_when_compiled() {
    let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
    let e = Sandbox::default().compile(&deep).unwrap_err();
    assert!(e.message.contains("scripts.max_expr_depth"), "{e:?}");
}

#[test]
fn now_is_the_turn_time() {
    let out = run("vars.now = now(); vars.day = format_date(now(), \"%Y-%m-%d %H:%M\");").unwrap();
    assert_eq!(out.vars["now"], json!(NOW));
    assert_eq!(out.vars["day"], json!("2026-01-05 09:00"));
}

#[test]
fn a_map_filled_by_index_stops_at_its_limits() {
    // Rhai does not measure a map when `m[key] = value` adds to it; the sandbox does.
    let s = Sandbox::default();
    stops(
        &s,
        "let t = \"x\"; t.pad(60000, 'y'); let m = #{}; let i = 0; loop { m[`${i}`] = t + i; i += 1; }",
        "scripts.max_string_size",
    );
    let small = Sandbox::new(Limits {
        max_map_size: 100,
        ..Limits::default()
    });
    stops(
        &small,
        "let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += 1; }",
        "scripts.max_map_size",
    );
    stops(
        &small,
        "let i = 0; loop { vars[`k${i}`] = i; i += 1; }",
        "scripts.max_map_size",
    );
}

#[test]
fn the_deepest_allowed_recursion_fits_a_worker_stack() {
    // parlance.yaml accepts max_call_depth up to 64 and max_expr_depth up to 128; a
    // 2 MiB stack (tokio's workers, test threads) must hold both, even unoptimised.
    let handle = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(|| {
            let sandbox = Sandbox::new(Limits {
                max_call_depth: 64,
                max_expr_depth: 128,
                ..Limits::default()
            });
            let deep = format!("vars.x = {}1{};", "(".repeat(60), ")".repeat(60));
            let nested = run_with(&sandbox, &deep).map(|o| o.vars["x"].clone());
            let recursion = run_with(
                &sandbox,
                "fn down(n) { let a = [n, n + 1, `${n}`]; down(n + 1) + a.len() } down(0);",
            );
            (nested, recursion.map(|_| ()).map_err(|e| e.message))
        })
        .unwrap();
    let (nested, recursion) = handle.join().unwrap();
    assert_eq!(nested, Ok(json!(1)));
    assert!(recursion.unwrap_err().contains("scripts.max_call_depth"));
}
