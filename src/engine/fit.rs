//! Rendered text against WhatsApp's limits. A template can render longer than the
//! limit (a long name, a long list); per bot, that is an error naming the field
//! (`render.overflow: error`, the default) or the text is shortened with `…` and a
//! warning (`truncate`). Empty required text is always an error: WhatsApp rejects it.

use super::message::{Header, Message};
use crate::flow::{Overflow, limits};

/// Checks and, with `truncate`, shortens `message`. Returns the fields it shortened.
/// A text field to check: what it is called, the text, its limit, whether it may be empty.
type Field<'a> = (&'static str, &'a mut String, usize, bool);

/// The optional header, the body and the optional footer of an interactive message.
fn frame<'a>(
    fields: &mut Vec<Field<'a>>,
    header: Option<&'a mut String>,
    body: &'a mut String,
    body_max: usize,
    footer: Option<&'a mut String>,
) {
    fields.extend(header.map(|t| ("the header", t, limits::HEADER, true)));
    fields.push(("the body", body, body_max, true));
    fields.extend(footer.map(|f| ("the footer", f, limits::FOOTER, false)));
}

pub fn fit(message: &mut Message, overflow: Overflow) -> Result<Vec<String>, String> {
    let mut fields: Vec<Field<'_>> = Vec::new();
    fn text_header(h: &mut Option<Header>) -> Option<&mut String> {
        match h {
            Some(Header::Text(t)) => Some(t),
            _ => None,
        }
    }
    match message {
        Message::Text { body, .. } => fields.push(("the text", body, limits::TEXT_BODY, true)),
        Message::Media {
            caption: Some(c), ..
        } => fields.push(("the caption", c, limits::CAPTION, false)),
        Message::Buttons {
            header,
            body,
            footer,
            buttons,
        } => {
            frame(
                &mut fields,
                text_header(header),
                body,
                limits::INTERACTIVE_BODY,
                footer.as_mut(),
            );
            for b in buttons {
                fields.push(("a button title", &mut b.title, limits::BUTTON_TITLE, true));
            }
        }
        Message::List {
            header,
            body,
            footer,
            button,
            sections,
        } => {
            frame(
                &mut fields,
                header.as_mut(),
                body,
                limits::LIST_BODY,
                footer.as_mut(),
            );
            fields.push(("the list button", button, limits::LIST_BUTTON, true));
            for s in sections {
                fields.extend(
                    s.title
                        .as_mut()
                        .map(|t| ("a section title", t, limits::SECTION_TITLE, true)),
                );
                for r in &mut s.rows {
                    fields.push(("a row title", &mut r.title, limits::ROW_TITLE, true));
                    fields.extend(
                        r.description
                            .as_mut()
                            .map(|d| ("a row description", d, limits::ROW_DESCRIPTION, false)),
                    );
                }
            }
        }
        Message::RequestLocation { body } => {
            fields.push(("the body", body, limits::INTERACTIVE_BODY, true))
        }
        Message::CtaUrl {
            header,
            body,
            footer,
            button,
            ..
        } => {
            frame(
                &mut fields,
                text_header(header),
                body,
                limits::INTERACTIVE_BODY,
                footer.as_mut(),
            );
            fields.push(("the button label", button, limits::CTA_DISPLAY_TEXT, true));
        }
        Message::WhatsAppFlow {
            header,
            body,
            footer,
            cta,
            ..
        } => {
            frame(
                &mut fields,
                header.as_mut(),
                body,
                limits::INTERACTIVE_BODY,
                footer.as_mut(),
            );
            fields.push(("the button label", cta, limits::FLOW_CTA, true));
        }
        Message::Media { .. }
        | Message::Template { .. }
        | Message::Location { .. }
        | Message::Contacts(_)
        | Message::Reaction { .. }
        | Message::Payload(_) => {}
    }
    let mut shortened = Vec::new();
    for (name, text, max, required) in fields {
        if required && text.trim().is_empty() {
            return Err(format!(
                "{name} is empty after rendering; WhatsApp rejects empty text"
            ));
        }
        let len = text.chars().count();
        if len <= max {
            continue;
        }
        match overflow {
            Overflow::Error => {
                return Err(format!(
                    "{name} is {len} characters after rendering; WhatsApp allows at most {max} (set render.overflow: truncate to shorten it instead)"
                ));
            }
            Overflow::Truncate => {
                let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
                cut.push('…');
                *text = cut;
                shortened.push(name.to_string());
            }
        }
    }
    Ok(shortened)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::message::Row;

    fn buttons(body: &str, title: &str) -> Message {
        Message::Buttons {
            header: None,
            body: body.into(),
            footer: None,
            buttons: vec![Row {
                id: "a".into(),
                title: title.into(),
                description: None,
            }],
        }
    }

    #[test]
    fn over_long_text_is_an_error_or_shortened() {
        let mut m = buttons("ok", "A title far too long for a button");
        let e = fit(&mut m, Overflow::Error).unwrap_err();
        assert_eq!(
            e,
            "a button title is 33 characters after rendering; WhatsApp allows at most 20 (set render.overflow: truncate to shorten it instead)"
        );
        assert_eq!(
            fit(&mut m, Overflow::Truncate).unwrap(),
            vec!["a button title"]
        );
        let Message::Buttons { buttons, .. } = &m else {
            unreachable!()
        };
        assert_eq!(buttons[0].title, "A title far too lon…");
        assert_eq!(buttons[0].title.chars().count(), 20);
    }

    #[test]
    fn empty_required_text_is_always_an_error() {
        let mut m = buttons("  ", "A");
        assert!(
            fit(&mut m, Overflow::Truncate)
                .unwrap_err()
                .contains("the body is empty")
        );
    }
}
