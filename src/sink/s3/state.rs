//! The stream id and the run counter, kept in the persistence directory so that object keys
//! of one directory's stream never change between runs and never collide across runs.

use std::path::Path;

use super::S3Error;

/// The file holding the stream id when none is configured.
const UID_FILE: &str = "stream-uid";
/// The file counting process starts, which keeps object keys of different runs apart.
const RUN_FILE: &str = "stream-run";

/// The stream id: `--uid`, else the one stored in the persistence directory, else
/// `discovered` (the kube-system namespace's UID), else a new UUID; a new id is stored, so the
/// keys of one directory's stream never change between runs.
pub fn stream_uid(
    configured: Option<&str>,
    dir: &Path,
    discovered: Option<String>,
) -> Result<String, S3Error> {
    if let Some(uid) = configured {
        return Ok(uid.to_owned());
    }
    let path = dir.join(UID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let uid = text.trim();
            let valid = !uid.is_empty()
                && uid.len() <= 128
                && uid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if valid {
                Ok(uid.to_owned())
            } else {
                Err(S3Error::BadState {
                    path,
                    content: text,
                    expected: "a stream id (or pass --uid)",
                })
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let uid = discovered.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            write_durably(&path, &uid)?;
            Ok(uid)
        }
        Err(source) => Err(S3Error::State {
            action: "read",
            path,
            source,
        }),
    }
}

/// Whether a stream id is stored, so that discovering one from the cluster can be skipped.
pub fn has_stream_uid(dir: &Path) -> bool {
    dir.join(UID_FILE).exists()
}

/// Bumps and returns the run counter. Called once per start, after the persistence directory is
/// locked, so no two processes share a number.
pub fn next_run(dir: &Path) -> Result<u64, S3Error> {
    let path = dir.join(RUN_FILE);
    let previous = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|_| S3Error::BadState {
            path: path.clone(),
            content: text.clone(),
            expected: "a run number",
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(source) => {
            return Err(S3Error::State {
                action: "read",
                path,
                source,
            });
        }
    };
    let run = previous + 1;
    write_durably(&path, &run.to_string())?;
    Ok(run)
}

/// Writes through a temporary file, fsynced and renamed, so a crash leaves the old or the new
/// content, never a torn one.
fn write_durably(path: &Path, content: &str) -> Result<(), S3Error> {
    let fail = |action, source| S3Error::State {
        action,
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(|e| fail("create", e))?;
        f.write_all(content.as_bytes())
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .map_err(|e| fail("write", e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| fail("rename into", e))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail("sync the directory of", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_id_and_run_counter_persist() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(stream_uid(Some("x"), dir.path(), None).unwrap(), "x");
        let first = stream_uid(None, dir.path(), Some("kube-system-uid".into())).unwrap();
        assert_eq!(first, "kube-system-uid");
        // Stored: a later run that cannot reach the cluster keeps the same id.
        assert_eq!(stream_uid(None, dir.path(), None).unwrap(), first);
        assert_eq!(next_run(dir.path()).unwrap(), 1);
        assert_eq!(next_run(dir.path()).unwrap(), 2);
        std::fs::write(dir.path().join(RUN_FILE), "junk").unwrap();
        assert!(
            next_run(dir.path())
                .unwrap_err()
                .to_string()
                .contains("not a run number")
        );
    }
}
