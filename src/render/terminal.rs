//! A message as a phone would show it, in plain text: for `parlance chat` and for
//! conversation test failures. Buttons and rows are numbered so they can be tapped by
//! typing the number.

use crate::engine::message::{Header, MediaRef, Message};
use serde_json::Value;

/// The lines that show `message`; choices are numbered from 1.
pub fn describe(message: &Message) -> Vec<String> {
    let mut lines = Vec::new();
    match message {
        Message::Text { body, .. } => lines.extend(body.lines().map(str::to_string)),
        Message::Media {
            kind,
            source,
            caption,
            filename,
        } => {
            let name = filename
                .as_ref()
                .map(|f| format!(" {f}"))
                .unwrap_or_default();
            lines.push(format!("[{}{name}] {}", kind.name(), media(source)));
            lines.extend(caption.iter().flat_map(|c| c.lines().map(str::to_string)));
        }
        Message::Buttons {
            header,
            body,
            footer,
            buttons,
        } => {
            push_header(&mut lines, header);
            lines.extend(body.lines().map(str::to_string));
            push_footer(&mut lines, footer);
            let choices: Vec<String> = buttons
                .iter()
                .enumerate()
                .map(|(i, b)| format!("[{}] {}", i + 1, b.title))
                .collect();
            lines.push(choices.join("  "));
        }
        Message::List {
            header,
            body,
            footer,
            button,
            sections,
        } => {
            if let Some(h) = header {
                lines.push(format!("*{h}*"));
            }
            lines.extend(body.lines().map(str::to_string));
            push_footer(&mut lines, footer);
            lines.push(format!("☰ {button}"));
            let mut n = 0;
            for s in sections {
                if let Some(t) = &s.title {
                    lines.push(format!("  {t}"));
                }
                for r in &s.rows {
                    n += 1;
                    match &r.description {
                        Some(d) => lines.push(format!("  [{n}] {} — {d}", r.title)),
                        None => lines.push(format!("  [{n}] {}", r.title)),
                    }
                }
            }
        }
        Message::Template {
            name,
            language,
            components,
        } => {
            let params: Vec<String> = components
                .iter()
                .flat_map(|c| c["parameters"].as_array().cloned().unwrap_or_default())
                .map(|p| {
                    p["text"]
                        .as_str()
                        .map_or_else(|| p.to_string(), str::to_string)
                })
                .collect();
            if params.is_empty() {
                lines.push(format!("[template {name} ({language})]"));
            } else {
                lines.push(format!(
                    "[template {name} ({language})] {}",
                    params.join(" | ")
                ));
            }
        }
        Message::Location {
            latitude,
            longitude,
            name,
            address,
        } => {
            let place: Vec<&str> = [name.as_deref(), address.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            lines.push(
                format!("[location] {} ({latitude}, {longitude})", place.join(", "))
                    .replace("]  (", "] ("),
            );
        }
        Message::RequestLocation { body } => {
            lines.extend(body.lines().map(str::to_string));
            lines.push("[📍 Send location]  (type /location LAT LON)".to_string());
        }
        Message::Contacts(cards) => {
            for c in cards {
                let name = c["name"]["formatted_name"].as_str().unwrap_or("contact");
                let phones: Vec<&str> = c["phones"]
                    .as_array()
                    .map(|p| p.iter().filter_map(|x| x["phone"].as_str()).collect())
                    .unwrap_or_default();
                lines.push(
                    format!("[contact] {name} {}", phones.join(", "))
                        .trim_end()
                        .to_string(),
                );
            }
        }
        Message::CtaUrl {
            header,
            body,
            footer,
            button,
            url,
        } => {
            push_header(&mut lines, header);
            lines.extend(body.lines().map(str::to_string));
            push_footer(&mut lines, footer);
            lines.push(format!("[{button} ↗ {url}]"));
        }
        Message::WhatsAppFlow { body, cta, .. } => {
            lines.extend(body.lines().map(str::to_string));
            lines.push(format!("[{cta}]  (a WhatsApp Flows form)"));
        }
        Message::Reaction { emoji, .. } => lines.push(format!("(reacts {emoji})")),
        Message::Payload(p) => lines.push(format!("[payload] {}", compact(p))),
    }
    lines
}

/// The choices a number picks, in the order `describe` numbers them: (id, title).
pub fn choices(message: &Message) -> Vec<(String, String)> {
    match message {
        Message::Buttons { buttons, .. } => buttons
            .iter()
            .map(|b| (b.id.clone(), b.title.clone()))
            .collect(),
        Message::List { sections, .. } => sections
            .iter()
            .flat_map(|s| &s.rows)
            .map(|r| (r.id.clone(), r.title.clone()))
            .collect(),
        _ => Vec::new(),
    }
}

fn push_header(lines: &mut Vec<String>, header: &Option<Header>) {
    match header {
        Some(Header::Text(t)) => lines.push(format!("*{t}*")),
        Some(Header::Media(kind, source)) => {
            lines.push(format!("[{}] {}", kind.name(), media(source)))
        }
        None => {}
    }
}

fn push_footer(lines: &mut Vec<String>, footer: &Option<String>) {
    if let Some(f) = footer {
        lines.push(format!("_{f}_"));
    }
}

fn media(source: &MediaRef) -> String {
    match source {
        MediaRef::Link(l) => l.clone(),
        MediaRef::Id(id) => format!("media id {id}"),
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
