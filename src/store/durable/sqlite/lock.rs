//! The exclusive OS lock on `<file>.lock` that keeps a second process off one SQLite
//! file: leases live in the file, and two processes would also fight for its writer.

use crate::store::StoreError;
use std::fs::File;
use std::path::{Path, PathBuf};

fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Takes the exclusive OS lock that keeps a second process off the file.
pub(super) fn lock(path: &Path) -> Result<File, StoreError> {
    use std::io::{Read, Seek, Write};
    let lock_path = lock_path(path);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| StoreError(format!("cannot open {}: {e}", lock_path.display())))?;
    if !try_lock(&file)? {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let pid = match pid.trim() {
            "" => "unknown".to_string(),
            p => p.to_string(),
        };
        return Err(StoreError(format!(
            "{} is in use by another parlance process (pid {pid}?); two instances cannot share one SQLite file: use Redis (session.store: redis://...)",
            path.display()
        )));
    }
    // Who holds it, for the message above; a failure to write it loses only that.
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    let _ = file.flush();
    Ok(file)
}

#[cfg(unix)]
fn try_lock(file: &File) -> Result<bool, StoreError> {
    use rustix::fs::{FlockOperation, flock};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(false),
        Err(e) => Err(StoreError(format!("cannot lock the SQLite file: {e}"))),
    }
}

/// Elsewhere nothing keeps a second process off the file: the docs say so.
#[cfg(not(unix))]
fn try_lock(_file: &File) -> Result<bool, StoreError> {
    Ok(true)
}
