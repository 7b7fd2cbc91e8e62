//! Ring behaviour: persistence, rotation, retention, corruption and locking (built only under #[cfg(test)]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::event::OccurrenceKey;

fn config(dir: &std::path::Path) -> RingConfig {
    RingConfig {
        dir: dir.to_path_buf(),
        generations: 3,
        capacity: 1_000,
        error_rate: 1e-4,
        rotation_interval: Duration::from_secs(3600),
    }
}

fn key(i: u64) -> OccurrenceKey {
    OccurrenceKey::new("default", "pod.17", i)
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ))
}

fn generation_files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| ring::is_generation_name(n))
        .collect();
    v.sort();
    v
}

#[test]
fn committed_keys_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<_> = (0..500).map(key).collect();
    {
        let mut ring = Ring::open(config(dir.path())).unwrap();
        ring.commit(&keys).unwrap();
        ring.flush().unwrap();
    }
    let ring = Ring::open(config(dir.path())).unwrap();
    assert!(keys.iter().all(|&k| ring.contains(k)));
    assert!(!ring.contains(key(10_000)));
}

#[test]
fn a_second_instance_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Ring::open(config(dir.path())).unwrap();
    let err = Ring::open(config(dir.path())).err().unwrap();
    assert!(matches!(err, DedupError::Locked { .. }));
    assert!(
        err.to_string()
            .contains("locked by another running kube-event-pipe")
    );
}

#[test]
fn time_based_rotation_keeps_exactly_the_configured_generations() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut ring = Ring::open_with_clock(config(dir.path()), clock.clone()).unwrap();
    ring.commit(&[key(1)]).unwrap();
    for round in 2..=5u64 {
        clock.advance(Duration::from_secs(3599));
        assert!(
            !ring.rotate_if_due().unwrap(),
            "not due before the interval"
        );
        clock.advance(Duration::from_secs(1));
        assert!(ring.rotate_if_due().unwrap());
        ring.commit(&[key(round)]).unwrap();
    }
    assert_eq!(generation_files(dir.path()).len(), 3);
    // Keys 3, 4, 5 live in the three kept generations; 1 and 2 retired with theirs.
    assert!(ring.contains(key(5)) && ring.contains(key(4)) && ring.contains(key(3)));
    assert!(!ring.contains(key(1)) && !ring.contains(key(2)));
}

#[test]
fn capacity_based_rotation_bounds_every_generation() {
    let dir = tempfile::tempdir().unwrap();
    let mut ring = Ring::open_with_clock(config(dir.path()), clock()).unwrap();
    let keys: Vec<_> = (0..2_500).map(key).collect();
    ring.commit(&keys).unwrap();
    let gens = ring.generations();
    assert_eq!(gens.len(), 3);
    assert!(gens.iter().all(|g| g.inserted <= g.capacity));
    assert_eq!(gens.iter().map(|g| g.inserted).sum::<u64>(), 2_500);
    assert!(keys.iter().all(|&k| ring.contains(k)));
}

#[test]
fn changed_parameters_keep_old_generations_readable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut ring = Ring::open(config(dir.path())).unwrap();
        ring.commit(&[key(1)]).unwrap();
    }
    let mut bigger = config(dir.path());
    bigger.capacity = 5_000;
    bigger.error_rate = 1e-6;
    let clock = clock();
    clock.advance(Duration::from_secs(4000));
    let ring = Ring::open_with_clock(bigger, clock).unwrap();
    let gens = ring.generations();
    assert_eq!(gens.len(), 2);
    assert_eq!((gens[0].capacity, gens[1].capacity), (1_000, 5_000));
    assert!(ring.contains(key(1)));
}

/// Damages the only generation in `dir` with `damage`, reopens, and checks that the damaged
/// file was moved aside as it was and that a fresh, empty generation took its place.
fn quarantined_after(damage: impl FnOnce(&std::path::Path)) {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut ring = Ring::open(config(dir.path())).unwrap();
        ring.commit(&[key(1)]).unwrap();
    }
    let files = generation_files(dir.path());
    let path = dir.path().join(&files[0]);
    damage(&path);
    let damaged = std::fs::read(&path).unwrap();
    let mut ring = Ring::open(config(dir.path())).unwrap();
    assert_eq!(ring.quarantined_total(), 1);
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the bad file is kept aside for examination");
    assert!(aside[0].starts_with(&files[0]), "{aside:?}");
    assert_eq!(
        std::fs::read(dir.path().join(&aside[0])).unwrap(),
        damaged,
        "kept as it was found"
    );
    // The one generation now is a fresh one, under a name of its own: it remembers nothing.
    let gens = ring.generations();
    assert_eq!(gens.len(), 1);
    assert_eq!(gens[0].inserted, 0);
    assert_ne!(gens[0].path, path, "a new name, never the damaged file's");
    assert!(!ring.contains(key(1)));
    // The ring keeps working on it.
    ring.commit(&[key(2)]).unwrap();
    assert!(ring.contains(key(2)));
    assert_eq!(generation_files(dir.path()).len(), 1);
}

#[test]
fn a_truncated_file_is_quarantined() {
    quarantined_after(|p| {
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len / 2).unwrap();
    });
}

#[test]
fn a_zeroed_header_is_quarantined() {
    quarantined_after(|p| {
        let mut b = std::fs::read(p).unwrap();
        b[..header::HEADER_LEN].fill(0);
        std::fs::write(p, b).unwrap();
    });
}

#[test]
fn a_flipped_checksum_byte_is_quarantined() {
    quarantined_after(|p| {
        let mut b = std::fs::read(p).unwrap();
        b[121] ^= 0x40;
        std::fs::write(p, b).unwrap();
    });
}

#[test]
fn a_file_of_the_wrong_size_is_quarantined() {
    quarantined_after(|p| {
        let f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len + 4096).unwrap();
    });
}

#[test]
fn a_garbage_file_is_quarantined() {
    quarantined_after(|p| std::fs::write(p, b"{\"not\": \"a filter\"}\n").unwrap());
}

#[test]
fn python_tool_filters_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("1700000000.bloom"), b"pybloom").unwrap();
    let ring = Ring::open(config(dir.path())).unwrap();
    assert_eq!(ring.quarantined_total(), 0);
    assert_eq!(
        std::fs::read(dir.path().join("1700000000.bloom")).unwrap(),
        b"pybloom"
    );
}

#[test]
fn an_unwritable_directory_names_the_path_and_the_fix() {
    let err = Ring::open(config(std::path::Path::new("/proc/kep-test")))
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.starts_with("persistence directory /proc/kep-test is not usable: "),
        "{msg}"
    );
    assert!(
        msg.ends_with("set KUBE_EVENT_PIPE_PERSISTENCE_PATH"),
        "{msg}"
    );
}

#[test]
fn inspect_reports_each_generation_and_marks_corrupt_ones() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    {
        let mut ring = Ring::open_with_clock(config(dir.path()), clock.clone()).unwrap();
        ring.commit(&(0..100).map(key).collect::<Vec<_>>()).unwrap();
        clock.advance(Duration::from_secs(3600));
        ring.rotate_if_due().unwrap();
    }
    let files = generation_files(dir.path());
    std::fs::write(dir.path().join(&files[1]), b"junk").unwrap();
    let rows = inspect(dir.path(), clock.now()).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].inserted, Some(100));
    assert_eq!(rows[0].age_seconds, Some(3600));
    assert_eq!(rows[0].created_at.as_deref(), Some("2027-01-15T08:00:00Z"));
    assert_eq!(rows[0].state, "ok");
    assert!(rows[0].fill_ratio.unwrap() > 0.0);
    assert!(rows[1].state.starts_with("corrupt: "), "{}", rows[1].state);
    let table = render_table(&rows);
    assert!(table.starts_with("FILE"), "{table}");
    assert!(table.contains("60m00s"));
    assert!(table.contains("  2027-01-15T08:00:00Z  "), "{table}");
    assert!(!table.contains(" 1800000000 "), "{table}");
    let json: serde_json::Value = serde_json::from_str(&render_json(&rows)).unwrap();
    assert_eq!(json["generations"][0]["inserted"], 100);
    assert_eq!(json["generations"][0]["created_at"], "2027-01-15T08:00:00Z");
    // inspect changed nothing: the corrupt file is still in place.
    assert_eq!(generation_files(dir.path()), files);
}

#[test]
fn a_file_damaged_twice_within_a_second_keeps_both_quarantined_copies() {
    let dir = tempfile::tempdir().unwrap();
    // A clock that stands still: both quarantines happen in the same millisecond.
    let clock = clock();
    let name = {
        let ring = Ring::open_with_clock(config(dir.path()), clock.clone()).unwrap();
        ring.generations()[0].path.clone()
    };
    std::fs::write(&name, b"first damage").unwrap();
    drop(Ring::open_with_clock(config(dir.path()), clock.clone()).unwrap());
    // The same name damaged again (a restored backup, say).
    std::fs::write(&name, b"second damage").unwrap();
    let ring = Ring::open_with_clock(config(dir.path()), clock.clone()).unwrap();
    assert_eq!(ring.quarantined_total(), 1);
    let mut kept: Vec<Vec<u8>> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".corrupt-"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        vec![b"first damage".to_vec(), b"second damage".to_vec()]
    );
}

#[test]
fn a_persistence_path_that_is_a_file_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("filters");
    std::fs::write(&file, b"").unwrap();
    let err = Ring::open(config(&file)).err().unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "persistence path {} is not a directory; set KUBE_EVENT_PIPE_PERSISTENCE_PATH (--persistence-path) to a directory on the filter volume",
            file.display()
        )
    );
}

#[test]
fn a_full_generation_that_cannot_rotate_takes_no_more_keys() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut ring = Ring::open_with_clock(config(dir.path()), clock.clone()).unwrap();
    // The next generation's temporary file cannot be created: its name is taken by a directory.
    let newest = generation_files(dir.path()).pop().unwrap();
    let millis: u64 = newest[4..20].parse().unwrap();
    std::fs::create_dir(
        dir.path()
            .join(format!("kep-{:016}.filter.tmp", millis + 1)),
    )
    .unwrap();
    let keys: Vec<_> = (0..1_500).map(key).collect();
    let err = ring.commit(&keys).err().unwrap();
    assert!(matches!(err, DedupError::Io { .. }), "{err}");
    let gens = ring.generations();
    assert_eq!(gens.len(), 1);
    assert_eq!(
        gens[0].inserted, 1_000,
        "filled to its capacity and not past it"
    );
    assert!(ring.contains(key(999)));
    // Later keys are not remembered (they are delivered again), and a retry fails the same way.
    assert!(ring.commit(&[key(2_000)]).is_err());
    assert_eq!(ring.generations()[0].inserted, 1_000);
}

#[test]
fn a_failed_rotation_by_age_is_retried_after_a_minute_not_at_every_tick() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut ring = Ring::open_with_clock(config(dir.path()), clock.clone()).unwrap();
    let newest = generation_files(dir.path()).pop().unwrap();
    let millis: u64 = newest[4..20].parse().unwrap();
    clock.advance(Duration::from_secs(3600));
    let blocked = dir
        .path()
        .join(format!("kep-{:016}.filter.tmp", millis + 3_600_000));
    std::fs::create_dir(&blocked).unwrap();
    assert!(ring.rotate_if_due().is_err());
    clock.advance(Duration::from_secs(30));
    assert!(
        !ring.rotate_if_due().unwrap(),
        "no new attempt within the minute"
    );
    // Not full, so it still takes keys meanwhile.
    ring.commit(&[key(7)]).unwrap();
    std::fs::remove_dir(&blocked).unwrap();
    clock.advance(Duration::from_secs(31));
    assert!(ring.rotate_if_due().unwrap());
    assert_eq!(ring.generations().len(), 2);
    assert!(ring.contains(key(7)));
}
