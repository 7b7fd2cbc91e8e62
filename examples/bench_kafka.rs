//! The Kafka sink against the file sink on the same replayed input: events per second and CPU
//! microseconds per event of the pipe process, for each compression codec.
//!
//! ```sh
//! cargo build --release --bins --examples
//! target/release/examples/bench_kafka --events 100000 [--runs 3]
//! ```
//!
//! The broker is the tests' Tansu behind their relay (tests/support/kafka.rs; `.ci/run`
//! installs it). Each run starts from an empty filter directory, so every occurrence is
//! written; each Kafka run writes to a topic of its own (3 partitions). CPU is the pipe's
//! user + sys time from wait4's rusage; the broker's and the relay's CPU are not counted.

#[path = "../tests/support/kafka.rs"]
#[allow(dead_code)]
mod kafka;
#[path = "../tests/support/relay.rs"]
mod relay;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube_event_pipe::synth::{SynthConfig, generate};

fn main() {
    let mut events = 100_000usize;
    let mut runs = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (a.as_str(), value) {
            ("--events", Some(v)) => events = v,
            ("--runs", Some(v)) => runs = v,
            _ => fail("usage: bench_kafka [--events N] [--runs N]"),
        }
    }
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("kube-event-pipe")))
        .unwrap_or_default();
    if !binary.is_file() {
        fail(
            "target/release/kube-event-pipe not found; run `cargo build --release --bins --examples`",
        );
    }
    let Some(tools) = kafka::Tools::find() else {
        fail("the Kafka tools are missing (bash .ci/run installs them)");
    };
    let work = std::env::temp_dir().join("kep-bench-kafka");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap_or_else(|e| fail(&e.to_string()));
    let stream = generate(&SynthConfig {
        envelopes: events,
        seed: 42,
        ..SynthConfig::default()
    });
    let input = work.join("input.jsonl");
    std::fs::write(&input, &stream.text).unwrap_or_else(|e| fail(&e.to_string()));
    let occurrences = stream.occurrences.len();
    println!(
        "{events} envelopes, {occurrences} occurrences, {} bytes of input",
        stream.text.len()
    );
    let broker = kafka::Broker::start(&tools, false);
    println!("| sink | run | wall | events/s | CPU user+sys | CPU µs/event |");
    println!("|---|---|---|---|---|---|");
    let mut topic_n = 0;
    for run in 1..=runs {
        let out = work.join("out.jsonl");
        let _ = std::fs::remove_file(&out);
        let m = measure(
            &binary,
            &work,
            &input,
            &["--sink", "file", "--destination"],
            Some(&out),
        );
        report("file (fdatasync)", run, occurrences, m);
        for codec in ["none", "lz4", "zstd", "snappy", "gzip"] {
            topic_n += 1;
            let topic = format!("bench-{topic_n}");
            broker.create_topic(&tools, &topic, 3);
            let address = broker.address();
            let m = measure(
                &binary,
                &work,
                &input,
                &[
                    "--sink",
                    "kafka",
                    "--kafka-brokers",
                    &address,
                    "--kafka-topic",
                    &topic,
                    "--kafka-compression",
                    codec,
                ],
                None,
            );
            report(&format!("kafka {codec}"), run, occurrences, m);
        }
    }
}

fn report(sink: &str, run: usize, occurrences: usize, (wall, cpu): (Duration, Duration)) {
    println!(
        "| {sink} | {run} | {:.2} s | {:.0} | {:.2} s | {:.1} |",
        wall.as_secs_f64(),
        occurrences as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / occurrences as f64
    );
}

/// Runs the pipe once over `input` from an empty filter directory; returns wall and CPU time.
fn measure(
    binary: &Path,
    work: &Path,
    input: &Path,
    args: &[&str],
    path_arg: Option<&PathBuf>,
) -> (Duration, Duration) {
    let filters = work.join("filters");
    let _ = std::fs::remove_dir_all(&filters);
    let mut cmd = Command::new(binary);
    cmd.args([
        "--source",
        "replay",
        "--log-level",
        "ERROR",
        "--replay-file",
    ])
    .arg(input)
    .arg("--persistence-path")
    .arg(&filters)
    .args(args)
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    if let Some(p) = path_arg {
        cmd.arg(p);
    }
    let started = Instant::now();
    // Reaped by wait4 below, which also gives its rusage.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().unwrap_or_else(|e| fail(&e.to_string()));
    let mut status = 0;
    // SAFETY: rusage is plain data, and wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    if r < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        fail(&format!("the pipe failed (status {status})"));
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (wall, tv(usage.ru_utime) + tv(usage.ru_stime))
}

fn fail(msg: &str) -> ! {
    eprintln!("bench_kafka: {msg}");
    std::process::exit(1);
}
