//! The filter file's fixed header: byte arrays read through little-endian accessors.
//!
//! Layout (format version 2, 128 bytes; the bit array starts right after it, 64-byte aligned):
//!
//! | offset | size | field                                            |
//! |-------:|-----:|--------------------------------------------------|
//! |      0 |    8 | magic `KEPBLOOM`                                 |
//! |      8 |    4 | format version                                   |
//! |     12 |    4 | header length                                    |
//! |     16 |    4 | layout (1 = standard bloom, double hashing)      |
//! |     20 |    4 | hash count                                       |
//! |     24 |    8 | bit count (a multiple of 64)                     |
//! |     32 |    8 | capacity (keys)                                  |
//! |     40 |    8 | target false-positive rate (f64 bits)            |
//! |     48 |    8 | created at (unix seconds)                        |
//! |     56 |    8 | hash seed                                        |
//! |     64 |    8 | inserted keys                                    |
//! |     72 |   48 | reserved, zero                                   |
//! |    120 |    8 | xxh3-64 of bytes 0..120                          |
//!
//! Persisted format: never reorder or resize these fields. A change needs a new version, and
//! files of older versions must keep loading.

use thiserror::Error;
use xxhash_rust::xxh3::xxh3_64;

pub const MAGIC: [u8; 8] = *b"KEPBLOOM";
/// 2: probes stepped modulo the bit count (version 1 files probe differently and are not read).
pub const VERSION: u32 = 2;
pub const HEADER_LEN: usize = 128;
pub const LAYOUT_STANDARD: u32 = 1;
/// The largest bit array accepted (128 GiB of bits is far beyond any sane capacity): guards
/// size arithmetic against a corrupt header.
pub const MAX_BITS: u64 = 1 << 40;

const CHECKSUM_AT: usize = 120;

/// Filter parameters and state as stored in the header.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Header {
    pub hash_count: u32,
    pub bit_count: u64,
    pub capacity: u64,
    pub error_rate: f64,
    pub created_at: u64,
    pub seed: u64,
    pub inserted: u64,
}

/// Why a file is not a usable filter. One variant per kind of damage, so the log says exactly
/// what is wrong.
#[derive(Debug, Error, PartialEq)]
pub enum HeaderError {
    #[error("file is {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort { len: u64 },
    #[error("bad magic {found:02x?} (not a kube-event-pipe filter)")]
    BadMagic { found: [u8; 8] },
    #[error("unsupported format version {0} (this build reads version {VERSION})")]
    UnsupportedVersion(u32),
    #[error("header checksum mismatch: stored {stored:016x}, computed {computed:016x}")]
    BadChecksum { stored: u64, computed: u64 },
    #[error("invalid header field {field}: {value}")]
    BadField { field: &'static str, value: String },
    #[error("file is {actual} bytes but its header describes {expected}")]
    WrongSize { expected: u64, actual: u64 },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl Header {
    /// The file length this header describes.
    pub fn file_len(&self) -> u64 {
        HEADER_LEN as u64 + self.bit_count / 8
    }

    /// Writes the header, with its checksum, into the first `HEADER_LEN` bytes of `out`.
    pub fn write(&self, out: &mut [u8]) {
        let h = &mut out[..HEADER_LEN];
        h.fill(0);
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        h[16..20].copy_from_slice(&LAYOUT_STANDARD.to_le_bytes());
        h[20..24].copy_from_slice(&self.hash_count.to_le_bytes());
        h[24..32].copy_from_slice(&self.bit_count.to_le_bytes());
        h[32..40].copy_from_slice(&self.capacity.to_le_bytes());
        h[40..48].copy_from_slice(&self.error_rate.to_bits().to_le_bytes());
        h[48..56].copy_from_slice(&self.created_at.to_le_bytes());
        h[56..64].copy_from_slice(&self.seed.to_le_bytes());
        self.write_inserted(out);
    }

    /// Updates only the inserted count and the checksum: the per-commit header write.
    pub fn write_inserted(&self, out: &mut [u8]) {
        out[64..72].copy_from_slice(&self.inserted.to_le_bytes());
        let sum = xxh3_64(&out[..CHECKSUM_AT]);
        out[CHECKSUM_AT..HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    }

    /// Parses and checks a header against the whole file's length. Never panics on any input.
    pub fn sanity_check(bytes: &[u8], file_len: u64) -> Result<Header, HeaderError> {
        if bytes.len() < HEADER_LEN || file_len < HEADER_LEN as u64 {
            return Err(HeaderError::TooShort {
                len: file_len.min(bytes.len() as u64),
            });
        }
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&bytes[0..8]);
        if magic != MAGIC {
            return Err(HeaderError::BadMagic { found: magic });
        }
        let version = u32_at(bytes, 8);
        if version != VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        let stored = u64_at(bytes, CHECKSUM_AT);
        let computed = xxh3_64(&bytes[..CHECKSUM_AT]);
        if stored != computed {
            return Err(HeaderError::BadChecksum { stored, computed });
        }
        let bad = |field: &'static str, value: String| Err(HeaderError::BadField { field, value });
        let header_len = u32_at(bytes, 12);
        if header_len as usize != HEADER_LEN {
            return bad("header length", header_len.to_string());
        }
        let layout = u32_at(bytes, 16);
        if layout != LAYOUT_STANDARD {
            return bad("layout", layout.to_string());
        }
        let h = Header {
            hash_count: u32_at(bytes, 20),
            bit_count: u64_at(bytes, 24),
            capacity: u64_at(bytes, 32),
            error_rate: f64::from_bits(u64_at(bytes, 40)),
            created_at: u64_at(bytes, 48),
            seed: u64_at(bytes, 56),
            inserted: u64_at(bytes, 64),
        };
        if !(1..=64).contains(&h.hash_count) {
            return bad("hash count", h.hash_count.to_string());
        }
        if h.bit_count == 0 || !h.bit_count.is_multiple_of(64) || h.bit_count > MAX_BITS {
            return bad("bit count", h.bit_count.to_string());
        }
        if h.capacity == 0 {
            return bad("capacity", "0".into());
        }
        if !(h.error_rate > 0.0 && h.error_rate < 1.0) {
            return bad("error rate", h.error_rate.to_string());
        }
        if file_len != h.file_len() {
            return Err(HeaderError::WrongSize {
                expected: h.file_len(),
                actual: file_len,
            });
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            hash_count: 20,
            bit_count: 64 * 100,
            capacity: 200,
            error_rate: 1e-6,
            created_at: 1_700_000_000,
            seed: 42,
            inserted: 7,
        }
    }

    fn bytes(h: &Header) -> Vec<u8> {
        let mut b = vec![0u8; h.file_len() as usize];
        h.write(&mut b);
        b
    }

    #[test]
    fn a_written_header_reads_back() {
        let h = sample();
        let b = bytes(&h);
        assert_eq!(Header::sanity_check(&b, b.len() as u64), Ok(h));
    }

    #[test]
    fn each_kind_of_damage_is_named() {
        let h = sample();
        let good = bytes(&h);
        let len = good.len() as u64;
        assert_eq!(
            Header::sanity_check(&good[..10], 10),
            Err(HeaderError::TooShort { len: 10 })
        );
        let mut zeroed = good.clone();
        zeroed[..HEADER_LEN].fill(0);
        assert!(matches!(
            Header::sanity_check(&zeroed, len),
            Err(HeaderError::BadMagic { .. })
        ));
        let mut flipped = good.clone();
        flipped[CHECKSUM_AT] ^= 1;
        assert!(matches!(
            Header::sanity_check(&flipped, len),
            Err(HeaderError::BadChecksum { .. })
        ));
        let mut field = good.clone();
        field[32] ^= 0xff; // capacity changed without a new checksum
        assert!(matches!(
            Header::sanity_check(&field, len),
            Err(HeaderError::BadChecksum { .. })
        ));
        assert_eq!(
            Header::sanity_check(&good, len - 8),
            Err(HeaderError::WrongSize {
                expected: len,
                actual: len - 8
            })
        );
        // Version 1 probed differently: reading its bits with this scheme would miss keys.
        for version in [1u8, 3] {
            let mut other = good.clone();
            other[8] = version;
            assert_eq!(
                Header::sanity_check(&other, len),
                Err(HeaderError::UnsupportedVersion(u32::from(version)))
            );
        }
    }

    #[test]
    fn checksummed_nonsense_fields_are_rejected() {
        let mut h = sample();
        h.hash_count = 0;
        let b = bytes(&h);
        assert!(matches!(
            Header::sanity_check(&b, b.len() as u64),
            Err(HeaderError::BadField {
                field: "hash count",
                ..
            })
        ));
        let mut h = sample();
        h.error_rate = f64::NAN;
        let b = bytes(&h);
        assert!(matches!(
            Header::sanity_check(&b, b.len() as u64),
            Err(HeaderError::BadField {
                field: "error rate",
                ..
            })
        ));
    }
}
