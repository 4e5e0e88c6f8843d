//! `parlance chat [DIR]`: talk to the bot in the terminal, or script a conversation by
//! piping one message per line. The real engine runs without WhatsApp; `http` nodes
//! make their real calls (none with `--no-http`), shown as they happen.

use super::chat_http::ChatEffects;
use super::{EXIT_ERRORS, EXIT_OK, load_runnable};
use crate::engine::{Action, Effect, Event, EventKind, OfflineHost, Session};
use crate::flow::{Bot, MediaKind};
use crate::render::{self, terminal};
use crate::transform::{self, Sent, Step};
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

const HELP: &str = "type a message, or a number to tap a button or list row
  /location LAT LON [NAME]   share a location
  /image URL                 send an image (also /document, /audio, /video)
  /vars                      show the session's variables
  /trace                     show the nodes the last turn ran, with where they are written
  /reset                     start a new conversation
  /quit                      leave (or Ctrl-D)";

pub fn run(dir: &Path, json: bool, user: &str, name: Option<&str>, http_calls: bool) -> u8 {
    let bot = match load_runnable(dir) {
        Ok(bot) => bot,
        Err(code) => return code,
    };
    let mut effects = match ChatEffects::new(&bot.settings.http, http_calls) {
        Ok(effects) => effects,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERRORS;
        }
    };
    let host = OfflineHost {
        env: exposed_env(&bot),
    };
    let interactive = std::io::stdin().is_terminal();
    let mut out = std::io::stdout().lock();
    if interactive {
        let _ = writeln!(
            out,
            "Chatting with {} ({}). /help for commands, Ctrl-D to leave.",
            bot.settings.name,
            dir.display()
        );
    }
    let mut session = Session::new(user, now());
    let mut choices: Vec<(String, String)> = Vec::new();
    let mut counter = 0u64;
    // The nodes the last turn ran or answered, for `/trace`.
    let mut visited = Vec::new();
    let stdin = std::io::stdin();
    loop {
        if interactive {
            let _ = write!(out, "you> ");
            let _ = out.flush();
        }
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: cannot read input: {e}");
                return EXIT_ERRORS;
            }
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if !interactive && !json {
            let _ = writeln!(out, "you: {line}");
        }
        let kind = match parse_input(line, &choices) {
            Input::Quit => break,
            Input::Help => {
                let _ = writeln!(out, "{HELP}");
                continue;
            }
            Input::Vars => {
                let vars = serde_json::to_string_pretty(&session.vars).unwrap_or_default();
                let _ = writeln!(out, "{vars}");
                continue;
            }
            Input::Trace => {
                for r in &visited {
                    let v = crate::engine::visit_of(&bot, *r);
                    let _ = writeln!(
                        out,
                        "  {}.{} ({}) {}",
                        v.at.flow, v.at.node, v.kind, v.source
                    );
                }
                if visited.is_empty() {
                    let _ = writeln!(out, "(no node ran in the last turn)");
                }
                continue;
            }
            Input::Reset => {
                session = Session::new(user, now());
                choices.clear();
                let _ = writeln!(out, "(new conversation)");
                continue;
            }
            Input::Invalid(why) => {
                let _ = writeln!(out, "({why}; /help for commands)");
                continue;
            }
            Input::Event(kind) => kind,
        };
        counter += 1;
        let event = Event {
            id: Some(format!("wamid.chat.{counter}")),
            at: now(),
            contact_name: name.map(str::to_string),
            kind,
        };
        let turn = transform::run(&bot, session, &event, now(), &host, &mut effects, user);
        session = turn.session;
        visited = turn.visited;
        if turn.dropped && !json {
            let _ = writeln!(out, "     (the input transformer dropped this message)");
        }
        // Numbers tap the choices of the bot's latest message only (a dropped message
        // got no answer, so the latest one is still the one before).
        if !turn.dropped {
            choices.clear();
        }
        for step in &turn.steps {
            match step {
                Step::Send(sent) => print_sent(&mut out, sent, json, &mut choices),
                Step::Other(action) => {
                    print_action(&mut out, &bot, action, json, &mut effects.calls)
                }
                Step::TransformerFailed(p) => eprintln!("warning: {p}"),
            }
        }
    }
    EXIT_OK
}

/// A message the bot sends: as the user would see it, or its payload with `--json`.
fn print_sent(out: &mut impl Write, sent: &Sent, json: bool, choices: &mut Vec<(String, String)>) {
    let o = &sent.out;
    *choices = terminal::choices(&o.message);
    if !sent.transformed
        && let Err(problems) = render::check(&sent.payload)
    {
        eprintln!(
            "error: {}.{} rendered a payload WhatsApp would reject: {}",
            o.at.flow,
            o.at.node,
            problems.join("; ")
        );
    }
    let _ = if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(&sent.payload).unwrap_or_default()
        )
    } else {
        // A payload the output transformer changed is shown from the payload: the
        // engine's message no longer says what the user gets.
        let lines = if sent.transformed {
            transform::payload_lines(&sent.payload)
        } else {
            terminal::describe(&o.message)
        };
        let mut text = String::new();
        for (i, l) in lines.iter().enumerate() {
            text.push_str(if i == 0 { "bot: " } else { "     " });
            text.push_str(l);
            text.push('\n');
        }
        write!(out, "{text}")
    };
}

fn print_action(
    out: &mut impl Write,
    bot: &Bot,
    action: &Action,
    json: bool,
    calls: &mut std::collections::VecDeque<String>,
) {
    let _ = match action {
        // The performer noted each call as it made it, in order.
        Action::Effect {
            effect: Effect::Http(_),
            ..
        } => match calls.pop_front() {
            Some(line) if !json => writeln!(out, "     {line}"),
            Some(_) | None => Ok(()),
        },
        // Messages come as `Step::Send`.
        Action::Send(_) => Ok(()),
        Action::Pause(d) if !json => writeln!(out, "     (typing… {}s)", d.as_secs_f32()),
        Action::Ended if !json => writeln!(
            out,
            "     — conversation ended; your next message starts a new one —"
        ),
        Action::HandoverStarted { queue, .. } if !json => {
            writeln!(
                out,
                "     — handed over to a human{} —",
                queue
                    .as_ref()
                    .map(|q| format!(" ({q})"))
                    .unwrap_or_default()
            )
        }
        Action::ToAgent if !json => writeln!(out, "     (forwarded to the agent)"),
        Action::Warning(p) => {
            eprintln!("warning: {p}");
            Ok(())
        }
        Action::Error(p) => {
            eprintln!("error: {p}");
            let _ = bot;
            Ok(())
        }
        _ => Ok(()),
    };
}

enum Input {
    Event(EventKind),
    Help,
    Vars,
    Trace,
    Reset,
    Quit,
    Invalid(String),
}

fn parse_input(line: &str, choices: &[(String, String)]) -> Input {
    let trimmed = line.trim();
    if let Ok(n) = trimmed.parse::<usize>()
        && let Some((id, title)) = n.checked_sub(1).and_then(|i| choices.get(i))
    {
        return Input::Event(EventKind::Reply {
            id: id.clone(),
            title: title.clone(),
        });
    }
    let Some(command) = trimmed.strip_prefix('/') else {
        return Input::Event(EventKind::Text(line.to_string()));
    };
    let mut words = command.split_whitespace();
    let media = |kind: MediaKind, url: Option<&str>| match url {
        Some(url) => Input::Event(EventKind::Media {
            kind,
            id: url.to_string(),
            mime_type: None,
            caption: None,
            filename: url.rsplit('/').next().map(str::to_string),
        }),
        None => Input::Invalid(format!("/{} needs a URL", kind.name())),
    };
    match words.next().unwrap_or_default() {
        "help" | "?" => Input::Help,
        "vars" => Input::Vars,
        "trace" => Input::Trace,
        "reset" => Input::Reset,
        "quit" | "exit" => Input::Quit,
        "location" => {
            let lat = words.next().and_then(|w| w.parse::<f64>().ok());
            let lon = words.next().and_then(|w| w.parse::<f64>().ok());
            let rest: Vec<&str> = words.collect();
            match (lat, lon) {
                (Some(latitude), Some(longitude)) => Input::Event(EventKind::Location {
                    latitude,
                    longitude,
                    name: (!rest.is_empty()).then(|| rest.join(" ")),
                    address: None,
                }),
                _ => Input::Invalid(
                    "/location needs a latitude and a longitude, e.g. /location 52.52 13.40".into(),
                ),
            }
        }
        "image" => media(MediaKind::Image, words.next()),
        "document" => media(MediaKind::Document, words.next()),
        "audio" => media(MediaKind::Audio, words.next()),
        "video" => media(MediaKind::Video, words.next()),
        other => Input::Invalid(format!("unknown command /{other}")),
    }
}

/// `env` for templates: only the variables the bot lists in `expose_env`.
pub(crate) fn exposed_env(bot: &Bot) -> serde_json::Map<String, serde_json::Value> {
    crate::delivery::runtime::exposed_env(&bot.settings.expose_env)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
