//! Stages 2–3: validate a bot folder (schema, then meaning) and compile it into an
//! immutable [`Bot`].
//!
//! One pass collects every diagnostic: a file with a syntax error is skipped but the
//! others are still checked; a node that breaks the schema is compiled without its
//! broken parts (`prune`), so its other mistakes are reported too, what it saves still
//! counts and targets to it still resolve. The bot is built only when there is no
//! error, and "no error" includes "this build can run it" (`not_supported`,
//! `endless_loop`, `wait_too_long`...): startup, `validate`, `test`, `chat` and hot
//! reload all call [`load_bot`], so what `validate` passes, `serve` runs.

mod config;
mod graph;
mod interpolated;
mod node;
mod prune;
pub mod schema;
mod script;
mod serving;
mod transformers;

pub use node::parse_duration;

use crate::diag::{self, Code, Diagnostic, Pos};
use crate::flow::{Bot, Flow, FlowIdx, Templates};
use crate::source::env::{EnvLookup, process_env};
use crate::source::{self, SourceFile, YamlPath};
use crate::spec::FileKind;
use crate::spec::config::RawConfig;
use crate::spec::flow::{RawNode, RawTrigger};
use crate::spec::test::RawTestFile;
use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The result of loading a bot folder: the bot when it has no errors, and everything
/// found (warnings come with a bot too).
#[derive(Debug)]
pub struct Loaded {
    pub bot: Option<Bot>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Loads the bot in `dir`, reading `${NAME}` from the process environment.
pub fn load_bot(dir: &Path) -> Loaded {
    load_bot_with_env(dir, &process_env)
}

/// Loads the bot in `dir` with the given environment.
pub fn load_bot_with_env(dir: &Path, env: EnvLookup<'_>) -> Loaded {
    load_bot_allowing(dir, env, &[])
}

/// Errors that refuse a bot this build cannot (or must not) run, although everything in
/// it compiled: such a bot is complete, so its own tests can still build it.
pub const COMPLETE_BUT_REFUSED: &[Code] = &[
    Code::NotSupported,
    Code::EndlessLoop,
    Code::UnsetVariable,
    Code::WaitTooLong,
];

/// Loads the bot like [`load_bot_with_env`], but still builds it when every error has
/// one of the `allowed` codes (only those in [`COMPLETE_BUT_REFUSED`] count). For the
/// engine's and compiler's own tests, whose fixture bots hold on purpose what `serve`
/// refuses (effect nodes, loops, unset variables) to test how the engine handles them.
/// `validate`, `serve`, `chat` and `test` never use it.
pub fn load_bot_allowing(dir: &Path, env: EnvLookup<'_>, allowed: &[Code]) -> Loaded {
    let mut diags = Vec::new();
    let bot = load(dir, env, &mut diags);
    diag::sort(&mut diags);
    let blocking = |d: &Diagnostic| {
        d.is_error() && !(allowed.contains(&d.code) && COMPLETE_BUT_REFUSED.contains(&d.code))
    };
    let bot = if diags.iter().any(blocking) {
        None
    } else {
        bot
    };
    Loaded {
        bot,
        diagnostics: diags,
    }
}

/// A flow file after reading and schema validation, before compiling.
pub(crate) struct FlowSource {
    pub file: SourceFile,
    pub id: String,
    pub description: Option<String>,
    pub interruptible: bool,
    /// Triggers that deserialized, with their index in the file.
    pub triggers: Vec<(usize, RawTrigger)>,
    /// Every node id in order; `None` where the node itself is unusable (already reported).
    /// A node with schema errors is here without its broken parts.
    pub nodes: IndexMap<String, Option<RawNode>>,
    /// Nodes with schema errors: compiled from what parsed, so checks of the whole graph
    /// (loops) must not trust them.
    pub broken_nodes: HashSet<String>,
    /// Variables that nodes and triggers with schema errors assign as written (`save`,
    /// `set` keys, regex groups), whether or not that part survived.
    pub assigned_in_broken: Vec<String>,
}

fn load(dir: &Path, env: EnvLookup<'_>, diags: &mut Vec<Diagnostic>) -> Option<Bot> {
    if !dir.is_dir() {
        let message = if dir.exists() {
            format!("{} is not a folder", dir.display())
        } else {
            format!("no such folder: {}", dir.display())
        };
        diags.push(
            Diagnostic::new(dir, Pos::START, Code::NotFound, message)
                .with_hint("give the path of a bot folder (one with flows/ and parlance.yaml)"),
        );
        return None;
    }

    let config_file = ["parlance.yaml", "parlance.yml"]
        .iter()
        .map(Path::new)
        .find(|rel| dir.join(rel).is_file())
        .map(|rel| source::read_file(dir, rel, Some(env), false, diags));
    let raw_config: RawConfig = match &config_file {
        Some(file) => read_whole(file, FileKind::Config, diags).unwrap_or_default(),
        None => RawConfig::default(),
    };

    let flow_paths = source::yaml_files(dir, "flows", diags);
    if flow_paths.is_empty() {
        // An unreadable or refused flows/ entry was reported already; "no flows" would mislead.
        if !diags
            .iter()
            .any(|d| matches!(d.code, Code::Io | Code::OutsideBotFolder))
        {
            diags.push(
                Diagnostic::new(
                    diag::display_path(dir, Path::new("flows")),
                    Pos::START,
                    Code::NoFlows,
                    "no flow files found",
                )
                .with_hint("create flows/main.yaml with `nodes:`; flow files end in .yaml or .yml"),
            );
        }
        return None;
    }

    let mut unreadable: HashSet<String> = HashSet::new();
    let mut sources: Vec<FlowSource> = Vec::new();
    for (stem, src, found) in read_flows(dir, &flow_paths) {
        diags.extend(found);
        match src {
            Some(src) => sources.push(src),
            // Targets to a flow we could not read are not reported again.
            None => {
                unreadable.insert(stem);
            }
        }
    }
    remove_duplicate_flows(&mut sources, diags);

    let settings = config::resolve(dir, config_file.as_ref(), &raw_config, diags);
    let scripts = crate::script::Sandbox::new(settings.scripts);
    let names = node::Names::new(&sources, unreadable);
    let numbered: Vec<(usize, &FlowSource)> = sources.iter().enumerate().collect();
    let compiled = par_map(&numbered, |(i, src)| {
        let ctx = node::Ctx {
            dir,
            file: &src.file,
            flow: FlowIdx(*i as u32),
            names: &names,
            expose_env: &settings.expose_env,
            scripts: &scripts,
            templates: Templates::new(),
            template_count: 0,
            var_reads: Vec::new(),
            assigned_elsewhere: Vec::new(),
            diags: Vec::new(),
        };
        ctx.compile_flow(src)
    });
    let mut flows: Vec<Flow> = Vec::with_capacity(sources.len());
    let mut var_reads = Vec::new();
    let mut assigned_elsewhere: Vec<String> = sources
        .iter()
        .flat_map(|s| s.assigned_in_broken.iter().cloned())
        .collect();
    for c in compiled {
        flows.push(c.flow);
        var_reads.extend(c.var_reads);
        assigned_elsewhere.extend(c.assigned_elsewhere);
        diags.extend(c.diags);
    }
    graph::check(&sources, &flows, diags);
    config::check_handover_nodes(&sources, &flows, &settings, diags);
    let transformers = transformers::compile(dir, config_file.as_ref(), &settings, &scripts, diags);
    // A flow file that could not be read may save anything: report unset variables once
    // it reads. Transformers may set any variable, and so may an agent's resolve.
    let named = &settings.transformers;
    let transformed = named.input.is_some() || named.output.is_some() || named.finished.is_some();
    // An agent's resolve may set any variable too (its `vars`).
    let hands_over = flows.iter().any(|f| {
        f.nodes
            .iter()
            .any(|n| matches!(n.kind, crate::flow::NodeKind::Handover(_)))
    });
    if !names.has_unreadable() && !transformed && !hands_over {
        graph::unset_variables(&flows, assigned_elsewhere.iter(), var_reads, diags);
    }

    let (entry, fallback) =
        config::entry_and_fallback(dir, config_file.as_ref(), &raw_config, &names, diags)?;
    let mut bot = Bot::new(settings, scripts, entry, fallback, flows);
    bot.transformers = transformers;
    Some(bot)
}

/// A flow file read: its stem, the source when usable, and what was found.
type ReadFlow = (String, Option<FlowSource>, Vec<Diagnostic>);

/// Reads, parses and schema-checks flow files on every core: files are independent
/// until compiling, and for a large bot this is most of the load time. Results keep
/// the files' order.
fn read_flows(dir: &Path, paths: &[PathBuf]) -> Vec<ReadFlow> {
    par_map(paths, |rel| {
        let mut found = Vec::new();
        let file = source::read_file(dir, rel, None, true, &mut found);
        name_duplicate_nodes(&file, &mut found);
        let stem = rel
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let src = read_flow(file, &stem, &mut found);
        (stem, src, found)
    })
}

/// `items.iter().map(f)` on every core, in order. Small inputs stay on this thread.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if workers == 1 || items.len() < 16 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(workers);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            // A worker only panics on a bug in Parlance; surface it rather than lose work.
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Validates a whole file against its schema and deserializes it.
fn read_whole<T: DeserializeOwned>(
    file: &SourceFile,
    kind: FileKind,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let tree = file.tree.as_ref()?;
    let mut json = tree.to_json();
    interpolated::retype(&mut json, &file.interpolated, kind.cached_schema());
    let check = schema::check(file, kind, &json);
    let ok = check.diagnostics.is_empty();
    diags.extend(check.diagnostics);
    if !ok {
        return None;
    }
    deserialize(file, &YamlPath::root(), json, diags)
}

/// The hint of a `schema` error, which only a Parlance bug produces.
const SCHEMA_BUG_HINT: &str = "the schema and Parlance disagree about this value, a Parlance bug; please report it with this file";

/// Deserializes a part that passed the schema. Failing here means the schema and the
/// types disagree, a bug, which we still report rather than hide.
pub(crate) fn deserialize<T: DeserializeOwned>(
    file: &SourceFile,
    path: &YamlPath,
    json: Value,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    match serde_json::from_value(json) {
        Ok(v) => Some(v),
        Err(e) => {
            diags.push(
                file.diag_at(path, Code::Schema, e.to_string())
                    .with_hint(SCHEMA_BUG_HINT),
            );
            None
        }
    }
}

fn read_flow(file: SourceFile, stem: &str, diags: &mut Vec<Diagnostic>) -> Option<FlowSource> {
    let json = file.tree.as_ref()?.to_json();
    let check = schema::check(&file, FileKind::Flow, &json);
    diags.extend(check.diagnostics.iter().cloned());
    let obj = json.as_object()?;
    let id = obj
        .get("id")
        .and_then(Value::as_str)
        .map_or_else(|| stem.to_string(), str::to_string);
    let description = obj
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string);
    let interruptible = obj
        .get("interruptible")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let mut triggers = Vec::new();
    let mut assigned_in_broken = Vec::new();
    if let Some(list) = obj.get("triggers").and_then(Value::as_array) {
        for (i, t) in list.iter().enumerate() {
            let pointer = format!("/triggers/{i}");
            if check.is_bad(&pointer) {
                // Left out, but its regex's groups are variables the flows may read.
                let regex = t.get("regex").and_then(Value::as_str).unwrap_or_default();
                assigned_in_broken.extend(prune::regex_group_names(regex));
                continue;
            }
            let path = YamlPath::root().key("triggers").index(i);
            if let Some(t) = deserialize(&file, &path, t.clone(), diags) {
                triggers.push((i, t));
            }
        }
    }
    let mut nodes = IndexMap::new();
    let mut broken_nodes = HashSet::new();
    if let Some(map) = obj.get("nodes").and_then(Value::as_object) {
        for (id, value) in map {
            let pointer = format!("/nodes/{}", schema::escape_pointer(id));
            let bad: Vec<&str> = check
                .bad_pointers
                .iter()
                .filter_map(|p| {
                    let rest = p.strip_prefix(&pointer)?;
                    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
                })
                .collect();
            // A repeated key (or node) keeps its last value: the node may not be what
            // the designer meant, so whole-graph checks must not trust it either.
            let node_path = YamlPath::root().key("nodes").key(id).to_string();
            let repeated = !diags.is_empty()
                && diags.iter().any(|d| {
                    matches!(d.code, Code::DuplicateKey | Code::DuplicateNode)
                        && d.file == file.display
                        && d.path
                            .strip_prefix(&node_path)
                            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
                });
            if repeated {
                broken_nodes.insert(id.clone());
            }
            let raw = if bad.is_empty() {
                match serde_json::from_value::<RawNode>(value.clone()) {
                    Ok(raw) => Some(raw),
                    Err(e) => {
                        diags.push(
                            file.diag_at(
                                &YamlPath::root().key("nodes").key(id),
                                Code::Schema,
                                e.to_string(),
                            )
                            .with_hint(SCHEMA_BUG_HINT),
                        );
                        None
                    }
                }
            } else {
                // Reported by the schema check; compile the rest so the node's other
                // mistakes show up in this run too.
                broken_nodes.insert(id.clone());
                assigned_in_broken.extend(prune::assigned_names(value));
                prune::parse_without(value, &bad)
            };
            nodes.insert(id.clone(), raw);
        }
    }
    Some(FlowSource {
        file,
        id,
        description,
        interruptible,
        triggers,
        nodes,
        broken_nodes,
        assigned_in_broken,
    })
}

fn remove_duplicate_flows(sources: &mut Vec<FlowSource>, diags: &mut Vec<Diagnostic>) {
    let mut seen: Vec<(String, PathBuf)> = Vec::new();
    sources.retain(|src| {
        if let Some((_, first)) = seen.iter().find(|(id, _)| *id == src.id) {
            let path = YamlPath::root().key("id");
            let has_id = src.file.node(&path).is_some();
            let diag = if has_id {
                src.file.diag_at(&path, Code::DuplicateFlow, "")
            } else {
                Diagnostic::new(&src.file.display, Pos::START, Code::DuplicateFlow, "")
            };
            diags.push(Diagnostic {
                message: format!(
                    "flow \"{}\" is already defined in {}",
                    src.id,
                    first.display()
                ),
                hint: Some(if has_id {
                    "give each flow a unique `id:`".into()
                } else {
                    "the id defaults to the file name; set a unique `id:` or rename the file".into()
                }),
                ..diag
            });
            false
        } else {
            seen.push((src.id.clone(), src.file.display.clone()));
            true
        }
    });
}

/// A repeated key under `nodes:` is a duplicate node id: say so in those words.
fn name_duplicate_nodes(file: &SourceFile, diags: &mut [Diagnostic]) {
    for d in diags.iter_mut() {
        let is_node_key = d
            .path
            .strip_prefix("nodes.")
            .is_some_and(|id| !id.contains('.') && !id.contains('['));
        if d.file == file.display && d.code == Code::DuplicateKey && is_node_key {
            d.code = Code::DuplicateNode;
            d.severity = Code::DuplicateNode.severity();
            d.message = d.message.replacen("key", "node", 1);
            d.hint = Some("node ids must be unique in a flow; rename one of them".into());
        }
    }
}

/// The conversation tests of a bot folder (`tests/**/*.yaml`), read and schema-checked.
#[derive(Debug)]
pub struct LoadedTests {
    /// Every test file that passed its schema, in file order.
    pub files: Vec<(SourceFile, RawTestFile)>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads and checks the bot's conversation tests. `validate` reports their problems
/// with the flows'; `parlance test` runs the ones that passed.
pub fn load_tests(dir: &Path) -> LoadedTests {
    let mut diagnostics = Vec::new();
    let mut files = Vec::new();
    for rel in source::yaml_files(dir, "tests", &mut diagnostics) {
        let file = source::read_file(dir, &rel, None, true, &mut diagnostics);
        if let Some(test) = read_whole::<RawTestFile>(&file, FileKind::Test, &mut diagnostics) {
            files.push((file, test));
        }
    }
    diag::sort(&mut diagnostics);
    LoadedTests { files, diagnostics }
}

/// Reads one conversation test from `text`, as [`load_tests`] reads a file at `rel`
/// (relative to the bot folder): the test, or the diagnostics that stop it. For tests
/// made by a program (the `/dev` simulator's recorder) before they are written.
pub fn read_test_text(
    rel: &Path,
    text: &str,
) -> Result<(SourceFile, RawTestFile), Vec<Diagnostic>> {
    let parsed = source::yaml::parse(text, None);
    let mut diagnostics: Vec<Diagnostic> = parsed
        .problems
        .into_iter()
        .map(|p| {
            Diagnostic::new(rel, p.pos, p.code, p.message)
                .at_path(p.path.to_string())
                .maybe_hint(p.hint)
        })
        .collect();
    let file = SourceFile {
        rel: rel.to_path_buf(),
        display: rel.to_path_buf(),
        tree: parsed.tree,
        interpolated: parsed.interpolated,
        text: text.to_string(),
    };
    let test = read_whole::<RawTestFile>(&file, FileKind::Test, &mut diagnostics);
    match test {
        Some(test) if !diagnostics.iter().any(Diagnostic::is_error) => Ok((file, test)),
        Some(_) | None => {
            diag::sort(&mut diagnostics);
            Err(diagnostics)
        }
    }
}
