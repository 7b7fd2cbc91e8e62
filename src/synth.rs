//! Synthetic but realistic event streams, for the bundled sample, the integration tests and
//! the benchmarks.
//!
//! Realistic means what the pipe meets in a cluster: objects of 600 to 1500 bytes with
//! `managedFields`, both event styles (old-style `count` 1, 2, 3… from the kubelet; new-style
//! `eventTime` + `series.count` from the scheduler and operators), repeats delivered as
//! `MODIFIED`, about one `MODIFIED` in ten that changes nothing but the resourceVersion (a
//! duplicate), and `DELETED` when the event's TTL expires. The stream is deterministic for a
//! seed, and [`Stream::occurrences`] is the ground truth a test compares the output against.

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    /// Watch envelopes to produce.
    pub envelopes: usize,
    pub seed: u64,
    /// Share of envelopes that repeat an occurrence already sent (MODIFIED, same count).
    pub duplicate_ratio: f64,
    /// Share of envelopes that delete an event already sent.
    pub deleted_ratio: f64,
    /// Every n-th envelope is pretty-printed over several lines, as `kubectl -o json` prints.
    pub pretty_every: Option<usize>,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            envelopes: 1000,
            seed: 1,
            duplicate_ratio: 0.10,
            deleted_ratio: 0.02,
            pretty_every: None,
        }
    }
}

/// One occurrence as the key sees it: namespace, name, count.
pub type Occurrence = (String, String, u64);

/// A generated stream: JSON text of watch envelopes, and what a correct pipe delivers from it.
#[derive(Debug, Default)]
pub struct Stream {
    /// Newline-terminated envelopes; a pretty-printed one spans several lines.
    pub text: String,
    pub envelopes: usize,
    pub occurrences: BTreeSet<Occurrence>,
    pub duplicates: usize,
    pub deletions: usize,
}

/// splitmix64: enough randomness for shapes and sizes, and no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n.max(1))) >> 64) as u64
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const NAMESPACES: &[&str] = &[
    "default",
    "kube-system",
    "payments",
    "checkout",
    "monitoring",
    "ingress-nginx",
    "cert-manager",
    "data-pipeline",
];

const APPS: &[&str] = &[
    "api-gateway",
    "checkout",
    "cart",
    "orders-worker",
    "redis",
    "postgres",
    "prometheus",
    "fluent-bit",
    "ingress-nginx-controller",
    "cert-manager-webhook",
];

/// (kubelet reason, type, message template); `{pod}`, `{image}`, `{node}` are filled in.
const OLD_STYLE: &[(&str, &str, &str)] = &[
    ("Pulling", "Normal", "Pulling image \"{image}\""),
    (
        "Pulled",
        "Normal",
        "Successfully pulled image \"{image}\" in 2.381s (2.381s including waiting). Image size: 48213422 bytes.",
    ),
    ("Created", "Normal", "Created container {app}"),
    ("Started", "Normal", "Started container {app}"),
    (
        "BackOff",
        "Warning",
        "Back-off restarting failed container {app} in pod {pod}_{ns}({uid})",
    ),
    (
        "Unhealthy",
        "Warning",
        "Readiness probe failed: Get \"http://10.244.1.17:8080/healthz\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
    ),
    ("Killing", "Normal", "Stopping container {app}"),
];

/// (reason, type, action, reporting controller, message template) of new-style events.
const NEW_STYLE: &[(&str, &str, &str, &str, &str)] = &[
    (
        "Scheduled",
        "Normal",
        "Binding",
        "default-scheduler",
        "Successfully assigned {ns}/{pod} to {node}",
    ),
    (
        "FailedScheduling",
        "Warning",
        "Scheduling",
        "default-scheduler",
        "0/5 nodes are available: 2 Insufficient cpu, 3 node(s) had untolerated taint {node.kubernetes.io/unreachable: }. preemption: 0/5 nodes are available: 2 No preemption victims found for incoming pod, 3 Preemption is not helpful for scheduling.",
    ),
    (
        "Issuing",
        "Normal",
        "Reconcile",
        "cert-manager-certificates-trigger",
        "Issuing certificate as Secret does not exist",
    ),
    (
        "ScalingReplicaSet",
        "Normal",
        "Scale",
        "deployment-controller",
        "Scaled up replica set {app}-7d9f8c6b5 to 3 from 2",
    ),
];

const NODES: &[&str] = &[
    "ip-10-0-1-23.eu-west-1.compute.internal",
    "ip-10-0-2-51.eu-west-1.compute.internal",
    "ip-10-0-3-14.eu-west-1.compute.internal",
    "ip-10-0-1-88.eu-west-1.compute.internal",
    "ip-10-0-2-9.eu-west-1.compute.internal",
];

/// An event in the generator's memory: what it needs to send a repeat or a deletion.
struct Live {
    namespace: String,
    name: String,
    new_style: bool,
    count: u64,
    template: usize,
    pod: String,
    app: String,
    node: String,
    uid: String,
    object_uid: String,
    created: u64,
}

/// A Wednesday in November 2026; timestamps only need to look real and move.
const EPOCH: u64 = 1_795_000_000;

fn rfc3339(secs: u64) -> String {
    // Civil-from-days (Howard Hinnant), so timestamps need no date crate.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn uid(rng: &mut Rng) -> String {
    let (a, b) = (rng.next(), rng.next());
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

impl Live {
    fn object(&self, resource_version: u64, now: u64) -> String {
        let ts = rfc3339(now);
        let created = rfc3339(self.created);
        let fill = |t: &str| {
            t.replace("{pod}", &self.pod)
                .replace("{app}", &self.app)
                .replace("{node}", &self.node)
                .replace("{ns}", &self.namespace)
                .replace("{uid}", &self.object_uid)
                .replace(
                    "{image}",
                    &format!("registry.example.com/{}:v1.42.7", self.app),
                )
        };
        let mut o = String::with_capacity(1400);
        o.push_str("{\"apiVersion\":\"v1\",\"kind\":\"Event\",\"metadata\":{");
        let _ = write!(
            o,
            "\"name\":{},\"namespace\":{},\"uid\":\"{}\",\"resourceVersion\":\"{resource_version}\",\"creationTimestamp\":\"{created}\",",
            json_str(&self.name),
            json_str(&self.namespace),
            self.uid
        );
        let manager = if self.new_style {
            NEW_STYLE[self.template].3
        } else {
            "kubelet"
        };
        let _ = write!(
            o,
            "\"managedFields\":[{{\"manager\":\"{manager}\",\"operation\":\"Update\",\"apiVersion\":\"{}\",\"time\":\"{ts}\",\"fieldsType\":\"FieldsV1\",\"fieldsV1\":{{\"f:count\":{{}},\"f:firstTimestamp\":{{}},\"f:involvedObject\":{{}},\"f:lastTimestamp\":{{}},\"f:message\":{{}},\"f:reason\":{{}},\"f:reportingComponent\":{{}},\"f:reportingInstance\":{{}},\"f:source\":{{\"f:component\":{{}},\"f:host\":{{}}}},\"f:type\":{{}}}}}}]}},",
            if self.new_style {
                "events.k8s.io/v1"
            } else {
                "v1"
            }
        );
        let _ = write!(
            o,
            "\"involvedObject\":{{\"kind\":\"Pod\",\"namespace\":{},\"name\":{},\"uid\":\"{}\",\"apiVersion\":\"v1\",\"resourceVersion\":\"{}\"",
            json_str(&self.namespace),
            json_str(&self.pod),
            self.object_uid,
            resource_version.saturating_sub(7)
        );
        if self.new_style {
            let (reason, kind, action, controller, message) = NEW_STYLE[self.template];
            o.push_str("},");
            let _ = write!(
                o,
                "\"reason\":\"{reason}\",\"message\":{},\"source\":{{}},\"firstTimestamp\":null,\"lastTimestamp\":null,\"type\":\"{kind}\",\"eventTime\":\"{}.{:06}Z\",\"action\":\"{action}\",\"reportingComponent\":\"{controller}\",\"reportingInstance\":\"{controller}-{}\"",
                json_str(&fill(message)),
                &created[..created.len() - 1],
                self.created % 1_000_000,
                &self.node[..12]
            );
            if self.count > 1 {
                let _ = write!(
                    o,
                    ",\"series\":{{\"count\":{},\"lastObservedTime\":\"{}.{:06}Z\"}}",
                    self.count,
                    &ts[..ts.len() - 1],
                    now % 1_000_000
                );
            }
            o.push('}');
        } else {
            let (reason, kind, message) = OLD_STYLE[self.template];
            let _ = write!(
                o,
                ",\"fieldPath\":\"spec.containers{{{}}}\"}},\"reason\":\"{reason}\",\"message\":{},\"source\":{{\"component\":\"kubelet\",\"host\":\"{}\"}},\"firstTimestamp\":\"{created}\",\"lastTimestamp\":\"{ts}\",\"count\":{},\"type\":\"{kind}\",\"eventTime\":null,\"reportingComponent\":\"kubelet\",\"reportingInstance\":\"{}\"}}",
                self.app,
                json_str(&fill(message)),
                self.node,
                self.count,
                self.node
            );
        }
        o
    }
}

fn envelope(kind: &str, object: &str, pretty: bool) -> String {
    let line = format!("{{\"type\":\"{kind}\",\"object\":{object}}}");
    if !pretty {
        return line;
    }
    serde_json::from_str::<serde_json::Value>(&line)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or(line)
}

/// Generates a stream. Repeats and duplicates pick among recent events, as in a cluster where
/// a crashing pod's BackOff repeats while new pods come and go.
pub fn generate(config: &SynthConfig) -> Stream {
    let mut rng = Rng(config.seed);
    let mut stream = Stream::default();
    let mut live: Vec<Live> = Vec::new();
    let mut resource_version = 1_000_000u64;
    let mut now = EPOCH;
    for i in 0..config.envelopes {
        resource_version += 1 + rng.below(3);
        now += rng.below(2);
        let pretty = config.pretty_every.is_some_and(|n| n > 0 && i % n == n - 1);
        let recent = live.len().saturating_sub(200)..live.len();
        let (kind, object) = if !live.is_empty() && rng.chance(config.duplicate_ratio) {
            let ev = &live[recent.start + rng.below(recent.len() as u64) as usize];
            stream.duplicates += 1;
            ("MODIFIED", ev.object(resource_version, now))
        } else if !live.is_empty() && rng.chance(config.deleted_ratio) {
            let at = rng.below(live.len() as u64) as usize;
            let ev = live.swap_remove(at);
            stream.deletions += 1;
            ("DELETED", ev.object(resource_version, now))
        } else if live.len() > 20 && rng.chance(0.35) {
            let at = recent.start + rng.below(recent.len() as u64) as usize;
            let ev = &mut live[at];
            // New-style series jump when the recorder flushes; old-style counts step by one.
            ev.count += if ev.new_style && rng.chance(0.2) {
                2 + rng.below(30)
            } else {
                1
            };
            stream
                .occurrences
                .insert((ev.namespace.clone(), ev.name.clone(), ev.count));
            ("MODIFIED", ev.object(resource_version, now))
        } else {
            let namespace = rng.pick(NAMESPACES).to_owned();
            let app = rng.pick(APPS).to_owned();
            let pod = format!(
                "{app}-{:08x}-{:05x}",
                rng.next() & 0xffff_ffff,
                rng.next() & 0xfffff
            );
            let new_style = rng.chance(0.4);
            let template = if new_style {
                rng.below(NEW_STYLE.len() as u64)
            } else {
                rng.below(OLD_STYLE.len() as u64)
            } as usize;
            let ev = Live {
                name: format!("{pod}.{:016x}", rng.next()),
                namespace,
                new_style,
                count: 1,
                template,
                node: rng.pick(NODES).to_owned(),
                app,
                pod,
                uid: uid(&mut rng),
                object_uid: uid(&mut rng),
                created: now,
            };
            stream
                .occurrences
                .insert((ev.namespace.clone(), ev.name.clone(), 1));
            let object = ev.object(resource_version, now);
            live.push(ev);
            ("ADDED", object)
        };
        stream.text.push_str(&envelope(kind, &object, pretty));
        stream.text.push('\n');
        stream.envelopes += 1;
    }
    stream
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Change, EventRecord};

    fn records(text: &str) -> Vec<EventRecord> {
        serde_json::Deserializer::from_str(text)
            .into_iter::<serde_json::Value>()
            .map(|v| {
                let v = v.expect("valid JSON");
                let change = match v["type"].as_str() {
                    Some("ADDED") => Change::Added,
                    Some("MODIFIED") => Change::Modified,
                    Some("DELETED") => Change::Deleted,
                    other => panic!("unexpected type {other:?}"),
                };
                let raw = serde_json::value::to_raw_value(&v["object"]).expect("raw");
                EventRecord::from_raw(change, &raw).expect("an event the pipe accepts")
            })
            .collect()
    }

    #[test]
    fn objects_look_like_real_events() {
        let stream = generate(&SynthConfig {
            envelopes: 2000,
            ..SynthConfig::default()
        });
        let mut sizes: Vec<usize> = Vec::new();
        for line in stream.text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("one envelope per line");
            sizes.push(v["object"].to_string().len());
        }
        sizes.sort_unstable();
        assert!(sizes[0] >= 600, "smallest object {} bytes", sizes[0]);
        assert!(*sizes.last().unwrap() <= 1500, "largest {:?}", sizes.last());
    }

    #[test]
    fn ground_truth_matches_the_keys_of_the_stream() {
        let stream = generate(&SynthConfig {
            envelopes: 3000,
            pretty_every: Some(50),
            ..SynthConfig::default()
        });
        let recs = records(&stream.text);
        assert_eq!(recs.len(), 3000);
        let keys: BTreeSet<Occurrence> = recs
            .iter()
            .filter(|r| r.is_occurrence())
            .map(|r| (r.namespace().to_string(), r.name().to_string(), r.count))
            .collect();
        assert_eq!(keys, stream.occurrences);
        let dup_share = stream.duplicates as f64 / 3000.0;
        assert!((0.07..0.13).contains(&dup_share), "duplicates {dup_share}");
        assert!(stream.deletions > 0);
        let new_style = recs
            .iter()
            .filter(|r| r.raw.get().contains("\"series\""))
            .count();
        assert!(new_style > 0, "no new-style repeat in the stream");
    }

    #[test]
    fn a_seed_gives_the_same_stream() {
        let a = generate(&SynthConfig::default());
        let b = generate(&SynthConfig::default());
        assert_eq!(a.text, b.text);
        let c = generate(&SynthConfig {
            seed: 2,
            ..SynthConfig::default()
        });
        assert_ne!(a.text, c.text);
    }

    #[test]
    fn timestamps_are_civil_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
