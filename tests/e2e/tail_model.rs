//! `tail` against a model: random sequences of appends, rotations by rename and
//! by copytruncate (whole, or its copy and truncate apart with agent runs
//! between), truncations, deletions and agent runs (`--once`, so every
//! run is also a restart continuing from the checkpoints), checked against a
//! perfect reader that reads at every run. A line is expected if, at some run,
//! it was in a file in `logs/`; lines appended and truncated or deleted before
//! any run saw them are legitimately lost. After the last run the stored
//! messages must be exactly the expected lines: none missing, none twice.
//!
//! `PMON_TAIL_MODEL_CASES=N` runs more cases than the default 64.

use crate::util::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

const EXP: &str = "model";
const APP: &str = "app.log";
/// 48 characters, so a line is 70 bytes: one line is past the 64 bytes the
/// agent needs before it tells a copy from a new file (`MIN_IDENTITY`), one to
/// three lines are still short of the 256-byte head, and any head holds a line id.
const PAD: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Appends this many new lines to `app.log`, creating it if missing.
    Append(usize),
    /// `app.log` → `app.log.K`, then a new empty `app.log` (logrotate `create`).
    RotateRename,
    /// Copies `app.log` to `app.log.K`, then truncates `app.log`.
    CopyTruncate,
    /// Only the first half of a copytruncate: copies `app.log` to
    /// `app-K.log`. An agent run before the `Truncate` that completes it
    /// sees both, the newest lines of `app.log` read by nobody yet.
    Copy,
    /// Truncates `app.log` to 0.
    Truncate,
    /// Deletes the oldest rotated file.
    Delete,
    /// `pmon-agent tail -e model --once logs/`.
    AgentRun,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // Small appends keep a file under the 256-byte head now and then.
        3 => prop_oneof![2 => 1..4usize, 1 => 1..200usize].prop_map(Op::Append),
        3 => Just(Op::AgentRun),
        1 => Just(Op::RotateRename),
        2 => Just(Op::CopyTruncate),
        1 => Just(Op::Copy),
        1 => Just(Op::Truncate),
        1 => Just(Op::Delete),
    ]
}

fn line(id: u64) -> String {
    format!("INFO:app:line {id:06} {PAD}\n")
}

fn message(id: u64) -> String {
    format!("line {id:06} {PAD}")
}

/// The id of a stored message, if it is one of ours, exactly.
fn message_id(msg: &str) -> Option<u64> {
    let id: u64 = msg.strip_prefix("line ")?.get(..6)?.parse().ok()?;
    (msg == message(id)).then_some(id)
}

/// The real directory and the model of it, side by side.
struct World {
    agent: Agent,
    logs: PathBuf,
    /// Every file in `logs/` and the ids of the lines it holds, in order.
    files: BTreeMap<String, Vec<u64>>,
    /// Rotated files present, oldest first.
    rotated: Vec<String>,
    next_line: u64,
    next_k: u32,
    /// A `Copy` whose truncate has not come yet.
    copy_pending: bool,
    /// Lines a perfect reader has seen at some run.
    expected: BTreeSet<u64>,
    /// What each step did, with inode numbers (inode reuse matters here).
    trace: Vec<String>,
}

impl World {
    fn new() -> World {
        let agent = Agent::new();
        let logs = agent.dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        World {
            agent,
            logs,
            files: BTreeMap::new(),
            rotated: Vec::new(),
            next_line: 0,
            next_k: 1,
            copy_pending: false,
            expected: BTreeSet::new(),
            trace: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.logs.join(name)
    }

    fn ino(&self, name: &str) -> u64 {
        std::fs::metadata(self.path(name)).map_or(0, |m| m.ino())
    }

    fn describe(&self, name: &str) -> String {
        let lines = &self.files[name];
        let range = match (lines.first(), lines.last()) {
            (Some(a), Some(b)) => format!("lines {a}..={b}"),
            _ => "empty".to_string(),
        };
        format!("{name} (ino {}, {range})", self.ino(name))
    }

    fn apply(&mut self, op: Op) -> Result<(), String> {
        // logrotate finishes a copytruncate before it rotates again: the
        // truncate of a pending copy comes before any other rotation. (Two
        // copies of one file that was never truncated between them could
        // take the same inode with the same first bytes: indistinguishable.)
        let rotates = !matches!(op, Op::Append(_) | Op::AgentRun | Op::Truncate);
        if self.copy_pending && rotates {
            self.apply(Op::Truncate)?;
        }
        self.copy_pending = match op {
            Op::Copy => self.files.contains_key(APP),
            Op::Truncate => false,
            _ => self.copy_pending,
        };
        let note = match op {
            Op::Append(n) => {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.path(APP))
                    .unwrap();
                let ids: Vec<u64> = (self.next_line..self.next_line + n as u64).collect();
                self.next_line += n as u64;
                let text: String = ids.iter().map(|&id| line(id)).collect();
                f.write_all(text.as_bytes()).unwrap();
                self.files.entry(APP.to_string()).or_default().extend(ids);
                format!("Append({n}): now {}", self.describe(APP))
            }
            Op::RotateRename | Op::CopyTruncate | Op::Copy if !self.files.contains_key(APP) => {
                format!("{op:?}: no {APP}, skipped")
            }
            Op::RotateRename => {
                let rotated = format!("{APP}.{}", self.next_k);
                self.next_k += 1;
                std::fs::rename(self.path(APP), self.path(&rotated)).unwrap();
                std::fs::File::create(self.path(APP)).unwrap();
                let lines = self.files.remove(APP).unwrap();
                self.files.insert(rotated.clone(), lines);
                self.files.insert(APP.to_string(), Vec::new());
                self.rotated.push(rotated.clone());
                format!(
                    "RotateRename: {}; new {}",
                    self.describe(&rotated),
                    self.describe(APP)
                )
            }
            Op::CopyTruncate => {
                let copy = format!("{APP}.{}", self.next_k);
                self.next_k += 1;
                std::fs::copy(self.path(APP), self.path(&copy)).unwrap();
                truncate(&self.path(APP));
                let lines = std::mem::take(self.files.get_mut(APP).unwrap());
                self.files.insert(copy.clone(), lines);
                self.rotated.push(copy.clone());
                format!(
                    "CopyTruncate: copy {}; truncated {}",
                    self.describe(&copy),
                    self.describe(APP)
                )
            }
            Op::Copy => {
                // Named as logrotate's `dateext` names it (`app-20261130.log`),
                // which sorts before `app.log`.
                let copy = format!("app-{}.log", self.next_k);
                self.next_k += 1;
                std::fs::copy(self.path(APP), self.path(&copy)).unwrap();
                let lines = self.files[APP].clone();
                self.files.insert(copy.clone(), lines);
                self.rotated.push(copy.clone());
                format!(
                    "Copy: copy {}; kept {}",
                    self.describe(&copy),
                    self.describe(APP)
                )
            }
            Op::Truncate => match self.files.get_mut(APP) {
                None => format!("Truncate: no {APP}, skipped"),
                Some(lines) => {
                    lines.clear();
                    truncate(&self.path(APP));
                    format!("Truncate: {}", self.describe(APP))
                }
            },
            Op::Delete => {
                if self.rotated.is_empty() {
                    "Delete: nothing rotated, skipped".to_string()
                } else {
                    let oldest = self.rotated.remove(0);
                    let note = format!("Delete: {}", self.describe(&oldest));
                    std::fs::remove_file(self.path(&oldest)).unwrap();
                    self.files.remove(&oldest);
                    note
                }
            }
            Op::AgentRun => {
                self.check_mirror()?;
                for lines in self.files.values() {
                    self.expected.extend(lines.iter().copied());
                }
                let out =
                    self.agent
                        .run(&["tail", "-e", EXP, "--once", self.logs.to_str().unwrap()]);
                if !out.status.success() {
                    return Err(format!(
                        "pmon-agent tail failed ({}): {}",
                        out.status,
                        stderr_text(&out)
                    ));
                }
                let files: Vec<String> = self.files.keys().map(|n| self.describe(n)).collect();
                format!("AgentRun: sees {}", files.join(", "))
            }
        };
        self.trace.push(note);
        Ok(())
    }

    /// The model's file list is the directory's.
    fn check_mirror(&self) -> Result<(), String> {
        let mut on_disk: Vec<String> = std::fs::read_dir(&self.logs)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        on_disk.sort();
        let model: Vec<String> = self.files.keys().cloned().collect();
        if on_disk != model {
            return Err(format!(
                "model out of step: disk {on_disk:?}, model {model:?}"
            ));
        }
        Ok(())
    }

    fn stored(&self) -> Vec<String> {
        let conn = self.agent.sql();
        let mut stmt = conn
            .prepare("SELECT message FROM pipeline_logs WHERE experiment_id = ?1")
            .unwrap();
        stmt.query_map([EXP], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn checkpoints(&self) -> String {
        let conn = self.agent.sql();
        let mut stmt = conn
            .prepare(
                "SELECT ino, generation, offset, length(head), path FROM pmon_checkpoints
                 WHERE experiment_id = ?1 ORDER BY ino",
            )
            .unwrap();
        stmt.query_map([EXP], |r| {
            Ok(format!(
                "  ino {} gen {} offset {} head {} bytes, last path {}",
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect::<Vec<_>>()
        .join("\n")
    }
}

/// `0..=4, 7, 9..=12` for a sorted list of ids.
fn ranges(ids: &[u64]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            ids[i].to_string()
        } else {
            format!("{}..={}", ids[i], ids[j])
        });
        i = j + 1;
    }
    out.join(", ")
}

/// Runs the operations and compares the store with the model; `Err` is the report.
fn check(ops: &[Op]) -> Result<(), String> {
    let mut world = World::new();
    for &op in ops.iter().chain(std::iter::once(&Op::AgentRun)) {
        world
            .apply(op)
            .map_err(|e| format!("{e}\ntrace:\n  {}", world.trace.join("\n  ")))?;
    }
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    let mut foreign = Vec::new();
    for msg in world.stored() {
        match message_id(&msg) {
            Some(id) => *counts.entry(id).or_default() += 1,
            None => foreign.push(msg),
        }
    }
    let missing: Vec<u64> = world
        .expected
        .iter()
        .copied()
        .filter(|id| !counts.contains_key(id))
        .collect();
    let unexpected: Vec<u64> = counts
        .keys()
        .copied()
        .filter(|id| !world.expected.contains(id))
        .collect();
    let mut doubled: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for (&id, &n) in &counts {
        if n > 1 {
            doubled.entry(n).or_default().push(id);
        }
    }
    if missing.is_empty() && unexpected.is_empty() && doubled.is_empty() && foreign.is_empty() {
        return Ok(());
    }
    let mut report = String::new();
    let _ = writeln!(report, "the store is not the model's expected lines");
    let _ = writeln!(report, "operations: {ops:?} + final AgentRun");
    let _ = writeln!(report, "trace:\n  {}", world.trace.join("\n  "));
    let _ = writeln!(
        report,
        "expected {} lines, stored {} records",
        world.expected.len(),
        counts.values().sum::<usize>() + foreign.len()
    );
    if !missing.is_empty() {
        let _ = writeln!(report, "missing ({}): {}", missing.len(), ranges(&missing));
    }
    for (n, ids) in &doubled {
        let _ = writeln!(
            report,
            "stored {n} times ({} lines): {}",
            ids.len(),
            ranges(ids)
        );
    }
    if !unexpected.is_empty() {
        let _ = writeln!(
            report,
            "stored but never seen by a run ({}): {}",
            unexpected.len(),
            ranges(&unexpected)
        );
    }
    if !foreign.is_empty() {
        let _ = writeln!(
            report,
            "foreign messages: {:?}",
            &foreign[..foreign.len().min(5)]
        );
    }
    let _ = writeln!(report, "checkpoints:\n{}", world.checkpoints());
    Err(report)
}

fn cases() -> u32 {
    std::env::var("PMON_TAIL_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // Shrinking runs the agent too: bounded, and nothing written to the repo.
        max_shrink_iters: 400,
        max_shrink_time: 180_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn tail_stores_every_line_a_perfect_reader_saw_exactly_once(
        ops in prop::collection::vec(op(), 1..=12)
    ) {
        if let Err(report) = check(&ops) {
            prop_assert!(false, "{}", report);
        }
    }
}
