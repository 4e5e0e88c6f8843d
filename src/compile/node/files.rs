//! Files a bot names (scripts, transformers): found and read inside the bot folder.

use crate::diag::Code;
use crate::source::bot_path;
use std::path::Path;

/// Why a file the bot names cannot be used: the code, the message and the hint.
pub type BotFileError = (Code, String, String);

/// Checks that a file named in the bot (a script, a transformer) exists inside the bot
/// folder, and returns its real path.
pub fn find_bot_file(dir: &Path, rel: &str) -> Result<std::path::PathBuf, BotFileError> {
    bot_path::resolve(dir, Path::new(rel)).map_err(|problem| match problem.outside_message(rel) {
        Some((message, hint)) => (Code::OutsideBotFolder, message, hint),
        None => (
            Code::NotFound,
            format!("no file \"{rel}\" in the bot folder"),
            "paths are relative to the bot folder".into(),
        ),
    })
}

/// Reads a file named in the bot (a script), relative to the bot folder and inside it.
pub fn read_bot_file(dir: &Path, rel: &str) -> Result<String, BotFileError> {
    let path = find_bot_file(dir, rel)?;
    let too_large = |size: u64| {
        (
            Code::FileTooLarge,
            format!(
                "\"{rel}\" is {:.1} MiB; Parlance reads files of at most {} MiB",
                size as f64 / (1024.0 * 1024.0),
                crate::source::MAX_FILE_BYTES / (1024 * 1024)
            ),
            "split the file, or move what is large out of it".to_string(),
        )
    };
    let io = |e: std::io::Error| {
        (
            Code::Io,
            format!("cannot read \"{rel}\": {e}"),
            "check the file's permissions".to_string(),
        )
    };
    let meta = std::fs::metadata(&path).map_err(io)?;
    if meta.len() > crate::source::MAX_FILE_BYTES {
        return Err(too_large(meta.len()));
    }
    std::fs::read_to_string(&path).map_err(io)
}
