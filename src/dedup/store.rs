//! One filter generation on disk: created crash-safely, checked before it is mapped, mapped
//! `MAP_SHARED` so every committed bit is in the page cache the moment it is set.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

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

/// A mapped generation. The map is a raw mapping shared with [`Flush`] handles, so the
/// periodic msync can run on another thread while this one keeps setting bits: msync reads no
/// memory through Rust, and only this struct ever forms slices over the map.
pub struct FilterFile {
    path: PathBuf,
    header: Header,
    map: Arc<MmapRaw>,
    /// Bits were set since the last flush was handed out or done.
    dirty: bool,
}

/// A synchronous flush (msync MS_SYNC) of one generation, to run off the dedup stage's thread.
pub struct Flush {
    path: PathBuf,
    map: Arc<MmapRaw>,
}

impl Flush {
    pub fn run(&self) -> std::io::Result<()> {
        self.map.flush()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
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
        // The length matches the header (checked above) and this process holds the directory
        // lock, so no other kube-event-pipe truncates the file while it is mapped.
        let map = MmapOptions::new().map_raw(&file)?;
        let generation = FilterFile {
            path: path.to_path_buf(),
            header,
            map: Arc::new(map),
            dirty: false,
        };
        // Check again through the map: the file could have changed between read and map.
        let bytes = generation.bytes();
        Header::sanity_check(bytes, bytes.len() as u64)?;
        Ok(generation)
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
        let mut generation = FilterFile {
            path: path.to_path_buf(),
            header,
            map: Arc::new(MmapOptions::new().map_raw(&file)?),
            dirty: false,
        };
        header.write(generation.bytes_mut());
        generation.map.flush()?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(generation)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping lives as long as `self.map`; its length was checked against the
        // file's (and the directory lock keeps other instances from truncating the file). Only
        // this struct forms references into it, and `&self` excludes `bytes_mut` meanwhile;
        // `Flush` handles only pass the address to msync.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.map.len()) }
    }

    #[inline]
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr(), self.map.len()) }
    }

    #[inline]
    pub fn contains(&self, key: OccurrenceKey) -> bool {
        filter::contains(&self.bytes()[HEADER_LEN..], &self.header, key)
    }

    #[inline]
    pub fn prefetch(&self, key: OccurrenceKey, probes: u32) {
        filter::prefetch(&self.bytes()[HEADER_LEN..], &self.header, key, probes);
    }

    /// Sets the key's bits; the header's count is updated by `store_inserted`.
    #[inline]
    pub fn insert(&mut self, key: OccurrenceKey) {
        let header = self.header;
        // Every commit counts, also one whose bits were all set already: capacity is the
        // number of keys the sizing formula was given, and the pipeline never commits a key
        // the ring already reports, so in practice every commit is a new key.
        filter::insert(&mut self.bytes_mut()[HEADER_LEN..], &header, key);
        self.header.inserted += 1;
        self.dirty = true;
    }

    /// Writes the inserted count and checksum into the mapped header, once per commit.
    pub fn store_inserted(&mut self) {
        let header = self.header;
        header.write_inserted(self.bytes_mut());
    }

    pub fn is_full(&self) -> bool {
        self.header.inserted >= self.header.capacity
    }

    pub fn fill_ratio(&self) -> f64 {
        filter::fill_ratio(&self.bytes()[HEADER_LEN..])
    }

    /// Synchronous flush (msync MS_SYNC) on this thread. MS_ASYNC would do nothing on Linux.
    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.dirty {
            self.map.flush()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// A flush to run elsewhere if bits were set since the last one. The generation counts as
    /// clean from here on: a flush that then fails is logged by whoever runs it, and the next
    /// bits set make it dirty again.
    pub fn take_flush(&mut self) -> Option<Flush> {
        std::mem::take(&mut self.dirty).then(|| Flush {
            path: self.path.clone(),
            map: Arc::clone(&self.map),
        })
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
