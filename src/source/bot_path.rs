//! Every file Parlance reads for a bot lies inside the bot folder.
//!
//! A bot folder is the unit that is reviewed, versioned and deployed. A path in it that
//! reaches outside (`script: { file: ../../etc/passwd }`, a flow that is a symbolic link
//! into someone's home folder) would make a bot depend on, or disclose, files nobody
//! reviewed with it. So every path is resolved here, after following symbolic links,
//! and refused unless it stays inside the folder.

use std::path::{Component, Path, PathBuf};

/// Why a path was refused.
#[derive(Debug)]
pub enum PathProblem {
    /// Written as an absolute path (`/etc/x`, `C:\x`).
    Absolute,
    /// Its `..` parts climb above the bot folder.
    Escapes,
    /// It exists, but following symbolic links leads out of the bot folder.
    LinksOutside,
    /// It does not exist (or a part of it cannot be resolved).
    Missing(std::io::Error),
}

impl PathProblem {
    /// Whether this is the "outside the bot folder" kind of problem (not a missing file).
    pub fn is_outside(&self) -> bool {
        match self {
            PathProblem::Absolute | PathProblem::Escapes | PathProblem::LinksOutside => true,
            PathProblem::Missing(_) => false,
        }
    }

    /// What is wrong with `written` (the path as the designer wrote or the folder holds
    /// it), for a diagnostic; `None` for a missing file, which callers word themselves.
    pub fn outside_message(&self, written: &str) -> Option<(String, String)> {
        match self {
            PathProblem::Absolute => Some((
                format!("\"{written}\" is an absolute path; bot files must be inside the bot folder"),
                "write the path relative to the bot folder, e.g. scripts/price.rhai".into(),
            )),
            PathProblem::Escapes => Some((
                format!("\"{written}\" leads out of the bot folder"),
                "bot files must be inside the bot folder; move or copy the file into it".into(),
            )),
            PathProblem::LinksOutside => Some((
                format!("\"{written}\" is a symbolic link that leads out of the bot folder"),
                "bot files must be inside the bot folder; copy the file in instead of linking to it".into(),
            )),
            PathProblem::Missing(_) => None,
        }
    }
}

/// Resolves `rel` (relative to the bot folder `root`) to the real path of an existing
/// file or folder inside `root`, or says why it may not be used. The one check every
/// path of a bot goes through.
pub fn resolve(root: &Path, rel: &Path) -> Result<PathBuf, PathProblem> {
    // Refuse what is outside as written before touching the file system, so the answer
    // does not depend on what happens to exist on this machine.
    let mut depth: usize = 0;
    for part in rel.components() {
        match part {
            Component::Prefix(_) | Component::RootDir => return Err(PathProblem::Absolute),
            Component::CurDir => {}
            Component::ParentDir => {
                depth = depth.checked_sub(1).ok_or(PathProblem::Escapes)?;
            }
            Component::Normal(_) => depth += 1,
        }
    }
    let real_root = std::fs::canonicalize(root).map_err(PathProblem::Missing)?;
    let real = std::fs::canonicalize(root.join(rel)).map_err(PathProblem::Missing)?;
    if real.starts_with(&real_root) {
        Ok(real)
    } else {
        Err(PathProblem::LinksOutside)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bot() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bot/scripts")).unwrap();
        std::fs::write(dir.path().join("bot/scripts/ok.rhai"), "1").unwrap();
        std::fs::write(dir.path().join("outside.rhai"), "1").unwrap();
        dir
    }

    #[test]
    fn paths_inside_the_folder_resolve() {
        let dir = bot();
        let root = dir.path().join("bot");
        for rel in [
            "scripts/ok.rhai",
            "./scripts/ok.rhai",
            "scripts/../scripts/ok.rhai",
        ] {
            let real = resolve(&root, Path::new(rel)).unwrap();
            assert!(real.ends_with("bot/scripts/ok.rhai"), "{rel}: {real:?}");
        }
    }

    #[test]
    fn absolute_paths_and_climbing_out_are_refused_even_when_the_file_exists() {
        let dir = bot();
        let root = dir.path().join("bot");
        let outside = dir.path().join("outside.rhai");
        assert!(matches!(
            resolve(&root, &outside),
            Err(PathProblem::Absolute)
        ));
        assert!(matches!(
            resolve(&root, Path::new("../outside.rhai")),
            Err(PathProblem::Escapes)
        ));
        assert!(matches!(
            resolve(&root, Path::new("scripts/../../outside.rhai")),
            Err(PathProblem::Escapes)
        ));
    }

    #[cfg(unix)]
    #[test]
    fn symbolic_links_that_leave_the_folder_are_refused() {
        let dir = bot();
        let root = dir.path().join("bot");
        std::os::unix::fs::symlink(dir.path().join("outside.rhai"), root.join("link.rhai"))
            .unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
        std::os::unix::fs::symlink(root.join("scripts/ok.rhai"), root.join("inner.rhai")).unwrap();
        assert!(matches!(
            resolve(&root, Path::new("link.rhai")),
            Err(PathProblem::LinksOutside)
        ));
        assert!(matches!(
            resolve(&root, Path::new("up/outside.rhai")),
            Err(PathProblem::LinksOutside)
        ));
        // A link that stays inside is fine.
        assert!(resolve(&root, Path::new("inner.rhai")).is_ok());
    }

    #[test]
    fn a_missing_file_is_missing_not_outside() {
        let dir = bot();
        let root = dir.path().join("bot");
        let problem = resolve(&root, Path::new("scripts/nope.rhai")).unwrap_err();
        assert!(!problem.is_outside());
    }
}
