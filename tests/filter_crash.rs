//! The filter ring across a real kill -9: every key a child process reported committed is
//! found by the next process, and the directory lock is free again.
//!
//! The test binary runs itself as the child (selected by an environment variable), so the
//! child is a real process with real mappings that dies without unwinding or unmapping.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kube_event_pipe::dedup::{Ring, RingConfig};
use kube_event_pipe::event::OccurrenceKey;

const CHILD_DIR: &str = "KEP_FILTER_CRASH_CHILD_DIR";
const BATCH: u64 = 500;

fn config(dir: &Path) -> RingConfig {
    RingConfig {
        dir: dir.to_path_buf(),
        generations: 3,
        // Small enough that the child rotates by capacity several times before the kill.
        capacity: 5_000,
        error_rate: 1e-6,
        rotation_interval: Duration::from_secs(3600),
    }
}

fn key(i: u64) -> OccurrenceKey {
    OccurrenceKey::new("crash", "event.1", i)
}

/// The child: commits batches forever, printing the count committed after each. It never
/// syncs: what survives the kill is what the page cache holds.
#[test]
fn child_commits_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    // No flush is ever called: what the test checks is what the page cache holds.
    let mut ring = Ring::open(config(Path::new(&dir))).expect("child opens the ring");
    let mut committed = 0u64;
    loop {
        let keys: Vec<_> = (committed..committed + BATCH).map(key).collect();
        ring.commit(&keys).expect("commit");
        committed += BATCH;
        println!("{committed}");
    }
}

#[test]
fn keys_committed_before_a_kill_9_are_found_after_it() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_commits_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut reported = 0u64;
    while reported < 12_000 {
        let line = lines
            .next()
            .expect("the child stopped before committing 12000 keys")
            .unwrap();
        if let Ok(n) = line.trim().parse::<u64>() {
            reported = n;
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    // The child kept going until the kill: what it printed meanwhile is still in the pipe.
    for line in lines {
        if let Ok(n) = line.unwrap_or_default().trim().parse::<u64>() {
            reported = reported.max(n);
        }
    }

    // The lock died with the process: a new one opens the directory at once.
    let capacity = config(dir.path()).capacity;
    let ring = Ring::open(config(dir.path())).expect("reopen after kill -9");
    // Generations the child retired are forgotten by design. The last two capacities' worth of
    // reported keys are always retained: at most one more batch (committed, not yet printed)
    // can have started a generation, retiring the one before them.
    let first = reported - 2 * capacity;
    let missing: Vec<u64> = (first..reported)
        .filter(|&i| !ring.contains(key(i)))
        .collect();
    eprintln!("child reported {reported} keys committed; checked {first}..{reported}");
    assert!(
        missing.is_empty(),
        "{} of {} reported keys missing after kill -9, first {:?}",
        missing.len(),
        reported - first,
        missing.first()
    );
}
