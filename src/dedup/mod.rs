//! Persistent deduplication: rotating memory-mapped bloom filter generations.
