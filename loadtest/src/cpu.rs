//! CPU time of other processes over the measured window, read from Linux's `/proc`, so a run
//! can report how many microseconds of the server's CPU (and of its database's) each transfer
//! cost. Rates move with whatever else a shared machine is doing; CPU per transfer holds.
//!
//! `--cpu NAME=PID` counts one process (user + system time of all its threads).
//! `--cpu NAME=tree:PID` counts the process and every descendant: a Postgres postmaster and its
//! backends. A descendant that exits inside the window is counted through its parent's
//! `cutime`/`cstime` (the kernel adds a reaped child's times there), so the figure is the work
//! done in the window whichever backends came and went.

use std::collections::HashMap;
use std::fs;

use serde::Serialize;

use crate::error::LoadError;

/// What `--cpu` asked to watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Watch {
    pub name: String,
    pub pid: u32,
    pub tree: bool,
}

impl Watch {
    /// `name=pid` or `name=tree:pid`.
    pub fn parse(text: &str) -> Result<Watch, String> {
        let (name, target) =
            text.split_once('=').ok_or_else(|| format!("`{text}`: expected NAME=PID or NAME=tree:PID"))?;
        let (tree, pid) = match target.strip_prefix("tree:") {
            Some(pid) => (true, pid),
            None => (false, target),
        };
        let pid = pid.parse().map_err(|_| format!("`{text}`: `{pid}` is not a process id"))?;
        if name.is_empty() {
            return Err(format!("`{text}`: the name is empty"));
        }
        Ok(Watch { name: name.to_owned(), pid, tree })
    }
}

/// Clock ticks (`utime + stime`, plus `cutime + cstime` for a tree's root) of each watch.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    ticks: Vec<u64>,
}

/// CPU a watched process (or tree) used over the window.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub name: String,
    pub cpu_seconds: f64,
    /// Average cores busy over the window.
    pub cores: f64,
    /// Microseconds of CPU per acknowledged transfer (0 when none were).
    pub per_transfer_us: f64,
}

/// Linux's `USER_HZ`: `/proc/<pid>/stat` counts CPU time in these ticks. It is 100 on every
/// architecture Linux ships (the ABI fixed it), so it is not read from `sysconf`.
const TICKS_PER_SECOND: f64 = 100.0;

/// One `/proc/<pid>/stat`: parent pid and ticks (own, and reaped children's).
struct Stat {
    ppid: u32,
    own: u64,
    children: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last `)`.
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        ppid: u32::try_from(number(1)?).ok()?,
        own: number(11)? + number(12)?,
        children: number(13)? + number(14)?,
    })
}

/// Every live process's parent, for walking a tree.
fn parents() -> HashMap<u32, u32> {
    let mut parents = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else { return parents };
    for entry in entries.flatten() {
        if let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok())
            && let Some(stat) = stat(pid)
        {
            parents.insert(pid, stat.ppid);
        }
    }
    parents
}

fn ticks_of(watch: &Watch, parents: &HashMap<u32, u32>) -> Result<u64, LoadError> {
    let root = stat(watch.pid).ok_or_else(|| {
        LoadError::Config(format!("--cpu {}: no process {} (Linux /proc only)", watch.name, watch.pid))
    })?;
    if !watch.tree {
        return Ok(root.own);
    }
    let mut total = root.own + root.children;
    for (&pid, _) in parents.iter().filter(|&(&pid, _)| pid != watch.pid) {
        // Walk up to see whether `pid` descends from the root.
        let mut at = pid;
        let mut hops = 0;
        while let Some(&parent) = parents.get(&at) {
            if parent == watch.pid {
                if let Some(stat) = stat(pid) {
                    // A descendant's own ticks; its reaped children are in its `children`,
                    // except for the root's direct children, whose reaped children the root
                    // does not see. Count both for every descendant.
                    total += stat.own + stat.children;
                }
                break;
            }
            at = parent;
            hops += 1;
            if parent <= 1 || hops > 64 {
                break;
            }
        }
    }
    Ok(total)
}

/// Reads every watch now.
pub fn sample(watches: &[Watch]) -> Result<Sample, LoadError> {
    if watches.is_empty() {
        return Ok(Sample::default());
    }
    let parents = if watches.iter().any(|w| w.tree) { parents() } else { HashMap::new() };
    let ticks = watches.iter().map(|watch| ticks_of(watch, &parents)).collect::<Result<_, _>>()?;
    Ok(Sample { ticks })
}

/// What each watch used between `before` and `after`, over `seconds`, for `transfers`.
pub fn usage(watches: &[Watch], before: &Sample, after: &Sample, seconds: f64, transfers: u64) -> Vec<Usage> {
    watches
        .iter()
        .zip(before.ticks.iter().zip(&after.ticks))
        .map(|(watch, (start, end))| {
            let cpu_seconds = end.saturating_sub(*start) as f64 / TICKS_PER_SECOND;
            Usage {
                name: watch.name.clone(),
                cpu_seconds,
                cores: if seconds > 0.0 { cpu_seconds / seconds } else { 0.0 },
                per_transfer_us: if transfers > 0 { cpu_seconds * 1e6 / transfers as f64 } else { 0.0 },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn watches_parse_single_processes_and_trees() {
        assert_eq!(Watch::parse("tally=42").unwrap(), Watch { name: "tally".into(), pid: 42, tree: false });
        assert_eq!(Watch::parse("postgres=tree:7").unwrap(), Watch { name: "postgres".into(), pid: 7, tree: true });
        assert!(Watch::parse("tally").is_err());
        assert!(Watch::parse("=1").is_err());
        assert!(Watch::parse("x=tree:abc").is_err());
    }

    #[test]
    fn a_busy_child_process_is_counted_in_its_parents_tree() {
        let me = std::process::id();
        let watches = vec![Watch { name: "me".into(), pid: me, tree: true }];
        let before = sample(&watches).unwrap();
        // A child that burns CPU and exits inside the window: its time must reach the tree
        // through our `cutime` once it is reaped.
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let after = sample(&watches).unwrap();
        let used = usage(&watches, &before, &after, 1.0, 1000);
        assert!(used[0].cpu_seconds > 0.0, "the child's CPU time counted: {used:?}");
        assert!(used[0].per_transfer_us > 0.0);
    }
}
