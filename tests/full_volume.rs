//! The filter volume too small or full: the binary on a small tmpfs. Every case must end with a
//! one-line error naming the file, the bytes needed and free and the fix; never with a SIGBUS
//! (a store through a mapping of a block the volume cannot provide).
//!
//! Mounting needs root (`.ci/run` runs as root); elsewhere these tests print why they skip.

mod support;

use std::fs;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::*;

/// A tmpfs of `size` mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with the reason printed) when this process may not mount.
    fn mount(size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a small tmpfs needs root (.ci/run runs as root)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "skipped: mount -t tmpfs failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the volume refuses more.
    fn fill(&self) {
        let mut f = fs::File::create(self.path().join("filler")).unwrap();
        let block = vec![0xa5u8; 4096];
        loop {
            match f.write_all(&block) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the volume: {e}"),
            }
        }
        // Whatever a partial write left unused.
        while f.write(&[0u8]).is_ok_and(|n| n == 1) {}
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A child that is killed if the test fails while it runs, so the volume can be unmounted.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn events(from: usize, to: usize) -> String {
    (from..to)
        .map(|i| {
            format!(
                "{{\"kind\":\"Event\",\"metadata\":{{\"name\":\"e{i}\",\"namespace\":\"default\"}},\"count\":1}}\n"
            )
        })
        .collect()
}

fn generation_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "filter"))
        .collect();
    v.sort();
    v
}

/// The one `error: …` line, after checking the process exited with status 1 by itself.
fn the_error(status: std::process::ExitStatus, stderr: &str) -> String {
    assert_eq!(
        status.signal(),
        None,
        "killed by a signal: {status:?}\n{stderr}"
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    let errors: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0].to_string()
}

#[test]
fn a_volume_too_small_for_the_default_filters_fails_at_start_with_one_line() {
    let Some(volume) = Tmpfs::mount("1m") else {
        return;
    };
    let out = pipe(volume.path())
        .arg("--replay-file")
        .arg(sample_path())
        .output()
        .unwrap();
    let error = the_error(out.status, &String::from_utf8_lossy(&out.stderr));
    // Three generations and the one a rotation creates: 4 × 3,596,288 bytes in 4 KiB blocks.
    assert!(
        error.starts_with(&format!(
            "error: cannot keep the filter generations in {}: 14385152 bytes needed, ",
            volume.path().display()
        )),
        "{error}"
    );
    for part in [
        "each generation of 1000000 keys at error rate 0.000001 takes 3594528 bytes",
        "mount a larger volume at the persistence path",
        "KUBE_EVENT_PIPE_FILTER_CAPACITY (--filter-capacity)",
    ] {
        assert!(error.contains(part), "{part:?} not in {error}");
    }
    assert!(out.stdout.is_empty(), "nothing delivered without filters");
    assert!(generation_files(volume.path()).is_empty());
}

#[test]
fn a_rotation_on_a_full_volume_stops_the_pipe_with_a_message_and_no_generation_overfills() {
    let Some(volume) = Tmpfs::mount("1m") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let output = work.path().join("events.jsonl");
    let mut child = Running(
        pipe(volume.path())
            .args(["--replay-file", "-", "--filter-capacity", "1000"])
            .args(["--batch-size", "100", "--destination"])
            .arg(&output)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let stderr = Reader::spawn(child.stderr.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(events(0, 900).as_bytes()).unwrap();
    stdin.flush().unwrap();
    wait_for("the first 900 events delivered", || {
        (count_lines(&output) >= 900).then_some(())
    });
    // Something else takes the rest of the volume; the next 1,000 keys need a new generation.
    volume.fill();
    stdin.write_all(events(900, 1_900).as_bytes()).unwrap();
    drop(stdin);
    let status = wait_exit(child);
    let log = stderr.all().concat();
    let error = the_error(status, &log);
    assert!(
        error.starts_with(&format!(
            "error: cannot create the filter generation {}/kep-",
            volume.path().display()
        )),
        "{error}"
    );
    assert!(error.contains(" bytes needed, "), "{error}");
    assert!(error.contains("each generation of 1000 keys at error rate 0.000001 takes "));
    let files = generation_files(volume.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let rows = Command::new(BIN)
        .args(["inspect", "--json", "--persistence-path"])
        .arg(volume.path())
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&rows.stdout).unwrap();
    assert_eq!(
        rows["generations"][0]["inserted"], 1000,
        "the full generation took no key past its capacity"
    );
}

#[test]
fn a_sparse_generation_on_a_full_volume_is_refused_before_it_is_mapped() {
    let Some(volume) = Tmpfs::mount("1m") else {
        return;
    };
    // 100,000 keys at 1e-2: a 120 KB generation, 30 pages of zeros when empty.
    let small = ["--filter-capacity", "100000", "--filter-error-rate", "0.01"];
    let first = pipe(volume.path())
        .args(["--replay-file", "/dev/null"])
        .args(small)
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let files = generation_files(volume.path());
    assert_eq!(files.len(), 1);
    // The same file written sparse (as an older version did, or a copy with holes): only its
    // first page takes a block.
    let bytes = fs::read(&files[0]).unwrap();
    fs::remove_file(&files[0]).unwrap();
    let sparse = fs::File::create(&files[0]).unwrap();
    sparse.set_len(bytes.len() as u64).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &bytes[..4096], 0).unwrap();
    drop(sparse);
    volume.fill();
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("input.jsonl");
    fs::write(&input, events(0, 5_000)).unwrap();
    let out = pipe(volume.path())
        .arg("--replay-file")
        .arg(&input)
        .args(small)
        .output()
        .unwrap();
    let error = the_error(out.status, &String::from_utf8_lossy(&out.stderr));
    assert!(
        error.starts_with(&format!(
            "error: cannot reserve the blocks of {}: ",
            files[0].display()
        )),
        "{error}"
    );
    assert!(error.contains(" bytes free on the volume"), "{error}");
}
