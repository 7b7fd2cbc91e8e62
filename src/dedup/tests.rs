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

/// Damages the only generation in `dir` with `damage`, reopens, and checks the ring recovered.
fn quarantined_after(damage: impl FnOnce(&std::path::Path)) {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut ring = Ring::open(config(dir.path())).unwrap();
        ring.commit(&[key(1)]).unwrap();
    }
    let files = generation_files(dir.path());
    let path = dir.path().join(&files[0]);
    damage(&path);
    let mut ring = Ring::open(config(dir.path())).unwrap();
    assert_eq!(ring.quarantined_total(), 1);
    assert!(!path.exists() || generation_files(dir.path()) != files);
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the bad file is kept aside for examination");
    // The ring keeps working on a fresh generation.
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
