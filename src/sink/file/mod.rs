//! The file sink: appends JSON lines to a path that logrotate may move, truncate or delete.
//!
//! The file is opened with O_APPEND, so `copytruncate` works without a signal (every write lands
//! at the current end). For `create` mode, SIGHUP asks for a reopen; and because a forgotten
//! `postrotate` is a classic way to write into a deleted file for weeks, every batch also compares
//! the path's inode with the open file's and reopens when they differ.
//!
//! With fsync on, batches are group-committed ([`commit`]): the next batches are written while
//! an fdatasync runs, and one fdatasync acknowledges every batch written before it started.

mod commit;
pub mod config;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{info, warn};

use super::{Failure, Sink, SinkContext, SinkError};
use crate::flow::Batch;

/// Opens the file sink for `path`; fails at once when the file cannot be created.
pub fn open(path: &Path, fsync: bool, ctx: &SinkContext<'_>) -> Result<Sink, SinkError> {
    let sink = FileSink::open(path, fsync, ctx.reopen.clone())?;
    let name = format!("file {}", path.display());
    Ok(Sink::custom("file", "file", name, move |io| {
        commit::spawn(sink, io)
    }))
}

pub struct FileSink {
    path: PathBuf,
    /// Shared with the sync thread, which syncs the file a batch was written to even after a
    /// rotation has replaced it here.
    file: Arc<File>,
    identity: (u64, u64),
    fsync: bool,
    reopen_requested: Arc<AtomicBool>,
    /// How much of the batch being written reached the file in earlier, failed attempts.
    resume: Option<(u64, usize)>,
}

impl FileSink {
    /// Appends `batch` (not synced); called again with the same batch after a failure, it
    /// writes only what the failed attempt did not.
    fn append_batch(&mut self, batch: &Batch) -> Result<(), Failure> {
        let mut written = match self.resume {
            Some((seq, n)) if seq == batch.seq => n,
            _ => 0,
        };
        let result = self.append(&batch.bytes, &mut written);
        self.resume = result.is_err().then_some((batch.seq, written));
        result
    }

    /// The file being appended to.
    fn file(&self) -> &Arc<File> {
        &self.file
    }
}

impl FileSink {
    /// Opens (creating) the file. `reopen_requested` is set by the SIGHUP handler.
    ///
    /// A file that does not end in a newline is repaired first: its last line is the fragment
    /// of a batch cut short by a crash (kill -9, a full disk at shutdown). That batch was never
    /// acknowledged, so its events are delivered again; left in place, the fragment would run
    /// into the first new line and make it unparseable. It is cut off and the cut logged.
    pub fn open(
        path: &Path,
        fsync: bool,
        reopen_requested: Arc<AtomicBool>,
    ) -> Result<Self, SinkError> {
        let open_error = |source| SinkError::Open {
            path: path.to_path_buf(),
            source,
        };
        let (file, identity) = open_append(path).map_err(open_error)?;
        match cut_torn_tail(path, &file) {
            Ok(0) => {}
            Ok(cut) => warn!(
                path = %path.display(),
                bytes = cut,
                "output file ended in a partial line from an interrupted run; cut it off (its events are delivered again)"
            ),
            Err(source) => return Err(open_error(source)),
        }
        Ok(FileSink {
            path: path.to_path_buf(),
            file: Arc::new(file),
            identity,
            fsync,
            reopen_requested,
            resume: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `bytes`, made durable when fsync is on. `written` counts what already reached the
    /// file from an earlier, failed attempt, so a retry does not write those bytes twice.
    pub fn write(&mut self, bytes: &[u8], written: &mut usize) -> Result<(), Failure> {
        self.append(bytes, written)?;
        if self.fsync {
            self.file.sync_data().map_err(|e| self.io_error(e))?;
        }
        Ok(())
    }

    /// Appends `bytes` without syncing; see [`Self::write`] for `written`.
    fn append(&mut self, bytes: &[u8], written: &mut usize) -> Result<(), Failure> {
        self.follow_rotation()?;
        while *written < bytes.len() {
            match (&*self.file).write(&bytes[*written..]) {
                Ok(0) => return Err(self.io_error(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => *written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
        Ok(())
    }

    /// Reopens when asked by SIGHUP, or when the path no longer names the open file.
    fn follow_rotation(&mut self) -> Result<(), Failure> {
        let reason = if self.reopen_requested.swap(false, Ordering::AcqRel) {
            Some("SIGHUP")
        } else {
            match std::fs::metadata(&self.path) {
                Ok(m) if (m.dev(), m.ino()) == self.identity => None,
                Ok(_) => Some("the path now names another file"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("the path was removed"),
                // Cannot tell (e.g. a permission change on the directory): keep the open file.
                Err(_) => None,
            }
        };
        if let Some(reason) = reason {
            let (file, identity) = open_append(&self.path).map_err(|e| self.io_error(e))?;
            // The old file is synced by whoever holds the batches written to it (the sync
            // thread keeps its handle); acknowledged batches already are.
            self.file = Arc::new(file);
            self.identity = identity;
            info!(path = %self.path.display(), reason, "reopened output file");
        }
        Ok(())
    }

    fn io_error(&self, source: std::io::Error) -> Failure {
        Failure::io(
            &format!("writing to file {} failed", self.path.display()),
            &source,
        )
    }
}

/// Truncates a regular file after its last newline (to nothing when it has none); returns the
/// bytes cut. Other kinds of file (a FIFO, /dev/stdout, a terminal) are left alone.
fn cut_torn_tail(path: &Path, file: &File) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let meta = file.metadata()?;
    let len = meta.len();
    if !meta.is_file() || len == 0 {
        return Ok(0);
    }
    // The sink's descriptor is write-only (a FIFO opened for reading too would never block
    // for its reader); read through a second one.
    let reader = File::open(path)?;
    let mut chunk = vec![0u8; 64 << 10];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let buf = &mut chunk[..(end - start) as usize];
        reader.read_exact_at(buf, start)?;
        if let Some(i) = memchr::memrchr(b'\n', buf) {
            let keep = start + i as u64 + 1;
            if keep == len {
                return Ok(0);
            }
            return truncate(file, keep, len);
        }
        end = start;
    }
    truncate(file, 0, len)
}

fn truncate(file: &File, keep: u64, len: u64) -> std::io::Result<u64> {
    file.set_len(keep)?;
    file.sync_data()?;
    Ok(len - keep)
}

fn open_append(path: &Path) -> std::io::Result<(File, (u64, u64))> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)?;
    let meta = file.metadata()?;
    Ok((file, (meta.dev(), meta.ino())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(dir: &Path) -> (FileSink, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        let s = FileSink::open(&dir.join("out.jsonl"), true, flag.clone()).unwrap();
        (s, flag)
    }

    fn write(s: &mut FileSink, text: &str) {
        let mut n = 0;
        s.write(text.as_bytes(), &mut n).unwrap();
        assert_eq!(n, text.len());
    }

    #[test]
    fn a_renamed_file_is_noticed_at_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = sink(dir.path());
        write(&mut s, "1\n");
        std::fs::rename(dir.path().join("out.jsonl"), dir.path().join("out.jsonl.1")).unwrap();
        write(&mut s, "2\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out.jsonl.1")).unwrap(),
            "1\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap(),
            "2\n"
        );
    }

    #[test]
    fn a_deleted_file_is_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = sink(dir.path());
        write(&mut s, "1\n");
        std::fs::remove_file(dir.path().join("out.jsonl")).unwrap();
        write(&mut s, "2\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap(),
            "2\n"
        );
    }

    #[test]
    fn copytruncate_keeps_appending_at_the_new_end() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = sink(dir.path());
        write(&mut s, "first line\n");
        OpenOptions::new()
            .write(true)
            .open(dir.path().join("out.jsonl"))
            .unwrap()
            .set_len(0)
            .unwrap();
        write(&mut s, "2\n");
        // No hole of NULs where the old content was: O_APPEND writes at the new end.
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap(),
            "2\n"
        );
    }

    #[test]
    fn sighup_reopens_even_when_the_inode_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, flag) = sink(dir.path());
        flag.store(true, Ordering::Release);
        write(&mut s, "1\n");
        assert!(!flag.load(Ordering::Acquire));
    }

    #[test]
    fn a_partial_last_line_from_a_crash_is_cut_before_the_first_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
        let (mut s, _) = sink(dir.path());
        write(&mut s, "{\"c\":3}\n");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n"
        );
        // A file that is nothing but a fragment is emptied; a whole file is left as it is.
        std::fs::write(&path, "{\"torn\":").unwrap();
        drop(sink(dir.path()));
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        std::fs::write(&path, "whole\n").unwrap();
        drop(sink(dir.path()));
        assert_eq!(std::fs::read(&path).unwrap(), b"whole\n");
    }

    #[test]
    fn an_unwritable_path_names_itself() {
        let err = FileSink::open(
            Path::new("/nonexistent-dir/out.jsonl"),
            false,
            Arc::default(),
        )
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .starts_with("cannot open output file /nonexistent-dir/out.jsonl: "),
            "{err}"
        );
    }
}
