//! `GET /dev/api/info`: the simulated bots, their live version and the diagnostics of
//! a broken edit; `GET /dev/api/graph`: a flow as Mermaid, with the ids of its nodes.

use crate::api::error::ApiError;
use crate::delivery::dev_hub::rfc3339;
use crate::delivery::runtime::Number;
use crate::diag::Diagnostic;
use crate::flow::{FlowIdx, NodeRef};
use crate::live::ReloadReport;
use crate::server::AppState;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::path::Path;

/// `GET /dev/api/info`.
pub async fn info(State(state): State<AppState>, sim: super::Sim) -> Result<Json<Value>, ApiError> {
    let bots: Vec<Value> = sim.numbers().iter().map(|n| bot_info(n)).collect();
    let hub = &state.runtime.dev;
    Ok(Json(json!({
        "bots": bots,
        "clock_offset_secs": hub.offset_secs(),
        "now": rfc3339(hub.now_ms()),
    })))
}

fn bot_info(number: &Number) -> Value {
    let bot = number.live.bot();
    let report = number.live.report();
    json!({
        "phone_number_id": number.phone_number_id,
        "name": bot.settings.name,
        "version": report.version,
        "message_delay_ms": u64::try_from(bot.settings.whatsapp.message_delay.as_millis()).unwrap_or(u64::MAX),
        "flows": bot.flows.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
        "entry": bot.flow(bot.entry).id,
        "writes_tests": super::record::writes_tests(number),
        "diagnostics": diagnostics(&report, &number.live.dir),
    })
}

/// The diagnostics of a failed (re)load, as JSON; `[]` when the files serving are the
/// ones on disk.
pub fn diagnostics(report: &ReloadReport, dir: &Path) -> Vec<Value> {
    if report.ok {
        return Vec::new();
    }
    report.found.iter().map(|d| diagnostic(d, dir)).collect()
}

/// One diagnostic, its file relative to the bot folder.
pub fn diagnostic(d: &Diagnostic, dir: &Path) -> Value {
    let file = d.file.strip_prefix(dir).unwrap_or(&d.file);
    json!({
        "file": file.to_string_lossy(),
        "line": d.line,
        "column": d.column,
        "code": d.code,
        "severity": d.severity,
        "path": d.path,
        "message": d.message,
        "hint": d.hint,
    })
}

#[derive(Deserialize)]
pub struct GraphQuery {
    /// One flow (default: every flow).
    flow: Option<String>,
    phone_number_id: Option<String>,
}

/// `GET /dev/api/graph?flow=ID`: the chart `parlance graph` draws, and each node's id in
/// it (`"main.welcome": "f0_n0"`), so the page can highlight where a user is.
pub async fn graph(sim: super::Sim, Query(q): Query<GraphQuery>) -> Result<Json<Value>, ApiError> {
    let number = sim.number(q.phone_number_id.as_deref())?;
    let bot = number.live.bot();
    let only = match q.flow.as_deref() {
        None | Some("") => None,
        Some(id) => Some(bot.flow_by_id(id).ok_or_else(|| {
            let ids: Vec<&str> = bot.flows.iter().map(|f| f.id.as_str()).collect();
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no flow \"{id}\"; the flows are: {}", ids.join(", ")),
            )
        })?),
    };
    let shown: Vec<FlowIdx> = match only {
        Some(f) => vec![f],
        None => (0..bot.flows.len())
            .filter_map(|i| u32::try_from(i).ok().map(FlowIdx))
            .collect(),
    };
    let mut nodes = Map::new();
    for f in shown {
        let flow = bot.flow(f);
        for (i, node) in flow.nodes.iter().enumerate() {
            let Ok(node_index) = u32::try_from(i) else {
                continue;
            };
            let r = NodeRef {
                flow: f,
                node: node_index,
            };
            nodes.insert(
                format!("{}.{}", flow.id, node.id),
                Value::String(crate::cli::graph::node_id(r)),
            );
        }
    }
    Ok(Json(json!({
        "mermaid": crate::cli::graph::mermaid(&bot, only),
        "nodes": nodes,
    })))
}
