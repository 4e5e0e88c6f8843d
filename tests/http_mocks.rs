//! `mocks:` in conversation tests: the runner answers the bot's `http` nodes from the
//! test file, checks the requests they make, and fails a test that reaches an `http`
//! node it did not mock. Played through the library's runner, as `parlance test` does.

use parlance::compile::{load_bot_with_env, load_tests};
use parlance::testing;
use serde_json::Map;

/// An order lookup: `ask` the number, `http` GET with a query and a token header,
/// `say` the status, and an `on_error` branch that reads `message.error`.
const ORDERS: &str = r#"
nodes:
  ask_id:
    ask: { text: "Order number?" }
    save: order_id
  lookup:
    http:
      url: "{{ env.ORDERS_API }}/orders/{{ vars.order_id }}"
      query: { fields: "status eta" }
      headers: { Authorization: "Bearer {{ env.ORDERS_TOKEN }}", Accept: application/json }
    save: order
    on_error: failed
  tell:
    say: "Order {{ vars.order.body.id }} is {{ vars.order.body.status }}."
    next: end
  failed:
    say: "Lookup failed: {{ message.error.kind }} {{ message.error.status }}"
"#;

/// A second flow with a node called `lookup` too: a bare `lookup` is ambiguous there.
const OTHER: &str = r#"
triggers:
  - keywords: [other]
nodes:
  lookup:
    http: { method: POST, url: "https://api.example.com/notes", json: { note: "{{ message.text }}", n: 2 } }
    next: done
  done:
    say: Noted.
"#;

const CONFIG: &str = "bot: { entry: main }\nexpose_env: [ORDERS_API, ORDERS_TOKEN]\n";

const ENV: &str = "env: { ORDERS_API: \"https://orders.example.com/v1\", ORDERS_TOKEN: tok-123 }\n";

/// Runs `test` against a bot of `flows`; the failure as `parlance test` prints it.
fn run(flows: &[(&str, &str)], test: &str) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["flows", "tests"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    for (name, text) in flows {
        std::fs::write(dir.path().join(format!("flows/{name}.yaml")), text).unwrap();
    }
    std::fs::write(dir.path().join("parlance.yaml"), CONFIG).unwrap();
    std::fs::write(dir.path().join("tests/t.yaml"), test).unwrap();
    let loaded = load_bot_with_env(dir.path(), &|_| None);
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let bot = loaded.bot.expect("the bot loads");
    let tests = load_tests(dir.path());
    assert!(tests.diagnostics.is_empty(), "{:#?}", tests.diagnostics);
    let (file, test) = &tests.files[0];
    let report = testing::run(&bot, file, test, Map::new());
    report.failure.map(|f| {
        f.to_string()
            .replace(&dir.path().display().to_string(), "BOT")
    })
}

fn orders(test: &str) -> Option<String> {
    run(&[("main", ORDERS)], &format!("name: t\n{ENV}{test}"))
}

#[test]
fn a_200_answer_is_saved_and_used_in_the_reply() {
    let failure = orders(
        r#"
mocks:
  lookup: { json: { id: "42", status: shipped }, headers: { X-Request-Id: abc } }
steps:
  - user: hi
  - bot: "Order number?"
  - user: "42"
  - bot: "Order 42 is shipped."
"#,
    );
    assert_eq!(failure, None);
    // `save` holds the real performer's shape: status, lower-case headers, body.
    let failure = orders(
        r#"
mocks:
  lookup: { json: { id: "42", status: shipped }, headers: { X-Request-Id: abc } }
steps:
  - user: hi
  - bot: "Order number?"
  - user: "42"
  - bot: "Order 42 is shipped."
  - vars:
      order:
        status: 200
        headers: { x-request-id: abc, content-type: application/json }
        body: { id: "42", status: shipped }
"#,
    );
    assert_eq!(failure, None);
}

#[test]
fn a_404_takes_on_error_with_the_status_and_keeps_the_answer() {
    let failure = orders(
        r#"
mocks:
  lookup: { status: 404, json: { error: not found } }
steps:
  - user: hi
  - bot: "Order number?"
  - user: "7"
  - bot: "Lookup failed: status 404"
  - vars:
      order:
        status: 404
        headers: { content-type: application/json }
        body: { error: not found }
"#,
    );
    assert_eq!(failure, None);
}

#[test]
fn a_timeout_takes_on_error_without_an_answer() {
    let failure = orders(
        r#"
mocks:
  lookup: { fail: timeout }
steps:
  - user: hi
  - bot: "Order number?"
  - user: "7"
  - bot: "Lookup failed: timeout None"
"#,
    );
    assert_eq!(failure, None);
}

#[test]
fn a_request_that_matches_the_assertion_passes() {
    let failure = orders(
        r#"
mocks:
  main.lookup:
    json: { id: "42", status: shipped }
    request:
      method: GET
      url: "https://orders.example.com/v1/orders/42?fields=status+eta"
      headers: { authorization: "Bearer tok-123" }
steps:
  - user: hi
  - bot: "Order number?"
  - user: "42"
  - bot: "Order 42 is shipped."
"#,
    );
    assert_eq!(failure, None);
    let failure = run(
        &[("main", ORDERS), ("other", OTHER)],
        r#"name: t
mocks:
  other.lookup:
    status: 201
    request: { method: POST, url: "/notes$/", json: { note: other, n: 2.0 } }
steps:
  - user: other
  - bot: Noted.
"#,
    );
    assert_eq!(failure, None);
}

#[test]
fn a_request_that_differs_fails_the_step_with_expected_and_actual() {
    let failure = orders(
        r#"
mocks:
  lookup:
    json: { id: "42", status: shipped }
    request:
      method: POST
      url: "https://orders.example.com/v1/orders/41?fields=status+eta"
      headers: { Authorization: "Bearer other", X-Missing: "yes" }
      json: { id: 42 }
steps:
  - user: hi
  - bot: "Order number?"
  - user: "42"
  - bot: "Order 42 is shipped."
"#,
    )
    .expect("the test fails");
    assert_eq!(
        failure,
        "BOT/tests/t.yaml:15:5: step 3: the request of main.lookup is not what its mock (BOT/tests/t.yaml:5:3) expects:
    method: expected POST, got GET
    url: expected \"https://orders.example.com/v1/orders/41?fields=status+eta\", got \"https://orders.example.com/v1/orders/42?fields=status+eta\"
    header Authorization: expected \"Bearer other\", got \"Bearer {{ env.ORDERS_TOKEN }}\"
    header X-Missing: expected \"yes\", but it was not sent
    json: expected {\"id\":42}, got no body
  the request made:
    GET https://orders.example.com/v1/orders/42?fields=status+eta
    Authorization: Bearer {{ env.ORDERS_TOKEN }}
    Accept: application/json"
    );
}

#[test]
fn an_http_node_without_a_mock_fails_the_test_and_says_how_to_add_one() {
    let failure = orders(
        r#"
steps:
  - user: hi
  - bot: "Order number?"
  - user: "42"
  - bot: "Order 42 is shipped."
"#,
    )
    .expect("the test fails");
    assert_eq!(
        failure,
        "BOT/tests/t.yaml:7:5: step 3: main.lookup (flows/main.yaml:6:3) calls GET https://orders.example.com/v1/orders/42?fields=status+eta, and this test has no mock for it (tests never call the network); add one to the test file, e.g.
    mocks:
      lookup: { status: 200, json: { ... } }
  or `lookup: { fail: timeout }` for a call that fails"
    );
}

#[test]
fn a_bare_id_of_two_nodes_is_ambiguous_and_names_both() {
    let test = "name: t\nmocks:\n  lookup: { json: {} }\nsteps:\n  - user: hi\n";
    let failure = run(&[("main", ORDERS), ("other", OTHER)], test).expect("the test fails");
    assert_eq!(
        failure,
        "BOT/tests/t.yaml:3:3: `mocks` names lookup, but several flows have a node with that id: main.lookup, other.lookup; write the mock as `flow.node`"
    );
    // With two nodes of that id, the hint for a missing mock names the flow too.
    let failure = run(
        &[("main", ORDERS), ("other", OTHER)],
        "name: t\nsteps:\n  - user: other\n",
    )
    .expect("the test fails");
    assert!(
        failure.contains("\n      other.lookup: { status: 200, json: { ... } }"),
        "{failure}"
    );
}

#[test]
fn a_mock_must_name_an_http_node() {
    let failure = orders("mocks:\n  nope: { json: {} }\nsteps:\n  - user: hi\n").expect("fails");
    assert_eq!(
        failure,
        "BOT/tests/t.yaml:4:3: `mocks` names nope, but the bot has no such node; its http nodes are main.lookup"
    );
    let failure = orders("mocks:\n  tell: { json: {} }\nsteps:\n  - user: hi\n").expect("fails");
    assert_eq!(
        failure,
        "BOT/tests/t.yaml:4:3: `mocks` names main.tell, a say node; only http and handover nodes are mocked"
    );
    let failure = orders("mocks:\n  lookup: { handover: unavailable }\nsteps:\n  - user: hi\n")
        .expect("fails");
    assert_eq!(
        failure,
        "BOT/tests/t.yaml:4:3: `mocks` gives the http node main.lookup a `handover:` mock; an http node's mock answers (`status`, `json`, `body`) or fails (`fail`)"
    );
    let failure =
        orders("mocks:\n  lookup: { json: {}, body: x }\nsteps:\n  - user: hi\n").expect("fails");
    assert_eq!(
        failure,
        "BOT/tests/t.yaml:4:3: the mock of main.lookup has both `json` and `body`; an answer has one body"
    );
}

/// The flow asks again after each lookup, so one conversation calls `lookup` three times.
const AGAIN: &str = r#"
nodes:
  ask_id:
    ask: { text: "Order number?" }
    save: order_id
  lookup:
    http: { url: "https://orders.example.com/orders/{{ vars.order_id }}" }
    save: order
    on_error: failed
  tell:
    say: "{{ vars.order.body }}"
    next: ask_id
  failed:
    say: "failed: {{ message.error.kind }}"
    next: ask_id
"#;

#[test]
fn a_list_of_mocks_answers_the_calls_in_order() {
    let test = r#"name: t
mocks:
  lookup:
    - { body: first, request: { url: "/orders/1$/" } }
    - { fail: connect, request: { url: "/orders/2$/" } }
    - { body: third }
steps:
  - user: hi
  - bot: "Order number?"
  - user: "1"
  - bot: first
  - bot: "Order number?"
  - user: "2"
  - bot: "failed: connect"
  - bot: "Order number?"
  - user: "3"
  - bot: third
  - bot: "Order number?"
"#;
    assert_eq!(run(&[("main", AGAIN)], test), None);
    // A fourth call finds the list used up.
    let more = format!("{test}  - user: \"4\"\n");
    let failure = run(&[("main", AGAIN)], &more).expect("the test fails");
    assert_eq!(
        failure,
        "BOT/tests/t.yaml:19:5: step 12: main.lookup was called 4 times, but its mocks (BOT/tests/t.yaml:3:3) answer 3 calls; add an answer to the list"
    );
}

#[test]
fn test_env_must_be_exposed() {
    let failure = run(
        &[("main", ORDERS)],
        "name: t\nenv: { HOME: /root }\nsteps:\n  - user: hi\n",
    )
    .expect("fails");
    assert_eq!(
        failure,
        "BOT/tests/t.yaml:2:8: `env` sets HOME, which is not in `expose_env` in parlance.yaml; templates cannot read it"
    );
}
