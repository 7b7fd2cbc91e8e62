//! The end-to-end benchmark: the release binary against the test API server over HTTPS, writing
//! to a file, in three scenarios, each beside the raw rate of the same server.
//!
//! ```sh
//! cargo build --release --bins --examples
//! target/release/examples/bench --events 100000
//! ```
//!
//! - (a) cold start: N events present, an empty state directory; done at the N-th line.
//! - (b) steady watch: the pipe is ready on an empty server, then a stream of synthetic
//!   envelopes (10 % repeats as MODIFIED, 2 % DELETED) arrives; done at the last new line.
//! - (c) restart over (a)'s state: done when the pipe reports ready; it must write 0 lines.
//! - latency: the pipe is ready on an empty server, then new occurrences arrive at a steady
//!   10, 1,000 and 20,000 events/s (`--rates`), each rate with a fresh server and pipe at the
//!   default flags. The server stamps when each event becomes visible to watches; the bench
//!   notes when its line is in the output file (inotify) and when it is durable (the bench's own
//!   fdatasync of the file, which returns once the pipe's sync in progress, or its own, is done),
//!   and reports p50/p99/max of both, the pipe's CPU per event and its peak RSS. The p50 of the
//!   first and the last fifth of the events shows whether a backlog grows.
//!
//! `--http` runs everything over plain HTTP (the server's second listener), which shows what TLS
//! costs per event. `--enrich` runs the same scenarios with enrichment on, the servers holding every object the
//! events name, so the difference is what enrichment costs per event.
//!
//! The raw rate ("ceiling") is the same list or watch read by a client that only counts bytes
//! and lines, over the same TLS stack (kube's client), so the pipe's rate is shown as a share of
//! what the server can send. CPU is the pipe process's user + sys time (wait4's rusage of the
//! child, minus what it had spent before the clock started in (b)); peak RSS is its VmHWM.

#[path = "../tests/support/fake_api/mod.rs"]
mod fake_api;

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{AsyncBufRead, AsyncBufReadExt};
use kube::core::Request;
use kube::core::params::{ListParams, WatchParams};
use kube_event_pipe::synth::{SynthConfig, generate};

struct Options {
    events: usize,
    /// Run the pipe with `--enrich`, the servers holding every object the events name.
    enrich: bool,
    /// The kubeconfig context the pipe and the raw reads use: `test` (HTTPS) or `test-http`.
    context: &'static str,
    binary: PathBuf,
    work: PathBuf,
    extra: Vec<String>,
    /// Run the throughput scenarios (a), (b), (c).
    throughput: bool,
    /// Event rates of the latency scenario; empty skips it.
    rates: Vec<f64>,
}

fn main() {
    let options = parse_args();
    let _ = std::fs::remove_dir_all(&options.work);
    std::fs::create_dir_all(&options.work)
        .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", options.work.display())));
    if !options.binary.exists() {
        fail(&format!(
            "{} not found; build it with `cargo build --release --bins --examples`",
            options.binary.display()
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    println!(
        "kube-event-pipe end-to-end bench: {} events, binary {}{}",
        options.events,
        options.binary.display(),
        if options.extra.is_empty() {
            String::new()
        } else {
            format!(", extra flags: {}", options.extra.join(" "))
        }
    );
    if options.throughput {
        throughput(&options, &runtime);
    }
    if !options.rates.is_empty() {
        latency(&options);
    }
    let _ = std::fs::remove_dir_all(&options.work);
}

/// Scenarios (a), (b) and (c).
fn throughput(options: &Options, runtime: &tokio::runtime::Runtime) {
    println!(
        "{:<28} {:>9} {:>10} {:>12} {:>9} {:>12} {:>10} {:>9}",
        "scenario", "events", "wall s", "events/s", "ceiling", "CPU µs/ev", "peak RSS", "lines"
    );

    // (a) and (c): a server holding N events.
    let server = fake_api::ApiServer::start();
    let present = fill(&server, options.events);
    if options.enrich {
        let objects = add_involved_objects(&server, &server.events());
        println!("enrichment on: {objects} objects for the events to name");
    }
    let ceiling = runtime.block_on(raw_list(server.kubeconfig(), options.context, present));
    let state = options.work.join("state-a");
    let out = options.work.join("out-a.jsonl");
    let cold = run_pipe(options, server.kubeconfig(), &state, &out, None, |p| {
        p.wait_lines(present as u64)
    });
    row("(a) cold list", present, &cold, Some(ceiling));

    let out_c = options.work.join("out-c.jsonl");
    let restart = run_pipe(options, server.kubeconfig(), &state, &out_c, None, |p| {
        p.wait_ready()
    });
    row("(c) restart, filters present", present, &restart, None);
    if restart.lines != 0 {
        fail(&format!(
            "the restart wrote {} lines; it must write none",
            restart.lines
        ));
    }
    drop(server);

    // (b): a stream arriving on a watch. One server for the raw client, a fresh one for the pipe.
    let stream = generate(&SynthConfig {
        envelopes: options.events,
        seed: 7,
        ..SynthConfig::default()
    });
    let raw_server = fake_api::ApiServer::start();
    let ceiling = runtime.block_on(raw_watch(
        &raw_server,
        options.context,
        &stream.text,
        stream.envelopes,
    ));
    drop(raw_server);
    let server = fake_api::ApiServer::start();
    if options.enrich {
        let objects: Vec<serde_json::Value> = stream
            .text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|mut envelope| envelope["object"].take())
            .collect();
        add_involved_objects(&server, &objects);
    }
    let out = options.work.join("out-b.jsonl");
    let expected = stream.occurrences.len() as u64;
    let steady = run_pipe(
        options,
        server.kubeconfig(),
        &options.work.join("state-b"),
        &out,
        Some(&|| {
            server.add_envelopes(&stream.text);
        }),
        |p| p.wait_lines(expected),
    );
    row("(b) steady watch", stream.envelopes, &steady, Some(ceiling));
    println!(
        "(b) delivered {} new occurrences of {} envelopes ({} repeats, {} deletions)",
        steady.lines, stream.envelopes, stream.duplicates, stream.deletions
    );
    if steady.lines != expected || cold.lines != present as u64 {
        fail("a scenario wrote a different number of lines than expected");
    }
}

/// One rate of the latency scenario.
struct LatencyRun {
    rate: f64,
    events: usize,
    /// Events per second the generator achieved.
    sent_rate: f64,
    /// From visible in the API to the line in the file, and to the line durable, per event.
    in_file: Vec<Duration>,
    durable: Vec<Duration>,
    /// p50 to durable of the first and the last fifth of the events, by resourceVersion.
    first_fifth: Duration,
    last_fifth: Duration,
    measured: Measured,
}

/// The latency scenario at each rate of `--rates`.
fn latency(options: &Options) {
    println!();
    println!(
        "latency from visible in the API to the line in the file / durable (fdatasync), ms; default flags"
    );
    println!(
        "{:>8} {:>7} {:>8} {:>23} {:>23} {:>17} {:>9} {:>9}",
        "rate/s",
        "events",
        "sent/s",
        "in file p50/p99/max",
        "durable p50/p99/max",
        "p50 first/last 5th",
        "CPU µs/ev",
        "peak RSS"
    );
    for (i, &rate) in options.rates.iter().enumerate() {
        let run = latency_run(options, rate, i);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let triple = |v: &[Duration]| {
            format!(
                "{:.1}/{:.1}/{:.1}",
                ms(percentile(v, 0.50)),
                ms(percentile(v, 0.99)),
                ms(percentile(v, 1.0))
            )
        };
        println!(
            "{:>8} {:>7} {:>8.0} {:>23} {:>23} {:>17} {:>9.2} {:>5.1} MiB",
            run.rate,
            run.events,
            run.sent_rate,
            triple(&run.in_file),
            triple(&run.durable),
            format!("{:.1}/{:.1}", ms(run.first_fifth), ms(run.last_fifth)),
            run.measured.cpu.as_secs_f64() * 1e6 / run.events as f64,
            run.measured.peak_rss_kib as f64 / 1024.0,
        );
        if run.measured.lines != run.events as u64 {
            fail(&format!(
                "the latency run at {rate}/s wrote {} lines for {} events",
                run.measured.lines, run.events
            ));
        }
    }
}

/// A fresh server and pipe; `rate` events a second for 5 s (at least 100 events).
fn latency_run(options: &Options, rate: f64, index: usize) -> LatencyRun {
    let events = ((rate * 5.0) as usize).max(100);
    // Every envelope a new occurrence: new events and repeats with a higher count.
    let stream = generate(&SynthConfig {
        envelopes: events,
        seed: 11 + index as u64,
        duplicate_ratio: 0.0,
        deleted_ratio: 0.0,
        ..SynthConfig::default()
    });
    let lines: Vec<&str> = stream.text.lines().collect();
    let server = fake_api::ApiServer::start();
    let out = options.work.join(format!("out-latency-{index}.jsonl"));
    let mut seen: Vec<(u64, Instant, Instant)> = Vec::with_capacity(events);
    let mut sent_for = Duration::ZERO;
    let measured = run_pipe(
        options,
        server.kubeconfig(),
        &options.work.join(format!("state-latency-{index}")),
        &out,
        Some(&|| server.stamp_visibility()),
        |pipe| {
            std::thread::scope(|scope| {
                let generator = scope.spawn(|| send_at_rate(&server, &lines, rate));
                watch_lines(pipe, events, &mut seen);
                sent_for = generator
                    .join()
                    .unwrap_or_else(|_| fail("the generator panicked"));
            });
        },
    );
    let visible = server.visible_at();
    let since = |rv: u64, at: Instant| {
        let i = visible.partition_point(|(v, _)| *v < rv);
        match visible.get(i) {
            Some((v, stamp)) if *v == rv => at.saturating_duration_since(*stamp),
            _ => fail(&format!(
                "a line with resourceVersion {rv} the server never stamped"
            )),
        }
    };
    seen.sort_by_key(|(rv, _, _)| *rv);
    let in_file: Vec<Duration> = seen.iter().map(|&(rv, f, _)| since(rv, f)).collect();
    let durable: Vec<Duration> = seen.iter().map(|&(rv, _, d)| since(rv, d)).collect();
    let fifth = (durable.len() / 5).max(1);
    LatencyRun {
        rate,
        events,
        sent_rate: events as f64 / sent_for.as_secs_f64().max(1e-9),
        first_fifth: percentile(&durable[..fifth.min(durable.len())], 0.5),
        last_fifth: percentile(&durable[durable.len().saturating_sub(fifth)..], 0.5),
        in_file,
        durable,
        measured,
    }
}

/// Adds the envelopes' objects to the server at `rate` a second; returns how long it took.
fn send_at_rate(server: &fake_api::ApiServer, lines: &[&str], rate: f64) -> Duration {
    let start = Instant::now();
    let mut sent = 0;
    while sent < lines.len() {
        let due = ((start.elapsed().as_secs_f64() * rate) as usize + 1).min(lines.len());
        if due > sent {
            server.add_all(lines[sent..due].iter().map(|l| {
                let mut envelope: serde_json::Value =
                    serde_json::from_str(l).unwrap_or_else(|e| fail(&format!("synth: {e}")));
                envelope["object"].take()
            }));
            sent = due;
        } else {
            // Pacing, not synchronisation: the next event is due then.
            let next = start + Duration::from_secs_f64(sent as f64 / rate);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }
    start.elapsed()
}

/// Follows the output file until `events` lines are in it, noting for each line its
/// resourceVersion, when it was read and when the bench's fdatasync of the file returned.
fn watch_lines(pipe: &mut Pipe, events: usize, seen: &mut Vec<(u64, Instant, Instant)>) {
    use std::os::fd::AsRawFd;
    let mut file = std::fs::File::open(&pipe.out)
        .unwrap_or_else(|e| fail(&format!("cannot open {}: {e}", pipe.out.display())));
    let notify = Inotify::watch(&pipe.out);
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < events {
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) => fail(&format!("reading {}: {e}", pipe.out.display())),
        };
        if n == 0 {
            if Instant::now() > deadline {
                fail(&format!("{} of {events} lines after 120 s", seen.len()));
            }
            if let Ok(Some(status)) = pipe.child.try_wait() {
                fail(&format!(
                    "the pipe exited ({status}); its log: {}",
                    pipe.log.display()
                ));
            }
            notify.wait(Duration::from_millis(100));
            continue;
        }
        let in_file = Instant::now();
        // SAFETY: fdatasync on a descriptor this function owns.
        if unsafe { libc::fdatasync(file.as_raw_fd()) } != 0 {
            fail(&format!(
                "fdatasync of {}: {}",
                pipe.out.display(),
                std::io::Error::last_os_error()
            ));
        }
        let durable = Instant::now();
        pending.extend_from_slice(&buf[..n]);
        let complete = match memchr::memrchr(b'\n', &pending) {
            Some(i) => i + 1,
            None => continue,
        };
        for line in pending[..complete].split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            match resource_version(line) {
                Some(rv) => seen.push((rv, in_file, durable)),
                None => fail("an output line without metadata.resourceVersion"),
            }
        }
        pending.drain(..complete);
    }
    pipe.lines = seen.len() as u64;
    pipe.read = file.stream_position().unwrap_or(0);
}

/// `metadata.resourceVersion` of an output line (the first after `"metadata":`, which the
/// synthetic events' involvedObject never precedes).
fn resource_version(line: &[u8]) -> Option<u64> {
    let meta = memchr::memmem::find(line, b"\"metadata\":")?;
    let key = b"\"resourceVersion\":\"";
    let at = meta + memchr::memmem::find(&line[meta..], key)? + key.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn percentile(sorted_or_not: &[Duration], q: f64) -> Duration {
    if sorted_or_not.is_empty() {
        return Duration::ZERO;
    }
    let mut v = sorted_or_not.to_vec();
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}

/// An inotify watch for modifications of one file: wakes the bench when the pipe writes,
/// instead of polling the file.
struct Inotify(std::fs::File);

impl Inotify {
    fn watch(path: &Path) -> Inotify {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: plain syscalls; the descriptor is owned by the File from here on.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            fail(&format!(
                "inotify_init1: {}",
                std::io::Error::last_os_error()
            ));
        }
        let file = unsafe { std::fs::File::from_raw_fd(fd) };
        let name = std::ffi::CString::new(path.as_os_str().as_bytes())
            .unwrap_or_else(|_| fail("a path with a NUL byte"));
        if unsafe { libc::inotify_add_watch(fd, name.as_ptr(), libc::IN_MODIFY) } < 0 {
            fail(&format!(
                "inotify_add_watch {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Inotify(file)
    }

    /// Returns when the file was modified (or at once if it was since the last call), or after
    /// `timeout`.
    fn wait(&self, timeout: Duration) {
        use std::os::fd::AsRawFd;
        let mut pfd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd on a descriptor we own.
        unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
        let mut drain = [0u8; 4096];
        while (&self.0).read(&mut drain).is_ok_and(|n| n > 0) {}
    }
}

/// Adds synthetic envelopes until about `n` events are present; returns how many are.
fn fill(server: &fake_api::ApiServer, n: usize) -> usize {
    // Repeats and deletions leave about 55 % of the envelopes as distinct events.
    let mut envelopes = n * 2;
    loop {
        let stream = generate(&SynthConfig {
            envelopes,
            seed: 42,
            ..SynthConfig::default()
        });
        server.add_envelopes(&stream.text);
        let present = server.events().len();
        if present >= n || envelopes > n * 8 {
            return present;
        }
        envelopes *= 2;
    }
}

/// Stores every object the events name (of a kind the server serves), with labels, an
/// annotation, an owner and, for pods, one of five nodes; returns how many.
fn add_involved_objects(server: &fake_api::ApiServer, events: &[serde_json::Value]) -> usize {
    let mut seen = std::collections::HashSet::new();
    for i in 0..5 {
        server.put_object(serde_json::json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": format!("node-{i}")},
            "status": {"addresses": [{"type": "InternalIP", "address": format!("10.0.0.{i}")}]}}));
    }
    for event in events {
        let o = &event["involvedObject"];
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let (api_version, kind, namespace, name) = (
            text(&o["apiVersion"]),
            text(&o["kind"]),
            text(&o["namespace"]),
            text(&o["name"]),
        );
        let api_version = if api_version.is_empty() {
            "v1".to_string()
        } else {
            api_version
        };
        if kind == "Node"
            || fake_api::object_path(&api_version, &kind, &namespace, &name).is_none()
            || !seen.insert((
                api_version.clone(),
                kind.clone(),
                namespace.clone(),
                name.clone(),
            ))
        {
            continue;
        }
        let node = format!("node-{}", seen.len() % 5);
        server.put_object(serde_json::json!({"apiVersion": api_version, "kind": kind,
            "metadata": {"name": name, "namespace": namespace,
                "labels": {"app": name, "app.kubernetes.io/part-of": "bench"},
                "annotations": {"team": "payments"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": format!("{name}-rs"), "uid": "u", "controller": true}]},
            "spec": {"nodeName": node}}));
    }
    seen.len()
}

/// What one measured run of the pipe gave.
struct Measured {
    wall: Duration,
    cpu: Duration,
    peak_rss_kib: i64,
    lines: u64,
}

fn row(name: &str, events: usize, m: &Measured, ceiling: Option<f64>) {
    let rate = events as f64 / m.wall.as_secs_f64();
    let share = ceiling
        .map(|c| format!("{:.0} %", 100.0 * rate / c))
        .unwrap_or_else(|| "-".into());
    println!(
        "{:<28} {:>9} {:>10.3} {:>12.0} {:>9} {:>12.2} {:>7.1} MiB {:>9}",
        name,
        events,
        m.wall.as_secs_f64(),
        rate,
        share,
        m.cpu.as_secs_f64() * 1e6 / events as f64,
        m.peak_rss_kib as f64 / 1024.0,
        m.lines
    );
    if let Some(c) = ceiling {
        println!(
            "{:<28} {:>9} {:>10} {:>12.0}",
            "    raw read of the same", events, "", c
        );
    }
}

/// The running pipe, and what the bench watches of it.
struct Pipe {
    child: Child,
    out: PathBuf,
    log: PathBuf,
    lines: u64,
    read: u64,
}

impl Pipe {
    fn count_lines(&mut self) -> u64 {
        let mut buf = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.out)
            && f.seek(std::io::SeekFrom::Start(self.read)).is_ok()
            && f.read_to_end(&mut buf).is_ok()
        {
            self.read += buf.len() as u64;
            self.lines += memchr::memchr_iter(b'\n', &buf).count() as u64;
        }
        self.lines
    }

    fn wait_lines(&mut self, n: u64) {
        self.poll(|p| p.count_lines() >= n, &format!("{n} lines"));
    }

    fn wait_ready(&mut self) {
        let log = self.log.clone();
        self.poll(
            |_| {
                std::fs::read_to_string(&log)
                    .is_ok_and(|l| l.contains("initial list delivered; ready"))
            },
            "the pipe to report ready",
        );
    }

    fn poll(&mut self, mut done: impl FnMut(&mut Self) -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(600);
        while !done(self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                fail(&format!(
                    "the pipe exited ({status}) while waiting for {what}; its log: {}",
                    self.log.display()
                ));
            }
            if Instant::now() > deadline {
                fail(&format!("gave up waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Starts the pipe; once it is ready runs `after_ready` (if given) and starts the clock there,
/// else the clock starts at spawn; `until` returns when the scenario is done.
fn run_pipe(
    options: &Options,
    kubeconfig: &Path,
    state: &Path,
    out: &Path,
    after_ready: Option<&dyn Fn()>,
    until: impl FnOnce(&mut Pipe),
) -> Measured {
    let log = out.with_extension("log");
    let started = Instant::now();
    let child = Command::new(&options.binary)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", options.context])
        .arg("--persistence-path")
        .arg(state)
        .arg("--destination")
        .arg(out)
        .arg("--log-level")
        .arg("INFO")
        .args(options.enrich.then_some("--enrich"))
        .args(&options.extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start {}: {e}", options.binary.display())));
    let mut pipe = Pipe {
        child,
        out: out.to_path_buf(),
        log,
        lines: 0,
        read: 0,
    };
    let (clock, cpu_before) = match after_ready {
        Some(action) => {
            pipe.wait_ready();
            let cpu = process_cpu(pipe.child.id());
            action();
            (Instant::now(), cpu)
        }
        None => (started, Duration::ZERO),
    };
    until(&mut pipe);
    let wall = clock.elapsed();
    // From /proc, not from rusage: a child's ru_maxrss starts from the parent's size at fork,
    // and this process holds the test server's events.
    let peak_rss_kib = peak_rss(pipe.child.id());
    // SIGTERM: the pipe drains and exits 0; its rusage covers the whole process.
    unsafe {
        libc::kill(pipe.child.id() as i32, libc::SIGTERM);
    }
    let (status, usage) = wait_with_rusage(pipe.child.id());
    if status != 0 {
        fail(&format!(
            "the pipe exited with status {status}; its log: {}",
            pipe.log.display()
        ));
    }
    let cpu = timeval(usage.ru_utime) + timeval(usage.ru_stime);
    Measured {
        wall,
        cpu: cpu.saturating_sub(cpu_before),
        peak_rss_kib,
        lines: pipe.count_lines(),
    }
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

fn wait_with_rusage(pid: u32) -> (i32, libc::rusage) {
    let mut status = 0;
    // SAFETY: rusage is plain data, and wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    if r < 0 {
        fail(&format!(
            "wait4 failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    (code, usage)
}

/// The peak resident set of a running process (VmHWM), in KiB.
fn peak_rss(pid: u32) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(-1)
}

/// user + sys time of a running process, from /proc (clock ticks).
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; fields count from after its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    // utime and stime are the 14th and 15th fields; index 11 and 12 after the name.
    Duration::from_micros((ticks(11) + ticks(12)) * 1_000_000 / hz)
}

async fn client(kubeconfig: &Path, context: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let options = kube::config::KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &options)
        .await
        .expect("client config");
    kube::Client::try_from(config).expect("client")
}

/// Lists every event in pages of 500 as the pipe does, keeping nothing; events per second.
async fn raw_list(kubeconfig: &Path, context: &str, present: usize) -> f64 {
    let client = client(kubeconfig, context).await;
    let started = Instant::now();
    let mut token: Option<String> = None;
    loop {
        let params = ListParams {
            limit: Some(500),
            continue_token: token.clone(),
            ..ListParams::default()
        };
        let request = Request::new("/api/v1/events")
            .list(&params)
            .expect("request");
        let text = client.request_text(request).await.expect("list");
        // The token sits in the list's metadata, before the items.
        let head = &text[..text.len().min(1024)];
        token = head
            .split_once("\"continue\":\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(t, _)| t.to_string());
        if token.is_none() {
            break;
        }
    }
    present as f64 / started.elapsed().as_secs_f64()
}

/// Watches an empty server, then adds the stream and reads it to its last line; events per
/// second from the add to the last line.
async fn raw_watch(server: &fake_api::ApiServer, context: &str, text: &str, lines: usize) -> f64 {
    let client = client(server.kubeconfig(), context).await;
    let version = server.resource_version().to_string();
    let request = Request::new("/api/v1/events")
        .watch(&WatchParams::default(), &version)
        .expect("request");
    let stream = client.request_stream(request).await.expect("watch");
    let mut stream = std::pin::pin!(stream);
    server.add_envelopes(text);
    let started = Instant::now();
    let mut seen = 0usize;
    while seen < lines {
        let n = match stream.as_mut().fill_buf().await {
            Ok([]) => fail("the watch ended early"),
            Ok(chunk) => {
                seen += memchr::memchr_iter(b'\n', chunk).count();
                chunk.len()
            }
            Err(e) => fail(&format!("reading the watch: {e}")),
        };
        stream.as_mut().consume(n);
    }
    lines as f64 / started.elapsed().as_secs_f64()
}

fn parse_args() -> Options {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/release/examples/bench → target/release/kube-event-pipe
    let default_binary = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("kube-event-pipe"))
        .unwrap_or_else(|| PathBuf::from("target/release/kube-event-pipe"));
    let mut options = Options {
        events: 100_000,
        enrich: false,
        context: "test",
        binary: default_binary,
        work: std::env::temp_dir().join(format!("kep-bench-{}", std::process::id())),
        extra: Vec::new(),
        throughput: true,
        rates: vec![10.0, 1_000.0, 20_000.0],
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| fail(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--events" => {
                options.events = value()
                    .replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| fail("--events takes a number"))
            }
            "--binary" => options.binary = value().into(),
            "--enrich" => options.enrich = true,
            "--http" => options.context = "test-http",
            "--work-dir" => options.work = value().into(),
            "--only" => match value().as_str() {
                "throughput" => options.rates.clear(),
                "latency" => options.throughput = false,
                other => fail(&format!("--only takes throughput or latency, not {other}")),
            },
            "--rates" => {
                options.rates = value()
                    .split(',')
                    .map(|r| match r.replace('_', "").parse::<f64>() {
                        Ok(r) if r > 0.0 => r,
                        _ => fail(&format!(
                            "--rates takes events per second, e.g. 10,1000; not {r}"
                        )),
                    })
                    .collect()
            }
            "--" => {
                options.extra = args.by_ref().collect();
                break;
            }
            other => fail(&format!(
                "unknown argument {other}\nusage: bench [--events N] [--enrich] [--http] [--only throughput|latency] [--rates R,R…] [--binary PATH] [--work-dir DIR] [-- PIPE FLAGS…]"
            )),
        }
    }
    options
}

fn fail(problem: &str) -> ! {
    eprintln!("error: {problem}");
    std::process::exit(1);
}
