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
    /// The file is sound but its blocks cannot all be reserved: the volume is full. Not a
    /// reason to quarantine it; the ring reports it as a space shortage.
    #[error("cannot reserve its blocks: {0}")]
    NoSpace(std::io::Error),
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
        // A file written sparse (by an earlier version, or copied with holes) would take its
        // blocks only when a page of the map is first touched; on a full volume that is a
        // SIGBUS. Reserving them now turns it into an error here.
        reserve(&file, len).map_err(|e| {
            if is_no_space(&e) {
                OpenFileError::NoSpace(e)
            } else {
                OpenFileError::Io(e)
            }
        })?;
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
    /// complete one. Every block is reserved before the file is mapped, so a full volume is an
    /// `ENOSPC` error here (and the temporary file is removed) instead of a SIGBUS later.
    pub fn create(path: &Path, header: Header) -> std::io::Result<Self> {
        let tmp = path.with_extension("filter.tmp");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        if let Err(e) = reserve(&file, header.file_len()) {
            drop(file);
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
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

/// Allocates every block of the file's first `len` bytes (extending it to `len`), so that no
/// later store through a mapping of it can fault for want of space. Data already in the file is
/// kept. Where the filesystem has no fallocate, each block is read and written back instead.
pub fn reserve(file: &File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let Ok(off_len) = libc::off_t::try_from(len) else {
        return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
    };
    loop {
        // SAFETY: posix_fallocate on a descriptor this function borrows for the call; it
        // touches no memory of ours.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, off_len) };
        match rc {
            0 => return Ok(()),
            libc::EINTR => continue,
            libc::EOPNOTSUPP | libc::EINVAL => return rewrite_in_place(file, len),
            errno => return Err(std::io::Error::from_raw_os_error(errno)),
        }
    }
}

/// The fallback of [`reserve`]: rewrites every block with its own content (zeros past the end),
/// which allocates it on any filesystem.
fn rewrite_in_place(file: &File, len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut chunk = vec![0u8; 1 << 16];
    let mut at = 0u64;
    while at < len {
        let n = chunk.len().min((len - at) as usize);
        let buf = &mut chunk[..n];
        buf.fill(0);
        let mut got = 0;
        while got < n {
            match file.read_at(&mut buf[got..], at + got as u64) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        file.write_all_at(buf, at)?;
        at += n as u64;
    }
    Ok(())
}

/// Whether an I/O error means the volume (or the user's quota on it) is full.
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Bytes an unprivileged process may still allocate on the volume holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `stat` is a
    // properly sized buffer that statvfs fills when it returns 0.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between libc targets
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
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
