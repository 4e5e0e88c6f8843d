//! The kinds that send a message without asking: say, media, template, location.

use super::Ctx;
use crate::diag::Code;
use crate::flow::limits;
use crate::flow::*;
use crate::source::YamlPath;
use crate::spec::flow::*;
use serde_json::Value;

impl Ctx<'_> {
    pub(super) fn say(&mut self, raw: &RawSay, path: &YamlPath) -> Vec<TextMessage> {
        let one = |ctx: &mut Self, item: &RawTextItem, p: &YamlPath| match item {
            RawTextItem::Text(t) => TextMessage {
                text: ctx.limited(t, p, limits::TEXT_BODY, "the text"),
                preview_url: false,
            },
            RawTextItem::Rich(r) => TextMessage {
                text: ctx.limited(&r.text, &p.key("text"), limits::TEXT_BODY, "the text"),
                preview_url: r.preview_url.unwrap_or(false),
            },
        };
        match raw {
            RawSay::Text(t) => vec![one(self, &RawTextItem::Text(t.clone()), path)],
            RawSay::Rich(r) => vec![one(self, &RawTextItem::Rich(r.clone()), path)],
            RawSay::Many(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| one(self, item, &path.index(i)))
                .collect(),
        }
    }

    pub(super) fn media(&mut self, kind: MediaKind, raw: &RawMedia, path: &YamlPath) -> Media {
        let obj = match raw {
            RawMedia::Link(link) => {
                return Media {
                    source: MediaSource::Link(self.url(link, path, "a media link")),
                    caption: None,
                    filename: None,
                };
            }
            RawMedia::Full(obj) => obj,
        };
        let source = match (&obj.link, &obj.id) {
            (Some(link), None) => {
                MediaSource::Link(self.url(link, &path.key("link"), "a media link"))
            }
            (None, Some(id)) => MediaSource::Id(self.text(id, &path.key("id"))),
            (Some(_), Some(_)) => {
                self.report(
                    path,
                    Code::InvalidValue,
                    "give `link` or `id`, not both",
                    Some("`link` is a public https URL of the file, `id` a file uploaded with the Media API; keep one".into()),
                );
                MediaSource::Id(Text::Static(String::new()))
            }
            (None, None) => {
                self.report(
                    path,
                    Code::MissingField,
                    format!("the {} needs a `link` or an `id`", kind.name()),
                    Some("add `link:` with a public https URL of the file, or `id:` of a file uploaded with the Media API".into()),
                );
                MediaSource::Id(Text::Static(String::new()))
            }
        };
        let caption = obj.caption.as_ref().map(|c| {
            if matches!(kind, MediaKind::Audio | MediaKind::Sticker) {
                self.report(
                    &path.key("caption"),
                    Code::InvalidValue,
                    format!("WhatsApp shows no caption on {} messages", kind.name()),
                    Some("send the text in a say node instead".into()),
                );
            }
            self.limited(c, &path.key("caption"), limits::CAPTION, "the caption")
        });
        let filename = obj.filename.as_ref().map(|f| {
            if kind != MediaKind::Document {
                self.diags.push(
                    self.file
                        .diag_at_key(
                            &path.key("filename"),
                            Code::MisplacedKey,
                            format!("`filename` has no effect on {} messages", kind.name()),
                        )
                        .with_hint("only documents show a file name"),
                );
            }
            self.text(f, &path.key("filename"))
        });
        Media {
            source,
            caption,
            filename,
        }
    }

    pub(super) fn template(
        &mut self,
        raw: &RawTemplate,
        path: &YamlPath,
        waits_for_reply: bool,
    ) -> TemplateMessage {
        let n = raw.name.chars().count();
        if n > limits::TEMPLATE_NAME {
            self.report(
                &path.key("name"),
                Code::WhatsappLimit,
                format!(
                    "the template name is {n} characters; WhatsApp allows at most {}",
                    limits::TEMPLATE_NAME
                ),
                Some("write the name exactly as approved in the WhatsApp Manager".into()),
            );
        } else if n == 0
            || !raw
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            self.report(
                &path.key("name"),
                Code::InvalidValue,
                format!("\"{}\" is not a template name", raw.name),
                Some("template names are lowercase letters, digits and _, as approved in the WhatsApp Manager".into()),
            );
        }
        if raw.language.trim().is_empty() {
            self.report(
                &path.key("language"),
                Code::InvalidValue,
                "the language code is empty",
                Some("e.g. en_US or de".into()),
            );
        }
        let mut components = Vec::new();
        if let Some(body) = &raw.body {
            let parameters = body
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    JsonTemplate::Object(vec![
                        (
                            "type".into(),
                            JsonTemplate::Text(Text::Static("text".into())),
                        ),
                        (
                            "text".into(),
                            JsonTemplate::Text(self.text(t, &path.key("body").index(i))),
                        ),
                    ])
                })
                .collect();
            components.push(JsonTemplate::Object(vec![
                (
                    "type".into(),
                    JsonTemplate::Text(Text::Static("body".into())),
                ),
                ("parameters".into(), JsonTemplate::Array(parameters)),
            ]));
        }
        if let Some(list) = &raw.components {
            if raw.body.is_some() && list.iter().any(|c| c.kind == TemplateComponentKind::Body) {
                self.report(
                    &path.key("body"),
                    Code::InvalidValue,
                    "give the body parameters once: in `body` or in `components`",
                    Some("remove `body`, or the `type: body` entry of `components`".into()),
                );
            }
            let p = path.key("components");
            if let Some(Value::Array(items)) = self.raw_json(&p) {
                for (i, c) in items.iter().enumerate() {
                    components.push(self.json(c, &p.index(i)));
                }
            }
        }
        TemplateMessage {
            name: raw.name.clone(),
            language: raw.language.clone(),
            components,
            waits_for_reply,
        }
    }

    pub(super) fn location(&mut self, raw: &RawLocation, path: &YamlPath) -> Location {
        let number = |ctx: &mut Self, n: &RawNumber, key: &str, max: f64| match n {
            RawNumber::Number(v) => {
                if !(-max..=max).contains(v) {
                    ctx.report(
                        &path.key(key),
                        Code::InvalidValue,
                        format!("{key} {v} is outside -{max}..{max}"),
                        Some("latitude is -90..90 and longitude -180..180 degrees; check they are not swapped".into()),
                    );
                }
                Number::Fixed(*v)
            }
            RawNumber::Template(t) => Number::Template(ctx.text(t, &path.key(key))),
        };
        let latitude = number(self, &raw.latitude, "latitude", 90.0);
        let longitude = number(self, &raw.longitude, "longitude", 180.0);
        Location {
            latitude,
            longitude,
            name: raw.name.as_ref().map(|n| self.text(n, &path.key("name"))),
            address: raw
                .address
                .as_ref()
                .map(|a| self.text(a, &path.key("address"))),
        }
    }
}
