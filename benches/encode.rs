//! Per-event costs on the way in and out: reading an event's key fields from its raw JSON
//! (the one scanning pass, against the two serde passes it replaced), and encoding a batch of
//! 500 as JSON lines, as gzip of those lines, and as gzip of protobuf records.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kube_event_pipe::config::OutputFormat;
use kube_event_pipe::encode::json::LineEncoder;
use kube_event_pipe::encode::object::gzip;
use kube_event_pipe::encode::proto::ProtoEncoder;
use kube_event_pipe::event::{Change, EventRecord, SharedText};
use kube_event_pipe::scan;
use kube_event_pipe::synth::{SynthConfig, generate};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Watch lines of realistic synthetic events (600–1500 bytes, both styles).
fn lines(n: usize) -> Vec<SharedText> {
    let stream = generate(&SynthConfig {
        envelopes: n,
        seed: 3,
        ..SynthConfig::default()
    });
    stream
        .text
        .lines()
        .filter(|l| l.starts_with("{\"type\""))
        .map(SharedText::from)
        .collect()
}

fn records(lines: &[SharedText]) -> Vec<EventRecord> {
    lines
        .iter()
        .filter_map(|l| {
            let e = scan::envelope(l.as_str()).ok()?;
            let (span, fields) = e.object?;
            EventRecord::from_scanned(Change::Added, l, span, &fields).ok()
        })
        .collect()
}

/// The envelope as the pipe read it before the scanner: serde_json into a RawValue, then the
/// object again for the key's fields.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    object: &'a RawValue,
}

fn key_from_raw(c: &mut Criterion) {
    let lines = lines(2000);
    let bytes: usize = lines.iter().map(|l| l.as_str().len()).sum();
    let mut group = c.benchmark_group("key from raw JSON");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function(
        format!(
            "scan + record, {} events of {} B",
            lines.len(),
            bytes / lines.len()
        ),
        |b| {
            b.iter(|| {
                for l in &lines {
                    let e = scan::envelope(black_box(l.as_str())).unwrap();
                    let (span, fields) = e.object.unwrap();
                    let r = EventRecord::from_scanned(Change::Added, l, span, &fields);
                    black_box(r.unwrap().key);
                }
            })
        },
    );
    group.bench_function("serde_json two passes (the former path)", |b| {
        b.iter(|| {
            for l in &lines {
                let e: Envelope<'_> = serde_json::from_str(black_box(l.as_str())).unwrap();
                black_box(EventRecord::from_raw(Change::Added, e.object).unwrap().key);
            }
        })
    });
    group.finish();
}

fn batch_encoding(c: &mut Criterion) {
    let records = records(&lines(600));
    let batch = &records[..500];
    let mut group = c.benchmark_group("batch of 500");
    group.throughput(Throughput::Elements(batch.len() as u64));
    let lines_enc = LineEncoder::new(OutputFormat::Raw, None);
    let mut out = Vec::with_capacity(1 << 20);
    group.bench_function("JSON lines", |b| {
        b.iter(|| {
            out.clear();
            for r in batch {
                lines_enc.encode(r, None, None, &mut out);
            }
            black_box(out.len());
        })
    });
    group.bench_function("JSON lines + gzip", |b| {
        b.iter(|| {
            out.clear();
            for r in batch {
                lines_enc.encode(r, None, None, &mut out);
            }
            black_box(gzip(&out).len());
        })
    });
    let proto = ProtoEncoder::new(None);
    let mut pb = Vec::with_capacity(1 << 20);
    group.bench_function("protobuf + gzip", |b| {
        b.iter(|| {
            pb.clear();
            for r in batch {
                proto.encode(r, None, &mut pb);
            }
            black_box(gzip(&pb).len());
        })
    });
    group.finish();
}

criterion_group!(benches, key_from_raw, batch_encoding);
criterion_main!(benches);
