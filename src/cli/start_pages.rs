//! Gives back the pages of the binary that only the start used. Starting touches
//! code that serving never runs again (the JSON Schemas' compilation, YAML, clap, root
//! certificates, the OpenAPI document), and the kernel maps each touched page with
//! its neighbours (64 KiB at a time): ~16 MB of the binary stayed resident, over a third
//! of the server's peak under a load of 128 users. Once the server is up, the binary's
//! mappings are unmapped (`MADV_DONTNEED`); what serving runs is mapped again from the
//! page cache on its first use, so the resident code is what serving uses.
//!
//! Only mappings of the binary's file that hold none of the process's own pages
//! (`Anonymous: 0 kB` in `/proc/self/smaps`): a page the loader wrote (relocated
//! data) would go back to the file's content. Unmapping clean file pages is what the
//! kernel's reclaim does to any process under memory pressure.

/// Unmaps the binary's clean pages; answers how many bytes were resident in them.
#[cfg(target_os = "linux")]
pub fn give_back() -> u64 {
    let (Ok(exe), Ok(smaps)) = (
        std::fs::read_link("/proc/self/exe"),
        std::fs::read_to_string("/proc/self/smaps"),
    ) else {
        return 0;
    };
    let Some(exe) = exe.to_str() else {
        return 0;
    };
    let mut freed = 0;
    for mapping in mappings(&smaps).into_iter().filter(|m| m.may_go(exe)) {
        let len = mapping.end - mapping.start;
        // SAFETY: `start..end` is a whole mapping of this process (the kernel listed
        // it), private, read-only and backed by the binary's file, with no page of
        // the process's own: unmapping its pages loses nothing, and the next access
        // maps the file's page again, as after the kernel reclaimed it.
        let done =
            unsafe { libc::madvise(mapping.start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        if done == 0 {
            freed += mapping.rss_kb * 1024;
        }
    }
    freed
}

#[cfg(not(target_os = "linux"))]
pub fn give_back() -> u64 {
    0
}

/// One mapping of `/proc/self/smaps`, the parts read here.
#[derive(Debug, PartialEq)]
struct Mapping<'a> {
    start: usize,
    end: usize,
    writable: bool,
    private: bool,
    path: &'a str,
    rss_kb: u64,
    anonymous_kb: u64,
}

impl Mapping<'_> {
    /// Whether the mapping's pages may be given back: the binary's file, private,
    /// read-only, and none of the process's own pages in it.
    fn may_go(&self, exe: &str) -> bool {
        self.path == exe && self.private && !self.writable && self.anonymous_kb == 0
    }
}

/// The mappings listed in `smaps` (a header line `start-end perms offset dev inode
/// path`, then `Key: value kB` lines). A mapping whose numbers cannot be read is left
/// out, as is one whose `Anonymous` line is missing.
fn mappings(smaps: &str) -> Vec<Mapping<'_>> {
    let mut out = Vec::new();
    let mut current: Option<(Mapping<'_>, bool)> = None;
    for line in smaps.lines() {
        if let Some(header) = header(line) {
            if let Some((m, true)) = current.take() {
                out.push(m);
            }
            current = header.map(|m| (m, false));
            continue;
        }
        let Some((m, seen)) = current.as_mut() else {
            continue;
        };
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "Rss:" => m.rss_kb = value,
            "Anonymous:" => {
                m.anonymous_kb = value;
                *seen = true;
            }
            _ => {}
        }
    }
    if let Some((m, true)) = current {
        out.push(m);
    }
    out
}

/// `Some(Some(mapping))` for a header line, `Some(None)` for a header that does not
/// read, `None` for any other line.
#[allow(clippy::option_option)]
fn header(line: &str) -> Option<Option<Mapping<'_>>> {
    let mut parts = line.split_whitespace();
    let range = parts.next()?;
    let (start, end) = range.split_once('-')?;
    // Field lines start with a key ending in ':'; headers with a hex range.
    if !start.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let parsed = (|| {
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        let perms = parts.next()?;
        let (_offset, _dev, _inode) = (parts.next()?, parts.next()?, parts.next()?);
        let path = parts.next().unwrap_or("");
        (end > start).then_some(Mapping {
            start,
            end,
            writable: perms.contains('w'),
            private: perms.contains('p'),
            path,
            rss_kb: 0,
            anonymous_kb: 0,
        })
    })();
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
5600aa000000-5600aa100000 r--p 00000000 fd:01 42 /usr/bin/parlance
Size:               1024 kB
Rss:                 512 kB
Anonymous:             0 kB
VmFlags: rd mr mw me sd
5600aa100000-5600ab000000 r-xp 00100000 fd:01 42 /usr/bin/parlance
Size:              15360 kB
Rss:               14000 kB
Anonymous:             0 kB
5600ab000000-5600ab100000 r--p 01000000 fd:01 42 /usr/bin/parlance
Rss:                 300 kB
Anonymous:           120 kB
7f0000000000-7f0000021000 rw-p 00000000 00:00 0
Rss:                   8 kB
Anonymous:             8 kB
";

    #[test]
    fn smaps_is_read_mapping_by_mapping() {
        let found = mappings(SMAPS);
        assert_eq!(found.len(), 4);
        assert_eq!(
            found[1],
            Mapping {
                start: 0x5600_aa10_0000,
                end: 0x5600_ab00_0000,
                writable: false,
                private: true,
                path: "/usr/bin/parlance",
                rss_kb: 14_000,
                anonymous_kb: 0,
            }
        );
        // Relocated data: pages of its own, never given back.
        assert_eq!(found[2].anonymous_kb, 120);
        assert!(found[3].writable);
        assert_eq!(found[3].path, "");
    }

    #[test]
    fn a_mapping_without_its_anonymous_line_is_left_out() {
        let cut =
            "5600aa000000-5600aa100000 r--p 00000000 fd:01 42 /usr/bin/parlance\nRss: 512 kB\n";
        assert_eq!(mappings(cut), Vec::new());
    }

    /// The binary's code is given back and the process goes on running it (this very
    /// test runs from those pages).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_code_is_given_back_and_still_runs() {
        let resident_before: u64 = resident_code_kb();
        let freed = give_back();
        assert!(
            freed > 0,
            "nothing given back (resident code {resident_before} kB)"
        );
        // Measuring runs code again, mapped anew: only what it runs. Other tests run
        // beside this one in the same process and map code back meanwhile, so a try
        // may see no drop; one of a few tries does.
        let dropped = (0..10).any(|_| {
            let before = resident_code_kb();
            give_back();
            resident_code_kb() < before
        });
        assert!(dropped, "the resident code never shrank");
    }

    #[cfg(target_os = "linux")]
    fn resident_code_kb() -> u64 {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_str().unwrap();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        mappings(&smaps)
            .iter()
            .filter(|m| m.may_go(exe))
            .map(|m| m.rss_kb)
            .sum()
    }
}
