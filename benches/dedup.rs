//! Dedup cost per key: `contains` and `contains + commit` over a ring of 3 generations of 1M
//! capacity at the default 1e-6, the production shape. Goal: ≤ 100 ns per key.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kube_event_pipe::dedup::{ManualClock, Ring, RingConfig};
use kube_event_pipe::event::OccurrenceKey;

const CAPACITY: u64 = 1_000_000;

fn key(i: u64) -> OccurrenceKey {
    OccurrenceKey::new("production", "checkout-7f9c-abcde.17a2b3c4d5e6f708", i)
}

/// A ring with three generations, each filled to half its capacity, as in steady state.
fn full_ring(dir: &std::path::Path) -> (Ring, std::sync::Arc<ManualClock>) {
    let clock = std::sync::Arc::new(ManualClock::new(std::time::SystemTime::now()));
    let mut ring = Ring::open_with_clock(
        RingConfig {
            dir: dir.to_path_buf(),
            generations: 3,
            capacity: CAPACITY,
            error_rate: 1e-6,
            rotation_interval: Duration::from_secs(3600),
        },
        clock.clone(),
    )
    .expect("open ring");
    for g in 0..3u64 {
        let keys: Vec<_> = (0..CAPACITY / 2).map(|i| key(g * CAPACITY + i)).collect();
        ring.commit(&keys).expect("commit");
        if g < 2 {
            clock.advance(Duration::from_secs(3600));
            ring.rotate_if_due().expect("rotate");
        }
    }
    (ring, clock)
}

fn dedup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut ring, _clock) = full_ring(dir.path());
    let mut group = c.benchmark_group("dedup");
    group.throughput(Throughput::Elements(1));

    // Keys are derived beforehand: the source computes each key once, and its cost is
    // measured on its own ("key").
    let fresh: Vec<_> = (0..1_000_000).map(|i| key(10 * CAPACITY + i)).collect();
    let seen: Vec<_> = (0..CAPACITY / 2).map(key).collect();
    let mut i = 0;
    group.bench_function("contains/new key", |b| {
        b.iter(|| {
            i = (i + 1) % fresh.len();
            black_box(ring.contains(black_box(fresh[i])))
        })
    });
    let mut j = 0;
    group.bench_function("contains/seen key (oldest generation)", |b| {
        b.iter(|| {
            j = (j + 1) % seen.len();
            black_box(ring.contains(black_box(seen[j])))
        })
    });
    let mut n = 0u64;
    group.bench_function("key", |b| {
        b.iter(|| {
            n += 1;
            black_box(key(black_box(n)))
        })
    });
    // The pipeline checks a source hand-off and commits a batch's keys in one call each;
    // measured per key over batches of 500.
    let mut verdicts = Vec::new();
    group.throughput(Throughput::Elements(500));
    let mut c = 0;
    group.bench_function("contains_many/batch of 500 new keys", |b| {
        b.iter(|| {
            c = (c + 500) % (fresh.len() - 500);
            ring.contains_many(black_box(&fresh[c..c + 500]), &mut verdicts);
            black_box(&verdicts);
        })
    });
    let mut m = 20 * CAPACITY;
    group.bench_function("contains_many+commit/batch of 500 new keys", |b| {
        b.iter_batched(
            || {
                let keys: Vec<_> = (0..500).map(|k| key(m + k)).collect();
                m += 500;
                keys
            },
            |keys| {
                ring.contains_many(&keys, &mut verdicts);
                black_box(&verdicts);
                ring.commit(&keys).expect("commit");
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Rotation stalls the dedup stage: the new file is created, sized and synced with its
/// directory, and the oldest deleted. The retired generation's msync runs on the flush thread;
/// its cost is measured on its own. Both with every page of the newest generation dirty.
fn rotation(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut ring, clock) = full_ring(dir.path());
    let mut group = c.benchmark_group("rotation");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let mut n = 50 * CAPACITY;
    let mut dirty = |ring: &mut Ring| {
        // 100k keys × 20 probes touch every page of a 3.6 MB generation.
        let keys: Vec<_> = (0..100_000).map(|k| key(n + k)).collect();
        n += 100_000;
        ring.commit(&keys).expect("commit");
    };
    group.bench_function("rotate (dedup stage)", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                dirty(&mut ring);
                clock.advance(Duration::from_secs(3600));
                let started = std::time::Instant::now();
                assert!(ring.rotate_if_due().expect("rotate"));
                spent += started.elapsed();
                for flush in ring.take_flushes() {
                    flush.run().expect("flush");
                }
            }
            spent
        })
    });
    group.bench_function("msync of a dirty 1M/1e-6 generation (flush thread)", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                dirty(&mut ring);
                let flushes = ring.take_flushes();
                let started = std::time::Instant::now();
                for flush in &flushes {
                    flush.run().expect("flush");
                }
                spent += started.elapsed();
            }
            spent
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = dedup, rotation
}
criterion_main!(benches);
