//! The kinds that send a message and wait for the answer (buttons, list, ask), and the
//! interactive messages with a header or a button (cta_url, whatsapp_flow).

use super::Ctx;
use super::lints::never_matches;
use crate::diag::Code;
use crate::flow::limits;
use crate::flow::*;
use crate::source::YamlPath;
use crate::spec::flow::*;

impl Ctx<'_> {
    pub(super) fn header(&mut self, raw: &RawHeader, path: &YamlPath) -> Header {
        match raw {
            RawHeader::Text(t) | RawHeader::Rich(RawRichHeader::Text(t)) => {
                let p = if matches!(raw, RawHeader::Text(_)) {
                    path.clone()
                } else {
                    path.key("text")
                };
                Header::Text(self.limited(t, &p, limits::HEADER, "the header"))
            }
            RawHeader::Rich(RawRichHeader::Image(m)) => Header::Media(
                MediaKind::Image,
                self.media(MediaKind::Image, m, &path.key("image")),
            ),
            RawHeader::Rich(RawRichHeader::Video(m)) => Header::Media(
                MediaKind::Video,
                self.media(MediaKind::Video, m, &path.key("video")),
            ),
            RawHeader::Rich(RawRichHeader::Document(m)) => Header::Media(
                MediaKind::Document,
                self.media(MediaKind::Document, m, &path.key("document")),
            ),
        }
    }

    pub(super) fn retry(
        &mut self,
        retries: Option<u32>,
        reprompt: &Option<String>,
        on_fail: &Option<RawTarget>,
        path: &YamlPath,
    ) -> Retry {
        Retry {
            retries: retries.unwrap_or(DEFAULT_RETRIES),
            reprompt: reprompt
                .as_ref()
                .map(|r| self.limited(r, &path.key("reprompt"), limits::TEXT_BODY, "the reprompt")),
            on_fail: on_fail
                .as_ref()
                .map(|t| self.target(t, &path.key("on_fail"))),
        }
    }

    pub(super) fn buttons(&mut self, raw: &RawButtons, path: &YamlPath) -> Buttons {
        let header = raw
            .header
            .as_ref()
            .map(|h| self.header(h, &path.key("header")));
        let body = self.limited(
            &raw.body,
            &path.key("body"),
            limits::INTERACTIVE_BODY,
            "the body",
        );
        let footer = self.limited_opt(
            &raw.footer,
            &path.key("footer"),
            limits::FOOTER,
            "the footer",
        );
        let mut ids = Vec::new();
        let mut titles = Vec::new();
        let mut buttons = Vec::new();
        for (i, b) in raw.buttons.iter().enumerate() {
            let p = path.key("buttons").index(i);
            self.unique(&mut ids, &b.id, &p.key("id"), "id");
            self.check_id(&b.id, &p.key("id"), limits::BUTTON_ID);
            if !Templates::is_template(&b.title) {
                self.unique(&mut titles, &normalize(&b.title), &p.key("title"), "title");
            }
            buttons.push(Choice {
                id: b.id.clone(),
                title: self.limited(
                    &b.title,
                    &p.key("title"),
                    limits::BUTTON_TITLE,
                    "the button title",
                ),
                description: None,
            });
        }
        let retry = self.retry(raw.retries, &raw.reprompt, &raw.on_fail, path);
        Buttons {
            header,
            body,
            footer,
            buttons,
            retry,
        }
    }

    pub(super) fn list(&mut self, raw: &RawList, path: &YamlPath) -> List {
        let header = self.limited_opt(
            &raw.header,
            &path.key("header"),
            limits::HEADER,
            "the header",
        );
        let body = self.limited(&raw.body, &path.key("body"), limits::LIST_BODY, "the body");
        let footer = self.limited_opt(
            &raw.footer,
            &path.key("footer"),
            limits::FOOTER,
            "the footer",
        );
        let button = self.limited(
            &raw.button,
            &path.key("button"),
            limits::LIST_BUTTON,
            "the list button",
        );
        let total: usize = raw.sections.iter().map(|s| s.rows.len()).sum();
        if total > limits::LIST_ROWS {
            self.report(
                &path.key("sections"),
                Code::WhatsappLimit,
                format!(
                    "{total} rows in all; WhatsApp allows at most {} rows in a list",
                    limits::LIST_ROWS
                ),
                Some("split the choices over two list nodes, e.g. with a \"More…\" row".into()),
            );
        }
        let mut ids = Vec::new();
        let mut sections = Vec::new();
        for (s, section) in raw.sections.iter().enumerate() {
            let sp = path.key("sections").index(s);
            if raw.sections.len() > 1 && section.title.is_none() {
                self.report(
                    &sp,
                    Code::MissingField,
                    "a list with several sections needs a `title` on each",
                    Some(format!("add `title:` (at most {} characters) to each section, or merge them into one", limits::SECTION_TITLE)),
                );
            }
            let title = section.title.as_ref().map(|t| {
                self.limited(
                    t,
                    &sp.key("title"),
                    limits::SECTION_TITLE,
                    "the section title",
                )
            });
            let mut rows = Vec::new();
            for (r, row) in section.rows.iter().enumerate() {
                let rp = sp.key("rows").index(r);
                self.unique(&mut ids, &row.id, &rp.key("id"), "id");
                self.check_id(&row.id, &rp.key("id"), limits::ROW_ID);
                rows.push(Choice {
                    id: row.id.clone(),
                    title: self.limited(
                        &row.title,
                        &rp.key("title"),
                        limits::ROW_TITLE,
                        "the row title",
                    ),
                    description: row.description.as_ref().map(|d| {
                        self.limited(
                            d,
                            &rp.key("description"),
                            limits::ROW_DESCRIPTION,
                            "the row description",
                        )
                    }),
                });
            }
            sections.push(Section { title, rows });
        }
        let retry = self.retry(raw.retries, &raw.reprompt, &raw.on_fail, path);
        List {
            header,
            body,
            footer,
            button,
            sections,
            retry,
        }
    }

    pub(super) fn ask(&mut self, raw: &RawAsk, path: &YamlPath) -> Ask {
        let text = self.limited(
            &raw.text,
            &path.key("text"),
            limits::TEXT_BODY,
            "the question",
        );
        let expect = match &raw.expect {
            None => Expect::Kind(ExpectKind::Text),
            Some(RawExpect::Kind(k)) => Expect::Kind(*k),
            Some(RawExpect::Regex(r)) => {
                let p = path.key("expect").key("regex");
                // The whole answer must match, not a part of it.
                let re = self
                    .regex(&r.regex, &p, false)
                    .and_then(|_| self.regex(&format!("^(?:{})$", r.regex), &p, false))
                    .unwrap_or_else(never_matches);
                Expect::Regex(re)
            }
        };
        let validate = raw
            .validate
            .as_ref()
            .map(|v| self.expr(v, &path.key("validate"), &["answer"]));
        let retry = self.retry(raw.retries, &raw.reprompt, &raw.on_fail, path);
        Ask {
            text,
            expect,
            validate,
            retry,
        }
    }

    pub(super) fn cta_url(&mut self, raw: &RawCtaUrl, path: &YamlPath) -> CtaUrl {
        CtaUrl {
            header: raw
                .header
                .as_ref()
                .map(|h| self.header(h, &path.key("header"))),
            body: self.limited(
                &raw.body,
                &path.key("body"),
                limits::INTERACTIVE_BODY,
                "the body",
            ),
            footer: self.limited_opt(
                &raw.footer,
                &path.key("footer"),
                limits::FOOTER,
                "the footer",
            ),
            button: self.limited(
                &raw.button,
                &path.key("button"),
                limits::CTA_DISPLAY_TEXT,
                "the button label",
            ),
            url: self.url(&raw.url, &path.key("url"), "the url"),
        }
    }

    pub(super) fn whatsapp_flow(&mut self, raw: &RawWhatsAppFlow, path: &YamlPath) -> WhatsAppFlow {
        let flow = match (&raw.flow_id, &raw.flow_name) {
            (Some(id), None) => WhatsAppFlowRef::Id(id.clone()),
            (None, Some(name)) => WhatsAppFlowRef::Name(name.clone()),
            (Some(_), Some(_)) => {
                self.report(
                    path,
                    Code::InvalidValue,
                    "give `flow_id` or `flow_name`, not both",
                    Some(
                        "keep one: `flow_id` is the published Flow's id, `flow_name` its name"
                            .into(),
                    ),
                );
                WhatsAppFlowRef::Id(String::new())
            }
            (None, None) => {
                self.report(
                    path,
                    Code::MissingField,
                    "a whatsapp_flow needs `flow_id` or `flow_name`",
                    Some("add `flow_id:` (from the WhatsApp Manager) or `flow_name:`".into()),
                );
                WhatsAppFlowRef::Id(String::new())
            }
        };
        let data = raw
            .data
            .as_ref()
            .and_then(|_| self.raw_json(&path.key("data")))
            .map(|d| self.json(&d, &path.key("data")));
        WhatsAppFlow {
            header: self.limited_opt(
                &raw.header,
                &path.key("header"),
                limits::HEADER,
                "the header",
            ),
            body: self.limited(
                &raw.body,
                &path.key("body"),
                limits::INTERACTIVE_BODY,
                "the body",
            ),
            footer: self.limited_opt(
                &raw.footer,
                &path.key("footer"),
                limits::FOOTER,
                "the footer",
            ),
            flow,
            cta: self.limited(
                &raw.cta,
                &path.key("cta"),
                limits::FLOW_CTA,
                "the button label",
            ),
            mode: raw.mode.unwrap_or(WhatsAppFlowMode::Published),
            flow_token: raw
                .flow_token
                .as_ref()
                .map(|t| self.text(t, &path.key("flow_token"))),
            screen: raw.screen.clone(),
            data,
        }
    }
}
