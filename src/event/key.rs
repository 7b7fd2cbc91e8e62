//! The occurrence key: what the dedup filters remember of an event.

use std::fmt;

use xxhash_rust::xxh3::xxh3_128;

/// One occurrence of an event: `namespace/name/count`, hashed with xxh3-128.
///
/// The hash is persisted (its halves index the on-disk filters), so its input encoding is part
/// of the file format: the namespace's length (u64 little-endian) and bytes, the name's length
/// and bytes, then the count as u64 little-endian, hashed with xxh3-128 and seed 0. Length
/// prefixes keep `a`+`b/c` apart from `a/b`+`c` whatever bytes the names hold. Changing any of
/// that makes every existing filter forget what it delivered.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OccurrenceKey(pub u128);

impl OccurrenceKey {
    pub fn new(namespace: &str, name: &str, count: u64) -> Self {
        // One-shot hashing over a stack buffer: the streaming hasher's setup costs more than
        // hashing a typical 60-byte key. Names are at most 253 bytes, so this is the usual path.
        let len = 8 + namespace.len() + 8 + name.len() + 8;
        let mut stack = [0u8; 576];
        let mut heap = Vec::new();
        let buf: &mut [u8] = if len <= stack.len() {
            &mut stack[..len]
        } else {
            heap.resize(len, 0);
            &mut heap
        };
        let mut at = 0;
        for part in [namespace.as_bytes(), name.as_bytes()] {
            buf[at..at + 8].copy_from_slice(&(part.len() as u64).to_le_bytes());
            at += 8;
            buf[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        buf[at..at + 8].copy_from_slice(&count.to_le_bytes());
        OccurrenceKey(xxh3_128(buf))
    }

    /// The two 64-bit halves that drive double hashing in the filter.
    #[inline]
    pub fn halves(self) -> (u64, u64) {
        ((self.0 >> 64) as u64, self.0 as u64)
    }
}

impl fmt::Debug for OccurrenceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OccurrenceKey({:032x})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_encoding_is_stable() {
        // Persisted in every filter file: this value must never change.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&7u64.to_le_bytes());
        bytes.extend_from_slice(b"default");
        bytes.extend_from_slice(&5u64.to_le_bytes());
        bytes.extend_from_slice(b"pod.1");
        bytes.extend_from_slice(&3u64.to_le_bytes());
        assert_eq!(
            OccurrenceKey::new("default", "pod.1", 3).0,
            xxh3_128(&bytes)
        );
        let long = "n".repeat(1000);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&1000u64.to_le_bytes());
        bytes.extend_from_slice(long.as_bytes());
        bytes.extend_from_slice(&1u64.to_le_bytes());
        assert_eq!(OccurrenceKey::new("", &long, 1).0, xxh3_128(&bytes));
    }

    #[test]
    fn key_encoding_separates_fields() {
        // "a" + "b/c" must not collide with "a/b" + "c".
        assert_ne!(
            OccurrenceKey::new("a", "b\0c", 1),
            OccurrenceKey::new("a\0b", "c", 1)
        );
    }
}
