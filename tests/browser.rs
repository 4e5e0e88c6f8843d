//! The `/dev` simulator in a real browser: Debian's Chromium, headless, driven through
//! chromedriver (spawned here on a free port) by `thirtyfour`, against the real
//! `parlance serve` on a temporary copy of a bot folder. Every wait polls a condition
//! with a deadline; none sleeps a fixed time and then looks.
//!
//! Chromium and chromium-driver must be installed (`.ci/run` installs them): these tests
//! fail, loudly, without them. `UPDATE_SCREENSHOTS=1` also writes the README's
//! screenshots (docs/screenshots/).

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{Server, copy_bot, free_port, parlance};
use thirtyfour::prelude::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long any one thing may take to appear (a reload, a reply after message_delay_ms).
const DEADLINE: Duration = Duration::from_secs(30);

/// chromedriver and one browser session; both end when it is dropped.
struct Browser {
    driver: Option<WebDriver>,
    chromedriver: Child,
}

/// A desktop window or an emulated phone.
#[derive(Clone, Copy)]
enum Screen {
    Desktop,
    Phone,
}

impl Browser {
    async fn open(screen: Screen) -> Browser {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: the browser tests need Debian's chromium and chromium-driver \
                 (`apt-get install -y chromium chromium-driver`; .ci/run installs them)"
            );
        }
        let port = free_port();
        let chromedriver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let mut browser = Browser {
            driver: None,
            chromedriver,
        };
        let deadline = Instant::now() + DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver never listened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary(CHROMIUM).unwrap();
        for arg in [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1400,900",
            "--lang=en-US",
        ] {
            caps.add_arg(arg).unwrap();
        }
        if let Screen::Phone = screen {
            caps.add_experimental_option(
                "mobileEmulation",
                json!({ "deviceMetrics": { "width": 390, "height": 844, "pixelRatio": 1.0 } }),
            )
            .unwrap();
        }
        let driver = WebDriver::new(format!("http://127.0.0.1:{port}"), caps)
            .await
            .expect("a browser session");
        if let Screen::Desktop = screen {
            // --window-size counts the window's frame: make the page itself 1400x900.
            let inner = driver
                .execute("return [innerWidth, innerHeight]", vec![])
                .await
                .unwrap();
            let inner: (u32, u32) = inner.convert().unwrap();
            driver
                .set_window_rect(0, 0, 2800 - inner.0, 1800 - inner.1)
                .await
                .unwrap();
        }
        browser.driver = Some(driver);
        browser
    }

    /// Ends the session properly (the way that does not block the runtime).
    async fn quit(mut self) {
        if let Some(driver) = self.driver.take() {
            let _ = driver.quit().await;
        }
    }

    fn driver(&self) -> &WebDriver {
        self.driver.as_ref().expect("the session is open")
    }

    /// Polls `script` (its `return` value) until it is truthy; that value.
    async fn wait_js(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + DEADLINE;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            match self.driver().execute(script, vec![]).await {
                Ok(v) => {
                    last = v.json().clone();
                    if truthy(&last) {
                        return last;
                    }
                }
                Err(e) => last = Value::String(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("waited {DEADLINE:?} for {what}; last seen: {last}");
    }

    /// The last element matching `css` once it is shown.
    async fn wait_last(&self, css: &str) -> WebElement {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(all) = self.driver().find_all(By::Css(css)).await
                && let Some(el) = all.last()
                && el.is_displayed().await.unwrap_or(false)
            {
                return el.clone();
            }
            assert!(Instant::now() < deadline, "waited {DEADLINE:?} for {css}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the last element matching `css`, again if the page drew it anew meanwhile.
    async fn click(&self, css: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.wait_last(css).await.click().await {
                Ok(()) => return,
                Err(e) if stale(&e) && Instant::now() < deadline => {}
                Err(e) => panic!("clicking {css}: {e}"),
            }
        }
    }

    /// Types `text` into the last field matching `css` (emptied first), again if the
    /// page drew it anew meanwhile.
    async fn fill(&self, css: &str, text: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let field = self.wait_last(css).await;
            let typed = async {
                field.clear().await?;
                field.send_keys(text).await
            };
            match typed.await {
                Ok(()) => return,
                Err(e) if stale(&e) && Instant::now() < deadline => {}
                Err(e) => panic!("typing into {css}: {e}"),
            }
        }
    }

    /// Waits until a bot message containing `text` is in the chat.
    async fn wait_bot_says(&self, text: &str) {
        let script = format!(
            "return [...document.querySelectorAll('[data-testid=msg-bot]')].some(m => m.textContent.includes({}))",
            json!(text)
        );
        self.wait_js(&format!("the bot to say {text:?}"), &script)
            .await;
    }

    /// Types `text` into the composer and presses Enter.
    async fn type_and_enter(&self, text: &str) {
        let input = self.wait_last("[data-testid=composer-text]").await;
        input.send_keys(text).await.unwrap();
        input.send_keys(Key::Enter).await.unwrap();
    }

    async fn screenshot(&self, name: &str) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        self.driver()
            .screenshot(&dir.join(name))
            .await
            .expect("a screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver takes its browser along.
        let _ = self.chromedriver.kill();
        let _ = self.chromedriver.wait();
        // A session not quit (a failed test) would say goodbye synchronously, blocking
        // the runtime until its request times out; its chromedriver is gone anyway.
        if let Some(driver) = self.driver.take() {
            std::mem::forget(driver);
        }
    }
}

/// The page drew the element anew after it was looked up.
/// Whether a field or button was caught mid-redraw: gone from the page (stale), or
/// still in it but not yet laid out where Chromium can reach it (not interactable; seen
/// when the agent pane was drawn again between finding its field and typing into it).
fn stale(e: &WebDriverError) -> bool {
    matches!(
        e.as_inner(),
        thirtyfour::error::WebDriverErrorInner::StaleElementReference(_)
            | thirtyfour::error::WebDriverErrorInner::ElementNotInteractable(_)
    )
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(_) => true,
    }
}

/// A pizza order by clicks and typing, as a designer would: the list sheet, reply buttons,
/// text, a location; replies appear live with read ticks; the inspector and the graph
/// explain the turn; the conversation becomes a test that `parlance test` passes.
#[tokio::test]
async fn a_pizza_order_in_the_simulator_becomes_a_passing_test() {
    let bot = copy_bot("examples/pizza");
    let server = Server::start(bot.path(), &[]).await;
    let b = Browser::open(Screen::Desktop).await;
    let d = b.driver();

    // `/` leads to the simulator.
    d.goto(format!("http://127.0.0.1:{}/", server.port))
        .await
        .unwrap();
    b.wait_js(
        "/ to lead to /dev",
        "return location.pathname === '/dev' && document.querySelector('[data-testid=composer]')",
    )
    .await;
    b.wait_js(
        "the live stream",
        "return document.getElementById('connection').textContent.includes('live')",
    )
    .await;

    // Text with Enter; the reply is WhatsApp-formatted (*Pronto Pizza* in bold).
    b.type_and_enter("hi").await;
    b.wait_bot_says("Welcome to").await;
    let bold = b
        .wait_js(
            "the bold name",
            "return [...document.querySelectorAll('[data-testid=msg-bot] strong')].map(s => s.textContent).join('|')",
        )
        .await;
    assert!(
        bold.as_str().unwrap().contains("Pronto Pizza"),
        "*Pronto Pizza* is bold: {bold}"
    );

    // The list: open its sheet, pick a row, send.
    b.wait_last("[data-testid=list-open]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_last("[data-testid=list-row][data-row-id=margherita]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_last("[data-testid=list-send]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_bot_says("One Margherita, coming up!").await;

    // A reply button.
    b.wait_last("[data-testid=reply-button][data-reply-id=medium]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_bot_says("How many medium Margherita pizzas").await;

    // The graph shows where the conversation waits: main.ask_qty.
    b.wait_last("[data-testid=view-graph]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_js(
        "the graph with ask_qty highlighted",
        "const n = document.querySelector('[data-testid=graph] [data-testid=graph-current]'); return n && n.textContent.startsWith('ask_qty')",
    )
    .await;
    b.wait_last("[data-testid=view-turns]")
        .await
        .click()
        .await
        .unwrap();

    b.type_and_enter("3").await;
    b.wait_bot_says("That's €28.50").await;

    // The location request's button opens the location form; send it.
    b.wait_last("[data-testid=send-location]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_last("[data-testid=location-form] button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_bot_says("Shall I place it?").await;

    b.type_and_enter("yes").await;
    b.wait_bot_says("Grazie Maria!").await;
    b.wait_js(
        "the template and the shop's pin",
        "return document.querySelector('[data-testid=msg-bot] [data-testid=template]') && document.querySelector('[data-testid=msg-bot] [data-testid=location]')",
    )
    .await;
    // The page reads what arrives: blue ticks come back as status events.
    b.wait_js(
        "read ticks",
        "return document.querySelectorAll('[data-testid=msg-bot] [data-testid=ticks][data-status=read]').length > 0",
    )
    .await;

    // The inspector's newest turn is the "yes": its visited nodes, in order.
    let visited = b
        .wait_js(
            "the last turn's visited nodes",
            "const t = document.querySelector('[data-testid=turn][open]'); \
             if (!t || !t.textContent.includes('yes')) return null; \
             return [...t.querySelectorAll('[data-testid=trace-node] .node-id')].map(n => n.textContent)",
        )
        .await;
    let visited: Vec<String> = serde_json::from_value(visited).unwrap();
    for node in ["main.confirm", "main.place_order", "main.done"] {
        assert!(
            visited.iter().any(|v| v == node),
            "{node} among {visited:?}"
        );
    }

    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        // The picture as a designer sees it a moment later: everything read, no focus ring.
        b.wait_js(
            "every bot message read",
            "return ![...document.querySelectorAll('[data-testid=msg-bot] [data-testid=ticks]')].some(t => t.dataset.status !== 'read')",
        )
        .await;
        b.wait_js(
            "the inspector to show them read",
            "const t = document.querySelector('[data-testid=turn][open]'); return t && ![...t.querySelectorAll('[data-testid=trace-outgoing] [data-testid=ticks]')].some(t => t.dataset.status !== 'read')",
        )
        .await;
        b.driver()
            .execute("document.activeElement.blur()", vec![])
            .await
            .unwrap();
        b.screenshot("simulator-desktop.png").await;
        let phone = Browser::open(Screen::Phone).await;
        phone
            .driver()
            .goto(format!("http://127.0.0.1:{}/dev", server.port))
            .await
            .unwrap();
        phone.wait_bot_says("Grazie Maria!").await;
        phone
            .wait_js(
                "every bot message read",
                "return ![...document.querySelectorAll('[data-testid=msg-bot] [data-testid=ticks]')].some(t => t.dataset.status !== 'read')",
            )
            .await;
        phone.screenshot("simulator-phone.png").await;
        phone.quit().await;
    }

    // Record the conversation, save it into the bot folder, run it with `parlance test`.
    b.wait_last("[data-testid=view-record]")
        .await
        .click()
        .await
        .unwrap();
    let name = b.wait_last("[data-testid=record-name]").await;
    name.send_keys("orders a pizza in the simulator")
        .await
        .unwrap();
    b.wait_last("[data-testid=record-make]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_js(
        "the recorded YAML",
        "return document.querySelector('[data-testid=record-yaml]').textContent.includes('orders a pizza in the simulator')",
    )
    .await;
    b.wait_last("[data-testid=record-save]")
        .await
        .click()
        .await
        .unwrap();
    let status = b
        .wait_js(
            "the saved file",
            "const s = document.querySelector('[data-testid=record-status]').textContent; return s.startsWith('Saved') || s.startsWith('Not') ? s : null",
        )
        .await;
    assert!(
        status.as_str().unwrap().starts_with("Saved as tests/"),
        "saved: {status}"
    );
    let saved = std::fs::read_dir(bot.path().join("tests"))
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| {
            std::fs::read_to_string(e.path())
                .is_ok_and(|t| t.contains("orders a pizza in the simulator"))
        })
        .expect("the recorded test is in the bot's tests/");
    let out = parlance().arg("test").arg(bot.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ok   orders a pizza in the simulator"),
        "parlance test passes the recorded test ({}):\n{stdout}\n{}",
        saved.path().display(),
        String::from_utf8_lossy(&out.stderr)
    );
    b.quit().await;
}

/// A broken edit: the banner names file:line:col while the old bot still answers; the
/// fix clears it and the notice says which version is live.
#[tokio::test]
async fn a_broken_edit_shows_a_banner_until_it_is_fixed() {
    let bot = copy_bot("examples/pizza");
    let server = Server::start(bot.path(), &[]).await;
    let b = Browser::open(Screen::Desktop).await;
    b.driver()
        .goto(format!("http://127.0.0.1:{}/dev", server.port))
        .await
        .unwrap();
    b.wait_js(
        "the live stream",
        "return document.getElementById('connection').textContent.includes('live')",
    )
    .await;
    let version = b
        .wait_js(
            "the version",
            "return document.querySelector('[data-testid=bot-version]').textContent",
        )
        .await;

    let main = bot.path().join("flows/main.yaml");
    let good = std::fs::read_to_string(&main).unwrap();
    let line = good
        .lines()
        .position(|l| l.trim() == "next: ask_location")
        .expect("free_delivery's next")
        + 1;
    std::fs::write(
        &main,
        good.replace("next: ask_location", "next: ask_locashun"),
    )
    .unwrap();

    let banner = b
        .wait_js(
            "the reload banner",
            "const b = document.querySelector('[data-testid=reload-banner]'); return b && !b.hidden && b.textContent",
        )
        .await;
    let banner = banner.as_str().unwrap();
    assert!(
        banner.contains(&format!("flows/main.yaml:{line}:")),
        "the banner names the line ({line}): {banner}"
    );
    assert!(banner.contains("ask_locashun"), "{banner}");

    // The old version still answers.
    b.type_and_enter("hi").await;
    b.wait_bot_says("Welcome to").await;

    std::fs::write(&main, &good).unwrap();
    b.wait_js(
        "the banner to clear",
        "return document.querySelector('[data-testid=reload-banner]').hidden",
    )
    .await;
    let now = b
        .wait_js(
            "a new version",
            &format!(
                "const v = document.querySelector('[data-testid=bot-version]').textContent; return v !== {} && v",
                version
            ),
        )
        .await;
    let notice = b
        .wait_js(
            "the reload notice",
            "return document.querySelector('[data-testid=reload-notice]').textContent",
        )
        .await;
    assert_eq!(
        notice.as_str().unwrap(),
        format!("{} live", now.as_str().unwrap())
    );
    b.quit().await;
}

/// At phone width the inspector is a tab; it shows the last turn's visited nodes with
/// their file:line.
#[tokio::test]
async fn the_inspector_at_phone_width_shows_the_last_turn() {
    let bot = copy_bot("examples/pizza");
    let server = Server::start(bot.path(), &[]).await;
    let b = Browser::open(Screen::Phone).await;
    b.driver()
        .goto(format!("http://127.0.0.1:{}/dev", server.port))
        .await
        .unwrap();
    let inspector_shown =
        "return getComputedStyle(document.getElementById('pane-inspector')).display !== 'none'";
    let shown = b.driver().execute(inspector_shown, vec![]).await.unwrap();
    assert_eq!(
        shown.json(),
        &json!(false),
        "at phone width the chat is alone"
    );
    b.type_and_enter("hi").await;
    b.wait_bot_says("What would you like today?").await;

    b.wait_last("[data-testid=tab-inspector]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_js("the inspector pane", inspector_shown).await;
    let nodes = b
        .wait_js(
            "the visited nodes",
            "const t = document.querySelector('[data-testid=turn][open]'); \
             return t && [...t.querySelectorAll('[data-testid=trace-node]')].map(n => n.textContent)",
        )
        .await;
    let nodes: Vec<String> = serde_json::from_value(nodes).unwrap();
    assert!(
        nodes.first().is_some_and(|n| n.starts_with("main.welcome")
            && n.contains("say")
            && n.contains("flows/main.yaml:")),
        "{nodes:?}"
    );
    assert!(
        nodes.iter().any(|n| n.starts_with("main.choose_pizza")),
        "{nodes:?}"
    );
    b.quit().await;
}

/// Every kind of message the engine sends is drawn as its own kind; payload text is
/// text (no markup gets in); media that cannot load keep their place.
#[tokio::test]
async fn every_message_kind_is_drawn() {
    let bot = copy_bot("fixtures/showcase");
    let server = Server::start(bot.path(), &[]).await;
    let b = Browser::open(Screen::Desktop).await;
    b.driver()
        .goto(format!("http://127.0.0.1:{}/dev", server.port))
        .await
        .unwrap();
    b.type_and_enter("all").await;
    b.wait_bot_says("Which size?").await;
    let kinds = b
        .wait_js(
            "the kinds",
            "return [...document.querySelectorAll('[data-testid=msg-bot]')].map(m => m.dataset.kind)",
        )
        .await;
    let kinds: Vec<String> = serde_json::from_value(kinds).unwrap();
    for kind in [
        "text", "image", "video", "audio", "document", "location", "contacts", "cta_url",
        "template", "buttons",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} among {kinds:?}");
    }
    // The reaction sits on the user's message, not in a bubble of its own.
    b.wait_js(
        "the reaction on the user's message",
        "const r = document.querySelector('[data-testid=msg-user] [data-testid=reaction]'); return r && r.textContent.includes('👍')",
    )
    .await;
    let checks = b
        .wait_js(
            "the rendering checks",
            "const text = [...document.querySelectorAll('[data-testid=msg-bot]')].find(m => m.textContent.includes('bold'));
             return text && {
               strong: text.querySelector('strong')?.textContent,
               em: text.querySelector('em')?.textContent,
               del: text.querySelector('del')?.textContent,
               mono: text.querySelector('code.mono')?.textContent,
               inline: text.querySelector('code:not(.mono)')?.textContent,
               injected: text.querySelectorAll('img').length + (document.body.dataset.xss ? 100 : 0),
               shown: text.textContent.includes('<img src=x'),
               preview: document.querySelector('[data-testid=link-preview]')?.textContent,
               template: document.querySelector('[data-testid=template]')?.textContent,
             }",
        )
        .await;
    assert_eq!(checks["strong"], "bold");
    assert_eq!(checks["em"], "italic");
    assert_eq!(checks["del"], "strike");
    assert_eq!(checks["mono"], "mono");
    assert_eq!(checks["inline"], "inline");
    assert_eq!(checks["injected"], 0, "payload markup stays text");
    assert_eq!(checks["shown"], true, "{checks}");
    assert!(
        checks["preview"]
            .as_str()
            .is_some_and(|p| p.contains("example.com")),
        "{checks}"
    );
    let template = checks["template"].as_str().unwrap_or_default();
    assert!(
        template.contains("order_confirmation")
            && template.contains("Margherita")
            && template.contains("28.50"),
        "{checks}"
    );
    // The image's link is dead (nothing listens on port 9): a placeholder of the same
    // kind takes its place instead of a broken layout.
    b.wait_js(
        "the image placeholder",
        "return document.querySelector('[data-testid=media-image] .media-missing')",
    )
    .await;

    // The buttons still answer.
    b.wait_last("[data-testid=reply-button][data-reply-id=large]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_bot_says("You chose large.").await;
    // WhatsApp Flows are a placeholder that says what it would open.
    b.wait_js(
        "the WhatsApp Flow placeholder",
        "const f = document.querySelector('[data-testid=msg-bot][data-kind=whatsapp_flow] [data-testid=flow-placeholder]'); return f && f.textContent.includes('booking')",
    )
    .await;
    b.quit().await;
}

/// A local bot with `api.key`: the page asks for the key once (its API answers the
/// inspector and the Agent tab 401 without it) and then works. A refund question in the support example is handed over to the
/// agent inbox (a real HTTP server on loopback); the Agent tab accepts it, answers as
/// the agent (the answer shows in the chat) and resolves it, and the flow goes on.
#[tokio::test]
async fn the_page_asks_for_the_key_and_the_agent_pane_takes_a_handover() {
    // The agent inbox: takes every handover event (2xx: the handover goes ahead).
    let inbox = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/parlance", inbox.local_addr().unwrap());
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let kept = std::sync::Arc::clone(&received);
    let app = axum::Router::new().route(
        "/parlance",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = std::sync::Arc::clone(&kept);
            async move {
                if let Ok(event) = serde_json::from_slice::<Value>(&body) {
                    kept.lock().unwrap().push(event);
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(inbox, app).await;
    });

    let bot = copy_bot("examples/support");
    let server = Server::start_env(
        bot.path(),
        free_port(),
        &[],
        &[
            ("PARLANCE_API_KEY", "the-support-key"),
            ("AGENT_WEBHOOK_URL", &hook),
            ("AGENT_WEBHOOK_SECRET", "agent-secret"),
        ],
    )
    .await;
    let b = Browser::open(Screen::Desktop).await;
    b.driver()
        .goto(format!("http://127.0.0.1:{}/dev", server.port))
        .await
        .unwrap();

    // The key, asked for once.
    let why = b
        .wait_js(
            "the key dialog",
            "const d = document.querySelector('[data-testid=key-dialog]'); return d && d.open && document.getElementById('key-why').textContent",
        )
        .await;
    assert!(why.as_str().unwrap().contains("api.key"), "{why}");
    let input = b.wait_last("[data-testid=key-input]").await;
    input.send_keys("the-support-key").await.unwrap();
    input.send_keys(Key::Enter).await.unwrap();
    b.wait_js(
        "the live stream",
        "return document.getElementById('connection').textContent.includes('live')",
    )
    .await;

    b.type_and_enter("hi").await;
    b.wait_bot_says("How can I help you today?").await;
    b.wait_last("[data-testid=reply-button][data-reply-id=billing]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_bot_says("What is your billing question about?")
        .await;
    b.wait_last("[data-testid=reply-button][data-reply-id=refund]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_bot_says("passing you to a colleague from billing")
        .await;
    let started = received
        .lock()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "handover.started");
    assert!(started, "{:?}", received.lock().unwrap());
    // The key was asked for once only, however many calls the page made since.
    let dialog_open = b
        .driver()
        .execute(
            "return document.querySelector('[data-testid=key-dialog]').open",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(dialog_open.json(), &json!(false));

    // The Agent tab: accept, answer, resolve. (The pane is drawn again as the
    // conversation moves, so each step looks its field up afresh.)
    b.click("[data-testid=view-agent]").await;
    b.fill("[data-testid=agent] input[name=agent]", "grace")
        .await;
    b.click("[data-testid=handover-accept]").await;
    b.fill(
        "[data-testid=agent] input[name=text]",
        "Hi, Grace from billing here. Refund approved.",
    )
    .await;
    b.click("[data-testid=handover-send]").await;
    b.wait_bot_says("Grace from billing here").await;
    b.fill("[data-testid=agent] input[name=status]", "refunded")
        .await;
    b.click("[data-testid=handover-resolve]").await;
    // The flow goes on at the handover node's next, reading the agent's status.
    b.wait_bot_says("Your refund is on its way").await;
    b.wait_js(
        "the handover shown as resolved",
        "return [...document.querySelectorAll('[data-testid=handover] .pill')].some(p => p.textContent === 'resolved')",
    )
    .await;
    b.quit().await;
}

/// `dev.enabled: true` beside a real number: the page asks for the key before anything
/// (its event stream needs it too), then a simulated user talks to the local twin; a
/// recorded test can be downloaded but not saved into the server's bot folder; nothing
/// reaches the Graph API.
#[tokio::test]
async fn beside_a_real_number_the_page_talks_to_the_twin_with_the_key() {
    let graph = parlance::testing::fake_graph::FakeGraph::start()
        .await
        .unwrap();
    // examples/pizza with credentials, and what a team adds to serve the simulator
    // beside the real number: dev.enabled and the API key.
    let bot = copy_bot("examples/pizza");
    let settings = bot.path().join("parlance.yaml");
    let yaml = std::fs::read_to_string(&settings).unwrap().replace(
        "  message_delay_ms: 500\n",
        &format!(
            "  message_delay_ms: 500\n  base_url: \"{}\"\n",
            graph.base_url()
        ),
    );
    assert!(yaml.contains("base_url"), "{yaml}");
    std::fs::write(
        &settings,
        format!("{yaml}\ndev: {{ enabled: true }}\napi: {{ key: twin-key }}\n"),
    )
    .unwrap();
    let server = Server::start_env(
        bot.path(),
        free_port(),
        &[],
        &[
            ("WA_ACCESS_TOKEN", "EAAG-real"),
            ("WA_PHONE_NUMBER_ID", "123456"),
            ("WA_VERIFY_TOKEN", "verify"),
            ("WA_APP_SECRET", "app-secret"),
        ],
    )
    .await;
    let b = Browser::open(Screen::Desktop).await;
    b.driver()
        .goto(format!("http://127.0.0.1:{}/dev", server.port))
        .await
        .unwrap();
    b.wait_js(
        "the key dialog",
        "const d = document.querySelector('[data-testid=key-dialog]'); return d && d.open",
    )
    .await;
    let live = b
        .driver()
        .execute(
            "return document.getElementById('connection').textContent.includes('live')",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(live.json(), &json!(false), "no stream without the key");
    b.fill("[data-testid=key-input]", "twin-key").await;
    b.click("[data-testid=key-ok]").await;
    b.wait_js(
        "the live stream",
        "return document.getElementById('connection').textContent.includes('live')",
    )
    .await;
    b.type_and_enter("hi").await;
    b.wait_bot_says("What would you like today?").await;
    let save_hidden = b
        .driver()
        .execute(
            "return document.querySelector('[data-testid=record-save]').hidden",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(save_hidden.json(), &json!(true));
    assert!(graph.received().is_empty(), "{:?}", graph.received());
    b.quit().await;
}
