//! Configuration tests: precedence, k8stream keys and the exact error lines (built only under #[cfg(test)]).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::CommandFactory;

use super::*;

/// Builds a config from arguments with a clean environment view: clap reads the real process
/// environment, so these tests only pass variables through `env` values that no CI sets.
fn build_from(args: &[&str]) -> Result<Config, ConfigError> {
    let argv: Vec<OsString> = std::iter::once("kube-event-pipe")
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect();
    let matches = Cli::command().try_get_matches_from(argv).unwrap();
    build(&matches)
}

#[test]
fn defaults_match_the_python_tool_except_the_error_rate() {
    let c = build_from(&["--source", "replay", "--replay-file", "-"]).unwrap();
    assert_eq!(c.source, SourceConfig::Replay(ReplayInput::Stdin));
    assert_eq!(c.sinks, vec![SinkConfig::Stdout]);
    assert_eq!(c.persistence_path, PathBuf::from("."));
    assert_eq!(c.filter_capacity, 1_000_000);
    assert_eq!(c.filter_error_rate, 0.000_001);
    assert_eq!(c.generations, 3);
    assert_eq!(c.rotation_interval, Duration::from_secs(3600));
    assert_eq!(c.log_filter, "info");
    assert_eq!(c.format, OutputFormat::Raw);
    assert!(!c.emit_deleted);
}

#[test]
fn flag_errors_name_the_flag_value_and_range() {
    let err = build_from(&["--filter-capacity", "12x"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--filter-capacity=12x (flag): must be a whole number from 1000 to 1000000000"
    );
    let err = build_from(&["--format", "yaml"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--format=yaml (flag): must be one of raw, eventrouter"
    );
}

#[test]
fn replay_needs_an_input() {
    let err = build_from(&["--source", "replay"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--source replay needs --replay-file PATH (or - for stdin)"
    );
}

#[test]
fn a_destination_path_selects_the_file_sink() {
    let c = build_from(&["--destination", "/var/log/events.jsonl"]).unwrap();
    assert_eq!(
        c.sinks,
        vec![SinkConfig::File {
            path: "/var/log/events.jsonl".into(),
            fsync: true
        }]
    );
}

fn write_config(text: &str, ext: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("c.{ext}"));
    std::fs::write(&path, text).unwrap();
    let p = path.to_string_lossy().into_owned();
    (dir, p)
}

#[test]
fn k8stream_keys_map_to_ours() {
    let (_d, path) = write_config(
        r#"{"batch_size": 250, "batch_interval": 2, "uid": "prod-1", "file_sink_dir": "/data",
            "prefix": "events", "aws_region": "eu-west-1", "aws_bucket": "my-events",
            "aws_profile": "archive", "sink": "file", "kubeconfig": "/etc/kube/config"}"#,
        "json",
    );
    let c = build_from(&["--config", &path]).unwrap();
    assert_eq!(c.batch_size, 250);
    assert_eq!(c.batch_interval, Duration::from_secs(2));
    assert_eq!(
        c.sinks,
        vec![SinkConfig::File {
            path: "/data/events.jsonl".into(),
            fsync: true
        }]
    );
    assert_eq!(
        c.source,
        SourceConfig::Kube(KubeConfig {
            kubeconfig: Some("/etc/kube/config".into()),
            ..KubeConfig::default()
        })
    );
    assert_eq!(c.s3.uid.as_deref(), Some("prod-1"));
    assert_eq!(c.s3.bucket.as_deref(), Some("my-events"));
    assert_eq!(c.s3.connection.region.as_deref(), Some("eu-west-1"));
    assert_eq!(c.s3.connection.profile.as_deref(), Some("archive"));
    assert_eq!(c.s3.prefix.as_deref(), Some("events"));
}

#[test]
fn flags_win_over_the_file() {
    let (_d, path) = write_config("batch_size: 250\ngenerations: 5\n", "yaml");
    let c = build_from(&["--config", &path, "--batch-size", "10"]).unwrap();
    assert_eq!(c.batch_size, 10);
    assert_eq!(c.generations, 5);
}

#[test]
fn file_errors_name_the_file_and_key() {
    let (_d, path) = write_config("batch_size: 0\n", "yaml");
    let err = build_from(&["--config", &path]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("batch_size=0 (config file {path}): must be a whole number from 1 to 1000000")
    );
    let (_d, path) = write_config("sink: s3\ns3_format: avro\n", "yaml");
    let err = build_from(&["--config", &path]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("s3_format=avro (config file {path}): must be one of jsonl, protobuf")
    );
}

#[test]
fn the_s3_sink_takes_k8stream_keys_and_repeated_sink_flags() {
    let (_d, path) = write_config(
        r#"{"sink": ["stdout", "s3"], "aws_bucket": "evs", "aws_region": "eu-west-1", "prefix": "/k8s/"}"#,
        "json",
    );
    let c = build_from(&["--config", &path, "--s3-format", "protobuf"]).unwrap();
    let [SinkConfig::Stdout, SinkConfig::S3(s3)] = c.sinks.as_slice() else {
        panic!("expected stdout and s3, got {:?}", c.sinks);
    };
    assert_eq!(s3.bucket, "evs");
    assert_eq!(c.s3.prefix.as_deref(), Some("k8s"));
    assert_eq!(c.s3.format, ObjectFormat::Protobuf);
    let c = build_from(&[
        "--sink",
        "stdout",
        "--sink",
        "s3",
        "--s3-bucket",
        "evs",
        "--s3-sse",
        "aws:kms",
        "--s3-sse-kms-key-id",
        "k1",
        "--s3-endpoint",
        "http://127.0.0.1:9000",
        "--s3-force-path-style",
    ])
    .unwrap();
    let [SinkConfig::Stdout, SinkConfig::S3(s3)] = c.sinks.as_slice() else {
        panic!("expected stdout and s3, got {:?}", c.sinks);
    };
    assert_eq!(s3.bucket, "evs");
    assert_eq!(
        c.s3.sse,
        Some(Sse::Kms {
            key_id: Some("k1".into())
        })
    );
    assert!(c.s3.connection.force_path_style);
    assert_eq!(c.batch_max_bytes, 8 << 20);
}

#[test]
fn bad_s3_settings_are_rejected_with_the_fix() {
    let err = build_from(&["--sink", "s3"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the s3 sink needs a bucket: set --s3-bucket, KUBE_EVENT_PIPE_S3_BUCKET or aws_bucket in the config file"
    );
    let err = build_from(&["--s3-sse-kms-key-id", "k1"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--s3-sse-kms-key-id=k1 (flag): needs --s3-sse aws:kms"
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let err = build_from(&["--config", "/nonexistent/kep.yaml"]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("config file /nonexistent/kep.yaml: cannot read it: "),
        "{err}"
    );
}

#[test]
fn kube_source_options_from_flags_and_file() {
    let c = build_from(&[
        "--namespace",
        "default,kube-system",
        "--namespace",
        "payments",
        "--field-selector",
        "type=Warning",
        "--list-page-size",
        "100",
        "--context",
        "prod",
    ])
    .unwrap();
    let SourceConfig::Kube(k) = c.source else {
        panic!("kube is the default source")
    };
    assert_eq!(k.namespaces, ["default", "kube-system", "payments"]);
    assert_eq!(k.field_selector.as_deref(), Some("type=Warning"));
    assert_eq!(k.label_selector, None);
    assert_eq!(k.list_page_size, 100);
    assert_eq!(k.context.as_deref(), Some("prod"));
    assert_eq!(k.watch_timeout, Duration::from_secs(290));
    assert_eq!(k.initial_list, InitialList::Auto);

    let (_d, path) = write_config(
        "namespaces: [a, b]\nlabel_selector: team=x\nwatch_timeout: 60\n",
        "yaml",
    );
    let SourceConfig::Kube(k) = build_from(&["--config", &path]).unwrap().source else {
        panic!("kube is the default source")
    };
    assert_eq!(k.namespaces, ["a", "b"]);
    assert_eq!(k.label_selector.as_deref(), Some("team=x"));
    assert_eq!(k.watch_timeout, Duration::from_secs(60));

    let (_d, path) = write_config("initial_list: paginate\n", "yaml");
    let SourceConfig::Kube(k) = build_from(&["--config", &path]).unwrap().source else {
        panic!("kube is the default source")
    };
    assert_eq!(k.initial_list, InitialList::Paginate);
    let err = build_from(&["--initial-list", "pages"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--initial-list") && err.contains("auto") && err.contains("paginate"),
        "{err}"
    );
}

#[test]
fn bad_kube_options_are_named() {
    let err = build_from(&["--namespace", "Default"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--namespace=Default (flag): \"Default\" is not a namespace name; must be a comma-separated list of namespace names (lower-case letters, digits and -, at most 63 characters)"
    );
    let err = build_from(&["--list-page-size", "0"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--list-page-size=0 (flag): must be a whole number from 1 to 100000"
    );
}

#[test]
fn listen_defaults_on_in_a_pod_and_off_elsewhere_and_accepts_off() {
    assert_eq!(default_listen(false), None);
    assert_eq!(
        default_listen(true),
        Some(std::net::SocketAddr::from(([0, 0, 0, 0], 9090)))
    );
    let c = build_from(&["--listen", "127.0.0.1:0", "--metrics-by-reason"]).unwrap();
    assert_eq!(c.listen, Some("127.0.0.1:0".parse().unwrap()));
    assert!(c.metrics_by_reason);
    assert_eq!(build_from(&["--listen", "OFF"]).unwrap().listen, None);
    assert_eq!(
        build_from(&["--listen", "9090"]).unwrap_err().to_string(),
        "--listen=9090 (flag): must be an IP address and port such as 0.0.0.0:9090 or [::]:9090, or off"
    );
}

#[test]
fn the_logged_configuration_names_the_effective_values() {
    let c = build_from(&[
        "--source",
        "replay",
        "--replay-file",
        "-",
        "--batch-size",
        "7",
        "--listen",
        "off",
        "--s3-bucket",
        "my-bucket",
    ])
    .unwrap();
    let line = c.redacted().to_string();
    for part in [
        "source=replay",
        "replay_file=-",
        "batch_size=7",
        "listen=off",
        "s3_bucket=my-bucket",
        "filter_error_rate=0.000001",
    ] {
        assert!(line.contains(part), "{part} missing from {line}");
    }
}

#[test]
fn the_kafka_sink_takes_flags_and_file_keys_with_their_defaults() {
    let c = build_from(&[
        "--sink",
        "stdout,kafka",
        "--kafka-brokers",
        "k0:9092,k1:9093",
        "--kafka-property",
        "linger.ms=20",
        "--kafka-property",
        "ssl.cipher.suites=A,B",
    ])
    .unwrap();
    let [SinkConfig::Stdout, SinkConfig::Kafka(k)] = &c.sinks[..] else {
        panic!("{:?}", c.sinks);
    };
    assert_eq!(
        k.brokers,
        vec!["k0:9092".to_string(), "k1:9093".to_string()]
    );
    assert_eq!(k.topic, "kube-events");
    assert_eq!(k.compression, kafka::Compression::Lz4);
    assert_eq!(k.security_protocol(), "plaintext");
    assert_eq!(
        k.properties,
        vec![
            ("linger.ms".to_string(), "20".to_string()),
            ("ssl.cipher.suites".to_string(), "A,B".to_string()),
        ]
    );

    let (_dir, path) = write_config(
        "sink: [kafka]\nkafka_brokers: k:9092\nkafka_topic: audit.events\nkafka_compression: zstd\nkafka_tls_ca: /ca.pem\nkafka_sasl_mechanism: SCRAM-SHA-512\nkafka_sasl_username: pipe\nkafka_sasl_password_file: /secret/password\nkafka_property: [client.id=x]\n",
        "yaml",
    );
    let c = build_from(&["--config", &path]).unwrap();
    let [SinkConfig::Kafka(k)] = &c.sinks[..] else {
        panic!("{:?}", c.sinks);
    };
    assert_eq!(k.topic, "audit.events");
    assert_eq!(k.compression, kafka::Compression::Zstd);
    assert_eq!(k.security_protocol(), "sasl_ssl");
    let sasl = k.sasl.as_ref().unwrap();
    assert_eq!(sasl.mechanism, kafka::SaslMechanism::ScramSha512);
    assert_eq!(
        sasl.password,
        kafka::Password::File(PathBuf::from("/secret/password"))
    );
    assert_eq!(k.properties, vec![("client.id".into(), "x".into())]);
    let line = c.redacted().to_string();
    assert!(line.contains("sinks=kafka:audit.events"), "{line}");
    assert!(
        line.contains("kafka_sasl_login_from=/secret/password"),
        "{line}"
    );
}

#[test]
fn bad_kafka_settings_are_rejected_with_the_fix() {
    let err = build_from(&["--sink", "kafka"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--sink=kafka (flag): the kafka sink needs --kafka-brokers HOST:PORT (or KUBE_EVENT_PIPE_KAFKA_BROKERS, or kafka_brokers in the config file)"
    );
    let err = build_from(&["--sink", "kafka", "--kafka-brokers", "kafka"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--kafka-brokers=kafka (flag): \"kafka\" is not HOST:PORT; must be a comma-separated list of HOST:PORT, e.g. kafka-0.kafka:9092,kafka-1.kafka:9092"
    );
    let err =
        build_from(&["--kafka-brokers", "k:9092", "--kafka-compression", "brotli"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--kafka-compression=brotli (flag): must be one of none, gzip, snappy, lz4, zstd"
    );
    let err = build_from(&["--kafka-brokers", "k:9092", "--kafka-property", "acks=1"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--kafka-property=acks=1 (flag): sets acks, which the sink fixes (idempotent producer, acks=all, --kafka-brokers); remove it"
    );
    let err = build_from(&[
        "--kafka-brokers",
        "k:9092",
        "--kafka-sasl-mechanism",
        "PLAIN",
        "--kafka-sasl-username",
        "u",
    ])
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "SASL needs a password: set --kafka-sasl-password-file FILE (or kafka_sasl_password_file in the config file) or the environment variable KUBE_EVENT_PIPE_KAFKA_SASL_PASSWORD"
    );
    let err = build_from(&["--kafka-brokers", "k:9092", "--kafka-tls-cert", "/c.pem"]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("--kafka-tls-cert and --kafka-tls-key go together"),
        "{err}"
    );
}

#[test]
fn a_kafka_password_from_the_environment_is_never_shown() {
    let env = Some("hunter2-secret".to_string());
    let get = |_: &str, _: &[&str]| None;
    assert_eq!(kafka::settings(&get, env.clone()).unwrap(), None);
    let c = build_from(&[
        "--kafka-brokers",
        "k:9092",
        "--sink",
        "kafka",
        "--kafka-property",
        "ssl.key.password=hunter2-secret",
    ])
    .unwrap();
    let line = c.redacted().to_string();
    assert!(
        line.contains("kafka_property=ssl.key.password=<redacted>"),
        "{line}"
    );
    assert!(!line.contains("hunter2"), "{line}");
    let p = kafka::Password::Env(kafka::Secret("hunter2-secret".into()));
    assert!(!format!("{p:?}").contains("hunter2"));
}

#[test]
fn the_otlp_sink_takes_its_settings_from_flags_and_the_file() {
    let c = build_from(&[
        "--source",
        "replay",
        "--replay-file",
        "-",
        "--sink",
        "otlp",
        "--otlp-endpoint",
        "https://collector:4318",
        "--otlp-header",
        "X-Scope-OrgID=t1,Authorization=@/var/run/token",
        "--otlp-header",
        "X-B=2",
        "--otlp-body",
        "event",
        "--otlp-timeout",
        "2.5",
    ])
    .unwrap();
    let [SinkConfig::Otlp(o)] = c.sinks.as_slice() else {
        panic!("{:?}", c.sinks);
    };
    assert_eq!(o.endpoint, "https://collector:4318");
    assert_eq!(o.compression, Compression::Gzip);
    assert_eq!(o.body, OtlpBody::Event);
    assert_eq!(o.timeout, Duration::from_millis(2500));
    assert_eq!(
        o.headers,
        vec![
            HeaderSpec {
                name: "X-Scope-OrgID".into(),
                value: HeaderValueSource::Literal("t1".into())
            },
            HeaderSpec {
                name: "Authorization".into(),
                value: HeaderValueSource::File("/var/run/token".into())
            },
            HeaderSpec {
                name: "X-B".into(),
                value: HeaderValueSource::Literal("2".into())
            },
        ]
    );
    // The header values never reach the log line.
    let logged = c.redacted().to_string();
    assert!(
        logged.contains("otlp_headers=X-Scope-OrgID=<redacted>"),
        "{logged}"
    );
    assert!(!logged.contains("t1"), "{logged}");

    let (_d, path) = write_config(
        "sink: [http]\nhttp_url: http://hooks:8080/e\nhttp_format: json\nhttp_bearer_token_file: /t\ndead_letter_dir: /dl\n",
        "yaml",
    );
    let c = build_from(&[
        "--config",
        &path,
        "--source",
        "replay",
        "--replay-file",
        "-",
    ])
    .unwrap();
    let [SinkConfig::Http(h)] = c.sinks.as_slice() else {
        panic!("{:?}", c.sinks);
    };
    assert_eq!(h.format, WebhookFormat::Json);
    assert_eq!(h.compression, Compression::None);
    assert_eq!(h.bearer_token_file, Some(PathBuf::from("/t")));
    assert_eq!(c.dead_letter_dir, Some(PathBuf::from("/dl")));
    assert_eq!(c.refused_retry_interval, Duration::from_secs(30));
}

#[test]
fn http_sink_errors_name_the_option_and_the_fix() {
    let err = build_from(&["--sink", "otlp"]).unwrap_err();
    assert!(err.to_string().contains("--otlp-endpoint"), "{err}");
    let err = build_from(&["--sink", "http"]).unwrap_err();
    assert!(err.to_string().contains("--http-url"), "{err}");
    let err = build_from(&["--otlp-endpoint", "collector:4318"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--otlp-endpoint=collector:4318 (flag): must be an http:// or https:// URL such as http://otel-collector:4318"
    );
    let err = build_from(&["--http-header", "NoEquals"]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("--http-header=NoEquals (flag): must be NAME=VALUE"),
        "{err}"
    );
    let err = build_from(&["--http-header", "Bad Name=1"]).unwrap_err();
    assert!(err.to_string().contains("is not a header name"), "{err}");
    let err = build_from(&["--otlp-client-cert", "/c.pem"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--otlp-client-cert=/c.pem (flag): needs --otlp-client-key too: a client certificate is used with its key"
    );
    let err = build_from(&["--otlp-compression", "zstd"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--otlp-compression=zstd (flag): must be one of gzip, none"
    );
    let err = build_from(&["--refused-retry-interval", "0"]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("--refused-retry-interval=0 (flag)"),
        "{err}"
    );
}

#[test]
fn leader_election_takes_its_lease_and_timing_and_checks_them_together() {
    let c = build_from(&[
        "--leader-elect",
        "--lease-namespace",
        "events",
        "--identity",
        "pipe-0",
        "--retry-period",
        "1",
    ])
    .unwrap();
    let ha = c.ha.expect("leader election is on");
    assert_eq!(ha.lease.name, "kube-event-pipe");
    assert_eq!(ha.lease.namespace, "events");
    assert_eq!(ha.lease.identity, "pipe-0");
    assert_eq!(ha.lease.lease_duration, Duration::from_secs(15));
    assert_eq!(ha.lease.renew_deadline, Duration::from_secs(10));
    assert_eq!(ha.lease.retry_period, Duration::from_secs(1));
    assert_eq!(ha.standby_max_bytes, 64 << 20);
    assert!(build_from(&[]).unwrap().ha.is_none());

    let err = build_from(&[
        "--leader-elect",
        "--lease-namespace",
        "events",
        "--identity",
        "a",
        "--renew-deadline",
        "15",
    ])
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "--renew-deadline (15 s) must be shorter than --lease-duration (15 s): a leader must stop emitting before a standby may take its Lease"
    );
    let err = build_from(&[
        "--leader-elect",
        "--lease-namespace",
        "events",
        "--identity",
        "a",
        "--retry-period",
        "9",
    ])
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("--retry-period (9 s) must be under"),
        "{err}"
    );
    let err = build_from(&["--leader-elect", "--lease-namespace", "Events_1"]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("--lease-namespace=Events_1 (flag): must be a Kubernetes object name"),
        "{err}"
    );
    let err =
        build_from(&["--source", "replay", "--replay-file", "-", "--leader-elect"]).unwrap_err();
    assert!(err.to_string().contains("needs --source kube"), "{err}");
}
