use super::message::to_event;
use crate::engine::context::message_value;
use crate::engine::{Event, EventKind};
use crate::flow::MediaKind;
use serde_json::json;

fn event(kind: EventKind) -> Event {
    Event {
        id: Some("wamid.7".into()),
        at: 1_700_000_000,
        contact_name: Some("Ana".into()),
        kind,
    }
}

/// The message shape templates see, unchanged, gives back the same event: what an
/// input transformer that returns `message` as it came does to every kind.
#[test]
fn every_kind_survives_the_round_trip() {
    let kinds = [
        EventKind::Text("hi".into()),
        EventKind::Reply {
            id: "y".into(),
            title: "Yes".into(),
        },
        EventKind::Button {
            payload: "p".into(),
            text: "Go".into(),
        },
        EventKind::Location {
            latitude: 52.5,
            longitude: 13.4,
            name: Some("Home".into()),
            address: None,
        },
        EventKind::Media {
            kind: MediaKind::Document,
            id: "m1".into(),
            mime_type: Some("application/pdf".into()),
            caption: Some("the bill".into()),
            filename: Some("bill.pdf".into()),
        },
        EventKind::Contacts(vec![json!({ "name": { "formatted_name": "Bo" } })]),
        EventKind::Reaction {
            message_id: "wamid.1".into(),
            emoji: "👍".into(),
        },
        EventKind::FlowReply(json!({ "size": "L" })),
        EventKind::Unsupported("order".into()),
    ];
    for kind in kinds {
        let e = event(kind);
        let v = message_value(e.id.as_deref(), &e.kind, e.at);
        assert_eq!(to_event(&e, &v), Ok(e.clone()), "{v}");
    }
}

#[test]
fn a_changed_text_wins_over_a_caption_or_title() {
    let e = event(EventKind::Media {
        kind: MediaKind::Image,
        id: "m1".into(),
        mime_type: None,
        caption: Some("Cat".into()),
        filename: None,
    });
    let mut v = message_value(e.id.as_deref(), &e.kind, e.at);
    v["text"] = json!("cat");
    let Ok(Event {
        kind: EventKind::Media { caption, .. },
        ..
    }) = to_event(&e, &v)
    else {
        panic!("not media")
    };
    assert_eq!(caption.as_deref(), Some("cat"));
}

#[test]
fn a_message_can_change_its_type_and_keeps_its_id() {
    let e = event(EventKind::Reply {
        id: "y".into(),
        title: "Yes".into(),
    });
    let changed = to_event(&e, &json!({ "type": "text", "text": "yes", "id": "other" }));
    assert_eq!(
        changed,
        Ok(Event {
            kind: EventKind::Text("yes".into()),
            ..e
        })
    );
}

#[test]
fn broken_messages_say_what_is_wrong() {
    let e = event(EventKind::Text("hi".into()));
    for (v, why) in [
        (
            json!([1]),
            "input must return the message (a map) or () to drop it, not an array",
        ),
        (
            json!({ "text": "x" }),
            "the returned message has no `type` (text)",
        ),
        (
            json!({ "type": "reply", "text": "x" }),
            "message.reply.id must be text",
        ),
        (
            json!({ "type": "text", "text": 3 }),
            "message.text must be text, not a number",
        ),
        (
            json!({ "type": "location", "location": { "latitude": "n" } }),
            "message.location.latitude must be a number",
        ),
    ] {
        assert_eq!(to_event(&e, &v), Err(why.to_string()), "{v}");
    }
}
