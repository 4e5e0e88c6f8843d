//! Reading a Cloud API payload an output transformer changed: `chat` shows it and
//! `test` checks it, since the engine's message no longer says what the user gets.

use serde_json::Value;

/// The payload's main text: a text message's body, an interactive message's body, a
/// media message's caption.
pub fn payload_text(payload: &Value) -> Option<&str> {
    let kind = payload["type"].as_str()?;
    match kind {
        "text" => payload["text"]["body"].as_str(),
        "interactive" => payload["interactive"]["body"]["text"].as_str(),
        other => payload[other]["caption"].as_str(),
    }
}

/// The payload as lines for the terminal: header, text, footer, then the buttons or
/// the list's button; the JSON when there is no text to show.
pub fn payload_lines(payload: &Value) -> Vec<String> {
    let interactive = &payload["interactive"];
    let mut lines = Vec::new();
    if let Some(h) = interactive["header"]["text"].as_str() {
        lines.push(format!("*{h}*"));
    }
    if let Some(t) = payload_text(payload) {
        lines.extend(t.lines().map(str::to_string));
    }
    if let Some(f) = interactive["footer"]["text"].as_str() {
        lines.push(format!("_{f}_"));
    }
    if let Some(buttons) = interactive["action"]["buttons"].as_array() {
        for (i, b) in buttons.iter().enumerate() {
            lines.push(format!(
                "[{}] {}",
                i + 1,
                b["reply"]["title"].as_str().unwrap_or_default()
            ));
        }
    }
    if let Some(b) = interactive["action"]["button"].as_str() {
        lines.push(format!("[{b}]"));
    }
    if lines.is_empty() {
        lines.push(serde_json::to_string(payload).unwrap_or_default());
    }
    lines
}
