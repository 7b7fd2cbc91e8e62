//! Two replicas of the real binary against the test API server, each with its own filters and
//! output file, electing a leader through a Lease while events arrive at 2,000/s: failover by
//! kill -9, by SIGTERM, by the leader losing the API server, a leader whose sink is down, and a
//! rolling restart. Nothing may be lost; what both wrote is bounded (and nothing on a graceful
//! handover); never two writing at once.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::event::EventBuilder;
use support::fake_api::ApiServer;
use support::kube_pipe::Pipe;
use support::relay::Relay;
use support::{Occurrence, file_lines, signal, tally, wait_exit, wait_for};

const NS: &str = "kube-event-pipe";
const LEASE_DURATION: Duration = Duration::from_secs(4);
const RETRY_PERIOD: Duration = Duration::from_secs(1);
/// Events per second the stream adds.
const RATE: u64 = 2_000;
/// `--batch-size` of both replicas: the in-flight bound is `(4 + 7) × 100 + 256`.
const BATCH: u64 = 100;
const IN_FLIGHT_BOUND: u64 = (4 + 7) * BATCH + 256;

fn replica_args(identity: &str) -> Vec<String> {
    [
        "--leader-elect",
        "--lease-namespace",
        NS,
        "--identity",
        identity,
        "--lease-duration",
        "4",
        "--renew-deadline",
        "3",
        "--retry-period",
        "1",
        "--batch-size",
        "100",
        "--listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// One replica: its own state directory (filters, output file, logs) kept across restarts.
struct Replica {
    identity: String,
    state: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
    extra: Vec<String>,
    pipe: Option<Pipe>,
}

impl Replica {
    fn start(server: &ApiServer, identity: &str) -> Replica {
        Self::start_with(server.kubeconfig(), identity, &[])
    }

    fn start_with(kubeconfig: &Path, identity: &str, extra: &[&str]) -> Replica {
        let mut r = Replica {
            identity: identity.into(),
            state: tempfile::tempdir().unwrap(),
            kubeconfig: kubeconfig.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            pipe: None,
        };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let mut args = replica_args(&self.identity);
        args.extend(self.extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.pipe = Some(Pipe::start_with(&self.kubeconfig, self.state.path(), &args));
    }

    fn pipe(&self) -> &Pipe {
        self.pipe.as_ref().expect("running")
    }

    /// Every log of every run, in order.
    fn logs(&self) -> String {
        let mut names: Vec<_> = std::fs::read_dir(self.state.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("run-") && n.ends_with(".log"))
            .collect();
        names.sort_by_key(|n| {
            n.trim_start_matches("run-")
                .trim_end_matches(".log")
                .parse::<u32>()
                .unwrap_or(0)
        });
        names
            .iter()
            .map(|n| std::fs::read_to_string(self.state.path().join(n)).unwrap_or_default())
            .collect()
    }

    /// The output's complete lines. The file is read while the pipe writes, so its last line
    /// may be a batch's write in progress: that one is left for the next read. (A line torn
    /// anywhere else still fails: it runs into the next and is not JSON.)
    fn lines(&self) -> Vec<String> {
        let mut lines = file_lines(&self.state.path().join("events.jsonl"));
        if lines.last().is_some_and(|l| !l.ends_with('\n')) {
            lines.pop();
        }
        lines
    }

    fn out_len(&self) -> u64 {
        std::fs::metadata(self.state.path().join("events.jsonl")).map_or(0, |m| m.len())
    }

    /// Times "became the leader" appears in the current run's log.
    fn leads(&self) -> bool {
        let log = self.pipe().log();
        log.matches("became the leader; emitting").count()
            > log.matches("stopped emitting, standing by").count()
    }

    fn wait_leading(&self) -> Instant {
        let end = Instant::now() + support::DEADLINE;
        while Instant::now() < end {
            if self.leads() {
                return Instant::now();
            }
            thread::sleep(Duration::from_millis(5));
        }
        panic!("{} never led; its log:\n{}", self.identity, self.logs());
    }

    /// Ready: as a leader, its initial list delivered; as a standby, read and followed.
    fn wait_ready(&self) {
        wait_for(&format!("{} to be ready", self.identity), || {
            let log = self.pipe().log();
            (log.contains("initial list delivered; ready")
                || log.contains("following the stream as a standby; ready"))
            .then_some(())
        });
    }

    /// The probe's status code.
    fn readyz(&self) -> Option<u16> {
        let text = http_request(self.metrics_address(), "/readyz")?;
        text.split_whitespace().nth(1)?.parse().ok()
    }

    /// User plus system CPU time of the running process.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // After the command name's closing parenthesis: fields 3 onwards; utime and stime are
        // fields 14 and 15, in clock ticks.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<u64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let ticks = fields[11] + fields[12];
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_micros(ticks * 1_000_000 / hz)
    }

    fn kill(&mut self) {
        let mut pipe = self.pipe.take().expect("running");
        signal(&pipe.child, libc::SIGKILL);
        wait_exit(&mut pipe.child);
    }

    /// SIGTERM; the exit status must be 0.
    fn stop(&mut self) {
        let pipe = self.pipe.take().expect("running");
        pipe.stop();
    }

    fn metrics_address(&self) -> SocketAddr {
        wait_for("the telemetry address in the log", || {
            let log = self.pipe().log();
            let line = log.lines().find(|l| l.contains("telemetry listening"))?;
            let at = line.find("address=")? + "address=".len();
            line[at..].split_whitespace().next()?.parse().ok()
        })
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let text = http_get(self.metrics_address(), "/metrics")?;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    fn pid(&self) -> u32 {
        self.pipe().child.id()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.child.kill();
            let _ = pipe.child.wait();
        }
    }
}

/// The whole response: status line, headers, body.
fn http_request(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    Some(
        http_request(addr, path)?
            .split_once("\r\n\r\n")?
            .1
            .to_string(),
    )
}

/// Adds events at `RATE` per second (every 10 ms a slice) until stopped; counts what it added.
struct Stream;

impl Stream {
    fn run(server: &ApiServer, stop: &AtomicBool, added: &AtomicU64, prefix: &str) {
        let started = Instant::now();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let due = started.elapsed().as_millis() as u64 * RATE / 1000;
            if due > n {
                server.add_all(
                    (n..due)
                        .map(|i| EventBuilder::new("default", &format!("{prefix}-{i}")).build()),
                );
                n = due;
                added.store(n, Ordering::Relaxed);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Every occurrence the server holds: what must be delivered.
fn present(server: &ApiServer) -> BTreeSet<Occurrence> {
    server.events().iter().map(support::occurrence).collect()
}

/// What the union of the replicas' outputs misses, and how many occurrences more than one of
/// them wrote (each replica alone writes each at most once).
fn union_check(
    expected: &BTreeSet<Occurrence>,
    outputs: &[Vec<String>],
) -> (Vec<Occurrence>, usize) {
    let per: Vec<BTreeMap<Occurrence, usize>> = outputs
        .iter()
        .map(|lines| tally(lines.iter().map(String::as_str)))
        .collect();
    for (i, t) in per.iter().enumerate() {
        let repeated: Vec<_> = t.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            repeated.is_empty(),
            "replica {i} wrote {} occurrences more than once (first {:?})",
            repeated.len(),
            repeated.first()
        );
    }
    let missing = expected
        .iter()
        .filter(|o| !per.iter().any(|t| t.contains_key(*o)))
        .cloned()
        .collect();
    let in_both = expected
        .iter()
        .filter(|o| per.iter().filter(|t| t.contains_key(*o)).count() > 1)
        .count();
    (missing, in_both)
}

/// Waits until the union of the outputs holds every expected occurrence.
fn wait_delivered(expected: &BTreeSet<Occurrence>, replicas: &[&Replica]) -> usize {
    let mut last = (Vec::new(), 0);
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        let outputs: Vec<_> = replicas.iter().map(|r| r.lines()).collect();
        last = union_check(expected, &outputs);
        if last.0.is_empty() {
            return last.1;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{} occurrences never delivered by either replica (first {:?})",
        last.0.len(),
        last.0.first()
    );
}

/// A leader, then a standby that follows the stream.
fn two(server: &ApiServer) -> (Replica, Replica) {
    let a = Replica::start(server, "a");
    a.wait_leading();
    a.wait_ready();
    let b = Replica::start(server, "b");
    b.wait_ready();
    assert!(!b.leads(), "b must stand by while a leads");
    assert_eq!(b.readyz(), Some(200), "a standby that follows is ready");
    assert_eq!(b.out_len(), 0, "a standby writes nothing");
    (a, b)
}

#[test]
fn kill_9_of_the_leader_loses_nothing_and_repeats_at_most_one_renewal_and_the_in_flight() {
    let server = ApiServer::start();
    server
        .add_all((0..3_000).map(|i| EventBuilder::new("default", &format!("before-{i}")).build()));
    let (mut a, b) = two(&server);
    let stop = AtomicBool::new(false);
    let added = AtomicU64::new(0);
    let (takeover, received_per_renewal) = thread::scope(|s| {
        s.spawn(|| Stream::run(&server, &stop, &added, "during"));
        let (a_cpu, b_cpu, from) = (a.cpu(), b.cpu(), added.load(Ordering::Relaxed));
        wait_for("2 s of the stream", || {
            (added.load(Ordering::Relaxed) >= 2 * RATE).then_some(())
        });
        let events = (added.load(Ordering::Relaxed) - from) as f64;
        println!(
            "at {RATE}/s: leader {:.1} µs CPU per event, standby {:.1} µs, standby RSS {} KiB",
            (a.cpu() - a_cpu).as_micros() as f64 / events,
            (b.cpu() - b_cpu).as_micros() as f64 / events,
            rss_kib(b.pid())
        );
        a.kill();
        let killed = Instant::now();
        let led = b.wait_leading();
        thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        (led - killed, RATE * RETRY_PERIOD.as_secs())
    });
    let expected = present(&server);
    let in_both = wait_delivered(&expected, &[&a, &b]);
    println!(
        "kill -9: takeover {:.2} s, {in_both} occurrences in both outputs of {}",
        takeover.as_secs_f64(),
        expected.len()
    );
    assert!(
        takeover <= LEASE_DURATION + 2 * RETRY_PERIOD,
        "took {takeover:?} to take over"
    );
    let bound = received_per_renewal + IN_FLIGHT_BOUND;
    assert!(
        in_both as u64 <= bound,
        "{in_both} in both, above one renewal period ({received_per_renewal}) plus the in-flight bound ({IN_FLIGHT_BOUND})"
    );
    assert!(
        b.logs()
            .contains("took over: delivering what the previous leader's watermark does not cover")
    );
}

#[test]
fn sigterm_of_the_leader_hands_over_within_two_retry_periods_with_nothing_lost_or_repeated() {
    let server = ApiServer::start();
    server
        .add_all((0..3_000).map(|i| EventBuilder::new("default", &format!("before-{i}")).build()));
    let (mut a, b) = two(&server);
    let stop = AtomicBool::new(false);
    let added = AtomicU64::new(0);
    let takeover = thread::scope(|s| {
        s.spawn(|| Stream::run(&server, &stop, &added, "during"));
        wait_for("2 s of the stream", || {
            (added.load(Ordering::Relaxed) >= 2 * RATE).then_some(())
        });
        a.stop();
        let released = Instant::now();
        let led = b.wait_leading();
        thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        led - released
    });
    let expected = present(&server);
    let in_both = wait_delivered(&expected, &[&a, &b]);
    println!(
        "SIGTERM: takeover {:.2} s after the leader exited, {in_both} in both of {}",
        takeover.as_secs_f64(),
        expected.len()
    );
    assert!(a.logs().contains("released the lease"), "{}", a.logs());
    assert!(
        takeover <= 2 * RETRY_PERIOD,
        "took {takeover:?} after the release"
    );
    assert_eq!(in_both, 0, "a graceful handover repeats nothing");
}

/// A kubeconfig like the server's, whose plain-HTTP context goes through `relay`.
fn kubeconfig_via(server: &ApiServer, relay: SocketAddr, dir: &Path) -> std::path::PathBuf {
    let mut kc: Value =
        serde_json::from_str(&std::fs::read_to_string(server.kubeconfig()).unwrap()).unwrap();
    for cluster in kc["clusters"].as_array_mut().unwrap() {
        if cluster["name"] == "test-http" {
            cluster["cluster"]["server"] = json!(format!("http://{relay}"));
        }
    }
    let path = dir.join("kubeconfig-relay");
    std::fs::write(&path, serde_json::to_string(&kc).unwrap()).unwrap();
    path
}

/// A relay in front of the server's plain-HTTP port and a kubeconfig through it (context
/// `test-http`), for a replica whose API connection a test cuts.
fn relayed(server: &ApiServer) -> (Relay, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let target: SocketAddr = server
        .http_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let relay = Relay::start(port, target);
    let kubeconfig = kubeconfig_via(server, relay.listen, dir.path());
    (relay, kubeconfig, dir)
}

/// A webhook receiver that answers 503 while the flag is set.
fn switchable_receiver() -> (support::receiver::Receiver, Arc<AtomicBool>) {
    let refusing = Arc::new(AtomicBool::new(false));
    let r = refusing.clone();
    let receiver = support::receiver::Receiver::start(move |_, _| {
        if r.load(Ordering::Relaxed) {
            support::receiver::Reply::status(503)
        } else {
            support::receiver::Reply::ok()
        }
    });
    (receiver, refusing)
}

#[test]
fn a_leader_cut_off_from_the_api_server_stops_writing_before_the_standby_starts() {
    let server = ApiServer::start();
    server
        .add_all((0..2_000).map(|i| EventBuilder::new("default", &format!("before-{i}")).build()));
    let (relay, kubeconfig, _dir) = relayed(&server);
    let a = Replica::start_with(&kubeconfig, "a", &["--context", "test-http"]);
    a.wait_leading();
    a.wait_ready();
    let b = Replica::start(&server, "b");
    b.wait_ready();
    let stop = AtomicBool::new(false);
    let added = AtomicU64::new(0);
    let watching = AtomicBool::new(true);
    // Watches both outputs every 2 ms: when a last grew, when b first grew.
    let (a_last_write, b_first_write, cut_at) = thread::scope(|s| {
        s.spawn(|| Stream::run(&server, &stop, &added, "during"));
        wait_for("2 s of the stream", || {
            (added.load(Ordering::Relaxed) >= 2 * RATE).then_some(())
        });
        let watcher = s.spawn(|| {
            let (mut a_len, mut a_last) = (a.out_len(), Instant::now());
            let mut b_first = None;
            while watching.load(Ordering::Relaxed) {
                let len = a.out_len();
                if len != a_len {
                    (a_len, a_last) = (len, Instant::now());
                }
                if b_first.is_none() && b.out_len() > 0 {
                    b_first = Some(Instant::now());
                }
                thread::sleep(Duration::from_millis(2));
            }
            (a_last, b_first)
        });
        relay.stop();
        let cut_at = Instant::now();
        b.wait_leading();
        a.pipe()
            .wait_log("could not renew the lease within the renew deadline; stopped emitting");
        thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        watching.store(false, Ordering::Relaxed);
        let (a_last, b_first) = watcher.join().unwrap();
        (a_last, b_first.expect("b wrote after taking over"), cut_at)
    });
    let expected = present(&server);
    let in_both = wait_delivered(&expected, &[&a, &b]);
    println!(
        "API cut: a's last write {:.2} s after the cut, b's first {:.2} s after it; {in_both} in both of {}",
        a_last_write.saturating_duration_since(cut_at).as_secs_f64(),
        b_first_write
            .saturating_duration_since(cut_at)
            .as_secs_f64(),
        expected.len()
    );
    assert!(
        a_last_write < b_first_write,
        "a wrote {:?} after b started",
        a_last_write - b_first_write
    );
    // a stands by again once it reaches the server, following b.
    relay.start_listening();
    a.pipe()
        .wait_log("following the stream as a standby; ready");
    assert!(!a.leads());
}

#[test]
fn a_leader_whose_sink_is_down_stalls_the_watermark_and_the_standby_stays_within_its_bound() {
    let server = ApiServer::start();
    // Both replicas also deliver to a webhook receiver, which refuses for 30 s.
    let (receiver, refusing) = switchable_receiver();
    let url = receiver.url();
    let sink = ["--sink", "file,http", "--http-url", url.as_str()];
    let a = Replica::start_with(server.kubeconfig(), "a", &sink);
    a.wait_leading();
    a.wait_ready();
    let limit = 1 << 20;
    let mut b_args = sink.to_vec();
    b_args.extend(["--standby-max-bytes", "1048576"]);
    let b = Replica::start_with(server.kubeconfig(), "b", &b_args);
    b.wait_ready();
    let watermark = || {
        server.lease(NS, "kube-event-pipe").and_then(|l| {
            l["metadata"]["annotations"]["kube-event-pipe.io/committed-resource-version"]
                .as_str()
                .map(str::to_string)
        })
    };
    let stop = AtomicBool::new(false);
    let added = AtomicU64::new(0);
    let event_bytes = EventBuilder::new("default", "during-00000").to_line().len();
    let (held_max, rss_max_kib, stalled_at, age) = thread::scope(|s| {
        s.spawn(|| Stream::run(&server, &stop, &added, "during"));
        wait_for("1 s of the stream", || {
            (added.load(Ordering::Relaxed) >= RATE).then_some(())
        });
        refusing.store(true, Ordering::Relaxed);
        // The watermark stops within a renewal or two of the sink failing.
        thread::sleep(3 * RETRY_PERIOD);
        let stalled_at = watermark();
        let (mut held_max, mut rss_max) = (0.0f64, 0u64);
        let end = Instant::now() + Duration::from_secs(27);
        while Instant::now() < end {
            held_max = held_max.max(
                b.metric("kube_event_pipe_standby_held_events")
                    .unwrap_or(0.0),
            );
            rss_max = rss_max.max(rss_kib(b.pid()));
            assert_eq!(
                watermark(),
                stalled_at,
                "the watermark moved while the sink was down"
            );
            thread::sleep(Duration::from_millis(250));
        }
        let age = a
            .metric("kube_event_pipe_watermark_age_seconds")
            .unwrap_or(0.0);
        refusing.store(false, Ordering::Relaxed);
        wait_for("the watermark to move again", || {
            (watermark() != stalled_at).then_some(())
        });
        stop.store(true, Ordering::Relaxed);
        (held_max, rss_max, stalled_at, age)
    });
    println!(
        "sink down 30 s: watermark held at {stalled_at:?}, leader's watermark age {age:.0} s, standby held at most {held_max} events, peak RSS {rss_max_kib} KiB"
    );
    assert!(stalled_at.is_some());
    assert!(age >= 20.0, "watermark age {age}");
    // The bound is in bytes: one hand-off (256 records) may go past it.
    let held_bound = (limit / event_bytes + 256) as f64;
    assert!(
        held_max > 0.0 && held_max <= held_bound,
        "held {held_max}, bound {held_bound}"
    );
    assert!(rss_max_kib < 96 * 1024, "standby RSS {rss_max_kib} KiB");
    // The stalled standby follows again: it holds nothing once the leader caught up.
    let expected = present(&server);
    wait_delivered(&expected, &[&a]);
    wait_for("the standby to hold nothing", || {
        (b.metric("kube_event_pipe_standby_held_events") == Some(0.0)).then_some(())
    });
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn a_rolling_restart_of_both_during_a_steady_stream_loses_nothing() {
    let server = ApiServer::start();
    server
        .add_all((0..2_000).map(|i| EventBuilder::new("default", &format!("before-{i}")).build()));
    let (mut a, mut b) = two(&server);
    let stop = AtomicBool::new(false);
    let added = AtomicU64::new(0);
    thread::scope(|s| {
        s.spawn(|| Stream::run(&server, &stop, &added, "during"));
        wait_for("1 s of the stream", || {
            (added.load(Ordering::Relaxed) >= RATE).then_some(())
        });
        // The standby first, as a StatefulSet rolls from the highest ordinal.
        b.stop();
        b.restart();
        b.wait_ready();
        a.stop();
        b.wait_leading();
        a.restart();
        a.wait_ready();
        assert!(!a.leads(), "a stands by after its restart");
        thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
    });
    let expected = present(&server);
    let in_both = wait_delivered(&expected, &[&a, &b]);
    println!("rolling restart: {in_both} in both of {}", expected.len());
    assert_eq!(
        in_both,
        0,
        "graceful handovers repeat nothing; the handovers as logged:\n{}\n{}",
        handovers(&a),
        handovers(&b)
    );
}

/// A replica's log lines about the Lease and its handovers, every run, for a failure message.
fn handovers(r: &Replica) -> String {
    let marks = [
        "lease",
        "leader",
        "took over",
        "standing by",
        "shutting down",
        "stopped",
    ];
    let mut out = String::new();
    for line in r
        .logs()
        .lines()
        .filter(|l| marks.iter().any(|m| l.contains(m)))
    {
        out.push_str(&format!("{}: {line}\n", r.identity));
    }
    out
}

#[test]
fn a_leader_held_back_by_a_failing_sink_still_steps_down_when_it_cannot_renew() {
    let server = ApiServer::start();
    server
        .add_all((0..1_000).map(|i| EventBuilder::new("default", &format!("before-{i}")).build()));
    let (relay, kubeconfig, _dir) = relayed(&server);
    let (receiver, refusing) = switchable_receiver();
    let url = receiver.url();
    let a = Replica::start_with(
        &kubeconfig,
        "a",
        &[
            "--context",
            "test-http",
            "--sink",
            "file,http",
            "--http-url",
            &url,
        ],
    );
    a.wait_leading();
    a.wait_ready();
    let b = Replica::start_with(
        server.kubeconfig(),
        "b",
        &["--sink", "file,http", "--http-url", &url],
    );
    b.wait_ready();
    let stop = AtomicBool::new(false);
    let added = AtomicU64::new(0);
    thread::scope(|s| {
        s.spawn(|| Stream::run(&server, &stop, &added, "during"));
        refusing.store(true, Ordering::Relaxed);
        // The leader fills its queues and waits for room that the refusing sink never makes.
        wait_for("2 s of the stream", || {
            (added.load(Ordering::Relaxed) >= 2 * RATE).then_some(())
        });
        relay.stop();
        a.pipe()
            .wait_log("stopped leading: events in flight are left to the new leader");
        b.wait_leading();
        refusing.store(false, Ordering::Relaxed);
        relay.start_listening();
        thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
    });
    let expected = present(&server);
    wait_delivered(&expected, &[&a, &b]);
    // The stepped-down replica stands by again, following the new leader.
    a.pipe()
        .wait_log("following the stream as a standby; ready");
    assert!(!a.leads());
}
