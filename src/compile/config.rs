//! `parlance.yaml` → [`Settings`]: defaults applied, durations parsed, files checked,
//! entry and fallback flows resolved.

use super::node::{Names, is_identifier, parse_duration};
use crate::diag::{self, Code, Diagnostic, Pos, did_you_mean};
use crate::flow::settings::{
    DEFAULT_HTTP_MAX_BODY_BYTES, DEFAULT_MESSAGES_PER_SECOND, DevMode, HandoverSettings,
    HttpSettings, TurnLimits,
};
use crate::flow::{FlowIdx, Settings, Transformers, WhatsAppSettings};
use crate::script;
use crate::source::{SourceFile, YamlPath};
use crate::spec::config::RawConfig;
use std::path::Path;
use std::time::Duration;

pub const DEFAULT_API_VERSION: &str = "v23.0";
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com";
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(30 * 60);
pub const DEFAULT_STORE: &str = "sqlite://data/parlance.db";

pub(crate) fn resolve(
    dir: &Path,
    file: Option<&SourceFile>,
    raw: &RawConfig,
    diags: &mut Vec<Diagnostic>,
) -> Settings {
    let mut duration = |value: &Option<String>, path: YamlPath, default: Duration| match value {
        None => default,
        Some(text) => parse_duration(text).unwrap_or_else(|message| {
            if let Some(file) = file {
                diags.push(
                    file.diag_at(&path, Code::BadDuration, message)
                        .with_hint("write durations like 30s, 5m, 2h or 7d"),
                );
            }
            default
        }),
    };
    let session = raw.session.clone().unwrap_or_default();
    let privacy = raw.privacy.clone().unwrap_or_default();
    let session_timeout = duration(
        &session.timeout,
        YamlPath::root().key("session").key("timeout"),
        DEFAULT_SESSION_TIMEOUT,
    );
    let keep_transcripts = duration(
        &privacy.keep_transcripts,
        YamlPath::root().key("privacy").key("keep_transcripts"),
        Duration::ZERO,
    );

    let wa = raw.whatsapp.clone().unwrap_or_default();
    let store = session.store.unwrap_or_else(|| DEFAULT_STORE.into());
    if let Some(file) = file {
        super::serving::check_whatsapp(file, &wa, diags);
        super::serving::check_store(file, &store, diags);
    }
    // An empty value is an absent one: `${WA_ACCESS_TOKEN:-}` means "local unless set".
    let given = |v: Option<String>| v.filter(|s| !s.is_empty());
    let whatsapp = WhatsAppSettings {
        app_id: given(wa.app_id),
        access_token: given(wa.access_token),
        phone_number_id: given(wa.phone_number_id),
        verify_token: given(wa.verify_token),
        app_secret: given(wa.app_secret),
        allow_unsigned: wa.allow_unsigned.unwrap_or(false),
        message_delay: Duration::from_millis(wa.message_delay_ms.unwrap_or(0)),
        api_version: wa.api_version.unwrap_or_else(|| DEFAULT_API_VERSION.into()),
        base_url: wa.base_url.unwrap_or_else(|| DEFAULT_BASE_URL.into()),
        mark_as_read: wa.mark_as_read.unwrap_or(false),
        typing_indicator: wa.typing_indicator.unwrap_or(false),
        max_messages_per_second: wa
            .max_messages_per_second
            .unwrap_or(DEFAULT_MESSAGES_PER_SECOND),
    };

    let transformers = raw.transformers.clone().unwrap_or_default();
    if let Some(file) = file {
        for (i, name) in raw.expose_env.iter().enumerate() {
            if !is_identifier(name) {
                diags.push(
                    file.diag_at(
                        &YamlPath::root().key("expose_env").index(i),
                        Code::InvalidValue,
                        format!("\"{name}\" is not an environment variable name"),
                    )
                    .with_hint("list names only, like SHOP_URL: letters, digits and _, not starting with a digit"),
                );
            }
        }
    }

    let name = raw
        .bot
        .as_ref()
        .and_then(|b| b.name.clone())
        .unwrap_or_else(|| {
            std::fs::canonicalize(dir)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "bot".into())
        });
    let dev = dev_mode(file, raw, &whatsapp, diags);
    Settings {
        name,
        whatsapp,
        session_timeout,
        store,
        overflow: raw
            .render
            .as_ref()
            .and_then(|r| r.overflow)
            .unwrap_or_default(),
        expose_env: raw.expose_env.clone(),
        transformers: Transformers {
            input: transformers.input,
            output: transformers.output,
            finished: transformers.finished,
        },
        dev,
        api_key: raw
            .api
            .as_ref()
            .and_then(|a| a.key.clone())
            .filter(|k| !k.is_empty()),
        mask_logs: privacy.mask_logs.unwrap_or(true),
        keep_transcripts,
        limits: turn_limits(raw),
        scripts: script_limits(file, raw, diags),
        http: http_settings(file, raw, diags),
        handover: handover_settings(file, raw, diags),
    }
}

/// `dev.enabled`. On beside WhatsApp credentials, the simulator acts as the bot and
/// shows its traces, so it needs `api.key` to be behind: without one it is an error,
/// never a page open to anyone who reaches the server.
fn dev_mode(
    file: Option<&SourceFile>,
    raw: &RawConfig,
    whatsapp: &WhatsAppSettings,
    diags: &mut Vec<Diagnostic>,
) -> DevMode {
    let Some(enabled) = raw.dev.as_ref().and_then(|d| d.enabled) else {
        return DevMode::Default;
    };
    if !enabled {
        return DevMode::Off;
    }
    let keyed = raw
        .api
        .as_ref()
        .and_then(|a| a.key.as_deref())
        .is_some_and(|k| !k.is_empty());
    if !whatsapp.is_local() && !keyed {
        if let Some(file) = file {
            diags.push(
                file.diag_at(
                    &YamlPath::root().key("dev").key("enabled"),
                    Code::MissingField,
                    "dev.enabled serves the simulator beside a real WhatsApp number, which needs api.key: the page and its routes answer only requests that carry the key",
                )
                .with_hint("set api.key: ${PARLANCE_API_KEY} (then the page asks for the key), or remove dev.enabled"),
            );
        }
        return DevMode::Off;
    }
    DevMode::On
}

/// `handover:`: the agent inbox's webhook and the secret deliveries are signed with,
/// both or neither (empty values count as absent, like `whatsapp:`). A webhook that is
/// not an http(s) URL, or one without a secret, is an error: deliveries would fail, or
/// go out unsigned for anyone to forge.
fn handover_settings(
    file: Option<&SourceFile>,
    raw: &RawConfig,
    diags: &mut Vec<Diagnostic>,
) -> Option<HandoverSettings> {
    let h = raw.handover.clone()?;
    let given = |v: Option<String>| v.filter(|s| !s.is_empty());
    let (webhook, secret) = (given(h.webhook), given(h.secret));
    let at = YamlPath::root().key("handover");
    let mut report = |diag: Diagnostic| {
        // A value already reported (an unset `${NAME}`) would only repeat that error.
        let reported = diags
            .iter()
            .any(|d| d.file == diag.file && d.path.starts_with("handover"));
        if !reported {
            diags.push(diag);
        }
    };
    match (webhook, secret) {
        (None, None) => None,
        (Some(webhook), secret) => {
            let url_ok = url::Url::parse(&webhook)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if let Some(file) = file {
                if !url_ok {
                    report(
                        file.diag_at(
                            &at.key("webhook"),
                            Code::InvalidValue,
                            format!("\"{webhook}\" is not an http or https URL"),
                        )
                        .with_hint("write the agent inbox's full URL, e.g. https://agents.example.com/parlance"),
                    );
                }
                if secret.is_none() {
                    report(
                        file.diag_at_key(
                            &at,
                            Code::MissingField,
                            "`secret` is missing: deliveries to the agent webhook are signed with it, so the receiver can tell they come from this bot",
                        )
                        .with_hint("set secret: ${AGENT_WEBHOOK_SECRET} and give the agent inbox the same value"),
                    );
                }
            }
            Some(HandoverSettings {
                webhook,
                secret: secret?,
            })
            .filter(|_| url_ok)
        }
        (None, Some(_)) => {
            if let Some(file) = file {
                report(
                    file.diag_at_key(
                        &at,
                        Code::MissingField,
                        "`webhook` is missing: handovers need the agent inbox's URL",
                    )
                    .with_hint("set webhook: ${AGENT_WEBHOOK_URL}, or remove `handover:`"),
                );
            }
            None
        }
    }
}

/// A diagnostic for each `handover` node of a bot without `handover.webhook`: the
/// conversation would have nowhere to go.
pub(crate) fn check_handover_nodes(
    sources: &[super::FlowSource],
    flows: &[crate::flow::Flow],
    settings: &Settings,
    diags: &mut Vec<Diagnostic>,
) {
    if settings.handover.is_some() {
        return;
    }
    for (src, flow) in sources.iter().zip(flows) {
        for node in &flow.nodes {
            if let crate::flow::NodeKind::Handover(_) = node.kind {
                diags.push(
                    src.file
                        .diag_at_key(
                            &YamlPath::root().key("nodes").key(&node.id).key("handover"),
                            Code::MissingField,
                            format!(
                                "handover node \"{}\" has no agent inbox to hand over to: parlance.yaml has no `handover.webhook`",
                                node.id
                            ),
                        )
                        .with_hint("add to parlance.yaml: handover: { webhook: ${AGENT_WEBHOOK_URL}, secret: ${AGENT_WEBHOOK_SECRET} }"),
                );
            }
        }
    }
}

/// `http:`, defaults applied. Each `allow_hosts` entry must be a bare host: a URL or a
/// `host:port` would never match and silently refuse every call.
fn http_settings(
    file: Option<&SourceFile>,
    raw: &RawConfig,
    diags: &mut Vec<Diagnostic>,
) -> HttpSettings {
    let h = raw.http.clone().unwrap_or_default();
    if let (Some(file), Some(hosts)) = (file, &h.allow_hosts) {
        for (i, entry) in hosts.iter().enumerate() {
            if let Err(bad) = crate::http::guard::parse_allowed_host(entry) {
                diags.push(
                    file.diag_at(
                        &YamlPath::root().key("http").key("allow_hosts").index(i),
                        Code::InvalidValue,
                        bad.message,
                    )
                    .with_hint(bad.hint),
                );
            }
        }
    }
    HttpSettings {
        allow_hosts: h.allow_hosts,
        max_body_bytes: h.max_body_bytes.unwrap_or(DEFAULT_HTTP_MAX_BODY_BYTES),
    }
}

/// `scripts:`, defaults applied. The schema keeps each number at 1 or more (and depths
/// where a native stack holds them); the timeout is a duration of at most 1s.
fn script_limits(
    file: Option<&SourceFile>,
    raw: &RawConfig,
    diags: &mut Vec<Diagnostic>,
) -> script::Limits {
    let s = raw.scripts.clone().unwrap_or_default();
    let d = script::Limits::default();
    let path = YamlPath::root().key("scripts").key("timeout");
    let timeout = match &s.timeout {
        None => d.timeout,
        Some(text) => match parse_duration(text) {
            Ok(t) if t.is_zero() || t > script::limits::MAX_TIMEOUT => {
                if let Some(file) = file {
                    diags.push(
                        file.diag_at(&path, Code::InvalidValue, format!("a script timeout of {text} is not allowed; it must be more than 0 and at most 1s"))
                            .with_hint("scripts run inside a turn and should take microseconds; the default is 100ms"),
                    );
                }
                d.timeout
            }
            Ok(t) => t,
            Err(message) => {
                if let Some(file) = file {
                    diags.push(
                        file.diag_at(&path, Code::BadDuration, message)
                            .with_hint("write durations like 50ms, 100ms or 1s"),
                    );
                }
                d.timeout
            }
        },
    };
    let size = |v: Option<u32>, default: usize| v.map_or(default, |n| n as usize);
    script::Limits {
        max_operations: s.max_operations.unwrap_or(d.max_operations),
        max_call_depth: size(s.max_call_depth, d.max_call_depth),
        max_expr_depth: size(s.max_expr_depth, d.max_expr_depth),
        max_string_size: size(s.max_string_size, d.max_string_size),
        max_array_size: size(s.max_array_size, d.max_array_size),
        max_map_size: size(s.max_map_size, d.max_map_size),
        timeout,
    }
}

/// `limits:`, defaults applied. The schema keeps each value at 1 or more.
fn turn_limits(raw: &RawConfig) -> TurnLimits {
    let limits = raw.limits.clone().unwrap_or_default();
    let default = TurnLimits::default();
    TurnLimits {
        messages_per_turn: limits
            .messages_per_turn
            .unwrap_or(default.messages_per_turn),
        nodes_per_turn: limits.nodes_per_turn.unwrap_or(default.nodes_per_turn),
    }
}

/// The flow conversations start in, and the one that handles what nothing understands.
pub(crate) fn entry_and_fallback(
    dir: &Path,
    file: Option<&SourceFile>,
    raw: &RawConfig,
    names: &Names,
    diags: &mut Vec<Diagnostic>,
) -> Option<(FlowIdx, FlowIdx)> {
    let bot = raw.bot.clone().unwrap_or_default();
    let lookup = |id: &str, key: &str, diags: &mut Vec<Diagnostic>| -> Option<FlowIdx> {
        if let Some(idx) = names.flow(id) {
            return Some(idx);
        }
        if names.is_unreadable(id) {
            return None;
        }
        let hint = did_you_mean(id, names.flow_ids())
            .map(|c| format!("did you mean \"{c}\"?"))
            .unwrap_or_else(|| {
                format!("flows: {}", names.flow_ids().collect::<Vec<_>>().join(", "))
            });
        let diag = match file {
            Some(f) => f.diag_at(
                &YamlPath::root().key("bot").key(key),
                Code::UnknownFlow,
                format!("no flow named \"{id}\""),
            ),
            None => Diagnostic::new(
                diag::display_path(dir, Path::new("flows")),
                Pos::START,
                Code::UnknownFlow,
                format!("no flow named \"{id}\""),
            ),
        };
        diags.push(diag.with_hint(hint));
        None
    };
    let entry = match &bot.entry {
        Some(id) => lookup(id, "entry", diags),
        None => {
            let ids: Vec<&str> = names.flow_ids().collect();
            match (names.flow("main"), ids.as_slice()) {
                (Some(main), _) => Some(main),
                (None, [_only]) => Some(FlowIdx(0)),
                (None, _) if names.is_unreadable("main") => None,
                (None, _) => {
                    let where_ = file.map_or_else(
                        || diag::display_path(dir, Path::new("parlance.yaml")),
                        |f| f.display.clone(),
                    );
                    diags.push(
                        Diagnostic::new(
                            where_,
                            Pos::START,
                            Code::UnknownFlow,
                            "no entry flow: there is no flow \"main\"",
                        )
                        .with_hint(format!(
                            "set bot.entry in parlance.yaml to one of: {}",
                            ids.join(", ")
                        )),
                    );
                    None
                }
            }
        }
    };
    let fallback = match &bot.fallback {
        Some(id) => lookup(id, "fallback", diags),
        None => entry,
    };
    Some((entry?, fallback?))
}
