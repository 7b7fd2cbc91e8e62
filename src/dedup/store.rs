//! One filter generation on disk: created crash-safely, checked before it is mapped, mapped
//! `MAP_SHARED` so every committed bit is in the page cache the moment it is set.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use memmap2::{MmapMut, MmapOptions};

use super::filter;
use super::header::{HEADER_LEN, Header, HeaderError};
use crate::event::OccurrenceKey;

/// Why an existing file cannot serve as a generation. The ring quarantines such files.
#[derive(Debug, thiserror::Error)]
pub enum OpenFileError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("cannot read or map it: {0}")]
    Io(#[from] std::io::Error),
}

pub struct FilterFile {
    path: PathBuf,
    header: Header,
    map: MmapMut,
    /// Bits were set since the last flush.
    dirty: bool,
}

impl FilterFile {
    /// Opens and maps an existing generation. The length is checked against the header before
    /// mapping: touching a mapping past the end of a truncated file raises SIGBUS.
    pub fn open(path: &Path) -> Result<Self, OpenFileError> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        let mut head = [0u8; HEADER_LEN];
        let got = read_prefix(&file, &mut head)?;
        let header = Header::sanity_check(&head[..got], len)?;
        // SAFETY: the length matches the header (checked above) and this process holds the
        // directory lock, so no other kube-event-pipe truncates the file while it is mapped.
        let map = unsafe { MmapOptions::new().map_mut(&file)? };
        // Check again through the map: the file could have changed between read and map.
        Header::sanity_check(&map, map.len() as u64)?;
        Ok(FilterFile {
            path: path.to_path_buf(),
            header,
            map,
            dirty: false,
        })
    }

    /// Creates a new generation at `path`: written and sized under a temporary name, synced,
    /// renamed into place, and the directory synced, so a crash leaves either no file or a
    /// complete one.
    pub fn create(path: &Path, header: Header) -> std::io::Result<Self> {
        let tmp = path.with_extension("filter.tmp");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.set_len(header.file_len())?;
        // SAFETY: the file was just sized to the header's length and is not yet visible under
        // its final name.
        let mut map = unsafe { MmapOptions::new().map_mut(&file)? };
        header.write(&mut map);
        map.flush()?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(FilterFile {
            path: path.to_path_buf(),
            header,
            map,
            dirty: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    #[inline]
    pub fn contains(&self, key: OccurrenceKey) -> bool {
        filter::contains(&self.map[HEADER_LEN..], &self.header, key)
    }

    #[inline]
    pub fn prefetch(&self, key: OccurrenceKey, probes: u32) {
        filter::prefetch(&self.map[HEADER_LEN..], &self.header, key, probes);
    }

    /// Sets the key's bits; the header's count is updated by `store_inserted`.
    #[inline]
    pub fn insert(&mut self, key: OccurrenceKey) {
        if filter::insert(&mut self.map[HEADER_LEN..], &self.header, key) {
            self.header.inserted += 1;
        }
        self.dirty = true;
    }

    /// Writes the inserted count and checksum into the mapped header, once per commit.
    pub fn store_inserted(&mut self) {
        self.header.write_inserted(&mut self.map);
    }

    pub fn is_full(&self) -> bool {
        self.header.inserted >= self.header.capacity
    }

    pub fn fill_ratio(&self) -> f64 {
        filter::fill_ratio(&self.map[HEADER_LEN..])
    }

    /// Synchronous flush (msync MS_SYNC). MS_ASYNC would do nothing on Linux.
    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.dirty {
            self.map.flush()?;
            self.dirty = false;
        }
        Ok(())
    }
}

/// Reads up to `buf.len()` bytes from the start of the file.
fn read_prefix(file: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// fsync of a directory, so a rename or unlink in it survives a power loss.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}
