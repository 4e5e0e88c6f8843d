//! Compiling the endpoint transformers named in `parlance.yaml`: each file must stay in
//! the bot folder, compile, and define its function. A syntax error is placed inside
//! the `.rhai` file; the other problems at the `transformers.<key>` value.

use super::node::read_bot_file;
use crate::diag::{self, Code, Diagnostic, Pos};
use crate::flow::Settings;
use crate::script::Sandbox;
use crate::source::{SourceFile, YamlPath};
use crate::transform::{Kind, Transformer, Transformers};
use std::path::{Path, PathBuf};

pub(super) fn compile(
    dir: &Path,
    config: Option<&SourceFile>,
    settings: &Settings,
    scripts: &Sandbox,
    diags: &mut Vec<Diagnostic>,
) -> Transformers {
    let mut compiled = Transformers::default();
    // Transformers are named in parlance.yaml: without the file there are none.
    let Some(config) = config else {
        return compiled;
    };
    let named = &settings.transformers;
    for kind in Kind::ALL {
        let rel = match kind {
            Kind::Input => &named.input,
            Kind::Output => &named.output,
            Kind::Finished => &named.finished,
        };
        let Some(rel) = rel else { continue };
        let path = YamlPath::root().key("transformers").key(kind.name());
        let code = match read_bot_file(dir, rel) {
            Ok(code) => code,
            Err((code, message, hint)) => {
                diags.push(config.diag_at(&path, code, message).with_hint(hint));
                continue;
            }
        };
        match scripts.compile_transformer(&code, kind.name()) {
            Ok(Some(program)) => compiled.set(
                kind,
                Transformer {
                    file: PathBuf::from(rel),
                    program,
                },
            ),
            Ok(None) => diags.push(
                config
                    .diag_at(
                        &path,
                        Code::MissingFunction,
                        format!(
                            "\"{rel}\" does not define `{}`, which the {} transformer calls",
                            kind.signature(),
                            kind.name()
                        ),
                    )
                    .with_hint(format!(
                        "define it with one parameter, e.g. `{} {{ {} }}`; see docs/scripts.md",
                        kind.signature(),
                        example_body(kind)
                    )),
            ),
            Err(e) => diags.push(
                Diagnostic::new(
                    diag::display_path(dir, Path::new(rel)),
                    Pos {
                        line: e.line.max(1),
                        column: e.column.max(1),
                    },
                    Code::ScriptSyntax,
                    format!(
                        "invalid script: {} (the {} transformer)",
                        e.message,
                        kind.name()
                    ),
                )
                .with_hint(
                    "scripts are Rhai: statements end with `;`, strings are in \"double quotes\", maps are #{ key: value }; see docs/scripts.md",
                ),
            ),
        }
    }
    compiled
}

fn example_body(kind: Kind) -> &'static str {
    match kind {
        Kind::Input => "message",
        Kind::Output => "payload",
        Kind::Finished => "profile.turns = (profile.turns ?? 0) + 1;",
    }
}
