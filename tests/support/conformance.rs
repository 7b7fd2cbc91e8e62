//! Steps the sinks' tests take the same way, so that each sink is held to the same promise in
//! the same words: a synthetic input on disk, kill -9 while the sink is busy, a rerun that must
//! succeed, nothing lost and repeats within the bound after it, and the dead letters a refusal
//! leaves.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};

use kube_event_pipe::synth::{Stream, SynthConfig, generate};
use serde_json::Value;

use super::{Occurrence, assert_exactly_once, signal, wait_exit};

/// `envelopes` synthetic watch envelopes from `seed`, written to `dir/input.jsonl`.
pub fn synthetic_input(dir: &Path, envelopes: usize, seed: u64) -> (Stream, PathBuf) {
    let stream = generate(&SynthConfig {
        envelopes,
        seed,
        ..SynthConfig::default()
    });
    let input = dir.join("input.jsonl");
    std::fs::write(&input, &stream.text).unwrap();
    (stream, input)
}

/// SIGKILL, then the exit it causes.
pub fn kill_9(child: &mut Child) -> ExitStatus {
    signal(child, libc::SIGKILL);
    wait_exit(child)
}

/// Runs the command to its end, which must be a success; its stderr says why not.
pub fn run_to_success(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every expected occurrence was delivered at least once.
pub fn assert_nothing_lost(
    expected: &BTreeSet<Occurrence>,
    delivered: impl Fn(&Occurrence) -> bool,
) {
    let missing: Vec<_> = expected.iter().filter(|o| !delivered(o)).collect();
    assert!(
        missing.is_empty(),
        "{} lost, first {:?}",
        missing.len(),
        missing.first()
    );
}

/// Deliveries beyond the first of each occurrence.
pub fn repeats(delivered: &BTreeMap<Occurrence, usize>) -> usize {
    delivered.values().map(|n| n - 1).sum()
}

/// After a kill and a rerun: repeats within `bound`, and every expected occurrence there,
/// nothing else.
pub fn assert_complete_within(
    delivered: BTreeMap<Occurrence, usize>,
    expected: &BTreeSet<Occurrence>,
    bound: usize,
) {
    let repeated = repeats(&delivered);
    assert!(repeated <= bound, "{repeated} duplicates");
    let mut union = delivered;
    union.values_mut().for_each(|n| *n = 1);
    assert_exactly_once(&union, expected);
}

/// The files of a dead-letter directory.
pub fn dead_letter_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// The letters of one dead-letter file, one JSON object a line.
pub fn dead_letters(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}
