//! The producer and its delivery reports: a batch's records handed to librdkafka, and the
//! batch acknowledged once every one of them is reported delivered.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::config::{KafkaSettings, Password, Sasl};
use super::problems::{self, Context, PROBLEM_GRACE, PROBLEM_WAIT, Problems};
use super::{KafkaSetupError, record};
use crate::flow::Batch;
use crate::sink::{Deliver, Failure};

type Outcome = Result<
    rdkafka::producer::future_producer::OwnedDeliveryResult,
    futures::channel::oneshot::Canceled,
>;

/// The records of the batch being delivered.
struct InFlight {
    seq: u64,
    /// Line indices to send (again) on this attempt.
    unsent: Vec<usize>,
    /// Records handed to librdkafka, awaiting their delivery reports. (In a mutex only so that
    /// the sink is `Sync`; the sink alone touches it, through `&mut`.)
    pending: Mutex<FuturesUnordered<BoxFuture<'static, (usize, Outcome)>>>,
    /// Which lines the brokers have, by index.
    delivered: Vec<bool>,
}

impl InFlight {
    fn pending(&mut self) -> &mut FuturesUnordered<BoxFuture<'static, (usize, Outcome)>> {
        self.pending.get_mut().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why an attempt ended early.
enum Stop {
    Failed(Failure),
    /// The producer is unusable; a new one must send what is undelivered.
    Fatal,
}

/// The running sink.
pub struct KafkaSink {
    client_config: ClientConfig,
    producer: FutureProducer<Context>,
    problems: Arc<Problems>,
    topic: String,
    cluster: Option<String>,
    current: Option<InFlight>,
    /// The last attempt failed: the next one waits [`PROBLEM_WAIT`] before failing again.
    failing: bool,
}

/// Reads the password and builds the producer; no request is made here, so a broker that is
/// down at startup is an outage like any other, not a failed start.
pub fn producer(
    settings: &KafkaSettings,
    cluster: Option<&str>,
) -> Result<KafkaSink, KafkaSetupError> {
    let client_config = client_config(settings)?;
    let problems = Arc::new(Problems::new(
        settings.sasl.as_ref().map(|s| s.username.clone()),
        settings.brokers.join(","),
    ));
    let producer = client_config
        .create_with_context(Context(problems.clone()))
        .map_err(KafkaSetupError::Producer)?;
    Ok(KafkaSink {
        client_config,
        producer,
        problems,
        topic: settings.topic.clone(),
        cluster: cluster.map(str::to_owned),
        current: None,
        failing: false,
    })
}

/// The librdkafka configuration for `settings`: ours first, then the user's properties.
pub fn client_config(settings: &KafkaSettings) -> Result<ClientConfig, KafkaSetupError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", settings.brokers.join(","))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // No local timeout: librdkafka retries a record until the brokers take it, which keeps
        // retries inside the idempotent producer (no duplicates); the sink notices outages
        // through the error callback instead.
        .set("message.timeout.ms", "0")
        .set("compression.codec", settings.compression.as_str())
        .set("security.protocol", settings.security_protocol())
        // An idle connection the broker closes is not an outage.
        .set("log.connection.close", "false")
        .set("client.id", "kube-event-pipe");
    if let Some(tls) = &settings.tls {
        for (key, path) in [
            ("ssl.ca.location", &tls.ca),
            ("ssl.certificate.location", &tls.cert),
            ("ssl.key.location", &tls.key),
        ] {
            if let Some(path) = path {
                c.set(key, path.to_string_lossy());
            }
        }
    }
    if let Some(Sasl {
        mechanism,
        username,
        password,
    }) = &settings.sasl
    {
        let password = match password {
            Password::Env(secret) => secret.0.clone(),
            Password::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| {
                    KafkaSetupError::PasswordFile {
                        path: path.clone(),
                        source,
                    }
                })?;
                text.strip_suffix('\n')
                    .map(|t| t.strip_suffix('\r').unwrap_or(t))
                    .unwrap_or(&text)
                    .to_string()
            }
        };
        c.set("sasl.mechanism", mechanism.as_str())
            .set("sasl.username", username)
            .set("sasl.password", password);
    }
    for (key, value) in &settings.properties {
        c.set(key, value);
    }
    Ok(c)
}

impl KafkaSink {
    /// The sink's name in logs.
    pub fn name(&self) -> String {
        format!("kafka topic {}", self.topic)
    }

    /// Delivers one batch: sends the records not yet delivered and waits for their reports.
    /// Ok once every record of the batch is delivered. An `Err` leaves the records that are in
    /// librdkafka's hands there; the next call with the same batch waits for them and sends
    /// again only those the brokers refused.
    pub async fn deliver_batch(&mut self, batch: &Batch) -> Result<(), Failure> {
        let attempt = Instant::now();
        let lines: Vec<&[u8]> = batch
            .bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let mut current = match self.current.take() {
            Some(c) if c.seq == batch.seq => c,
            _ => InFlight {
                seq: batch.seq,
                unsent: (0..lines.len()).rev().collect(),
                pending: Mutex::new(FuturesUnordered::new()),
                delivered: vec![false; lines.len()],
            },
        };
        let result = if self.producer.client().fatal_error().is_some() {
            Err(Stop::Fatal)
        } else {
            let grace = if self.failing {
                PROBLEM_WAIT
            } else {
                PROBLEM_GRACE
            };
            self.attempt(&mut current, &lines, attempt, grace).await
        };
        let result = match result {
            Ok(()) => Ok(()),
            Err(Stop::Failed(failure)) => Err(failure),
            Err(Stop::Fatal) => Err(self.restart(&mut current)),
        };
        self.failing = result.is_err();
        if result.is_err() {
            self.current = Some(current);
        }
        result
    }

    async fn attempt(
        &self,
        current: &mut InFlight,
        lines: &[&[u8]],
        attempt: Instant,
        grace: Duration,
    ) -> Result<(), Stop> {
        // `unsent` is kept in reverse, so popping sends in line order.
        while let Some(index) = current.unsent.pop() {
            let Some(line) = lines.get(index) else {
                continue;
            };
            match self.send(line) {
                Ok(future) => current
                    .pending()
                    .push(Box::pin(async move { (index, future.await) })),
                Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    // librdkafka's queue is full: wait for reports to free it, unless the
                    // brokers are gone, which is an outage to report.
                    current.unsent.push(index);
                    if let Some(failure) = self.problems.since(attempt, grace) {
                        return Err(Stop::Failed(failure));
                    }
                    if let Some((i, outcome)) = tokio::select! {
                        next = current.pending().next() => next,
                        () = tokio::time::sleep(Duration::from_millis(50)) => None,
                    } {
                        self.settle(current, i, outcome).map_err(Stop::Failed)?;
                    }
                }
                Err(e) => {
                    current.unsent.push(index);
                    return Err(Stop::Failed(self.classify(&e, line.len())));
                }
            }
        }
        let mut first_failure = None;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                next = current.pending().next() => match next {
                    None => break,
                    Some((index, outcome)) => {
                        if let Err(failure) = self.settle(current, index, outcome) {
                            first_failure.get_or_insert(failure);
                        }
                    }
                },
                _ = tick.tick() => {
                    if self.producer.client().fatal_error().is_some() {
                        return Err(Stop::Fatal);
                    }
                    if let Some(failure) = self.problems.since(attempt, grace) {
                        return Err(Stop::Failed(failure));
                    }
                }
            }
        }
        // Refused records go to `unsent` (in reverse order for the next attempt).
        current.unsent.sort_unstable_by(|a, b| b.cmp(a));
        match first_failure {
            Some(failure) => Err(Stop::Failed(failure)),
            None => Ok(()),
        }
    }

    /// Records one delivery report; a refused record goes back to `unsent`.
    fn settle(
        &self,
        current: &mut InFlight,
        index: usize,
        outcome: Outcome,
    ) -> Result<(), Failure> {
        match outcome {
            Ok(Ok(_)) => {
                if let Some(done) = current.delivered.get_mut(index) {
                    *done = true;
                }
                self.problems.clear();
                Ok(())
            }
            Ok(Err((error, message))) => {
                current.unsent.push(index);
                let size = rdkafka::message::Message::payload(&message).map_or(0, <[u8]>::len);
                Err(self.classify(&error, size))
            }
            Err(_) => {
                current.unsent.push(index);
                Err(Failure::retry(
                    "dropped",
                    "the Kafka producer dropped a record before reporting on it; sending it again",
                ))
            }
        }
    }

    /// Hands one line to librdkafka, with its key and headers.
    fn send(&self, line: &[u8]) -> Result<rdkafka::producer::DeliveryFuture, KafkaError> {
        let meta = record::meta(line);
        let mut headers = OwnedHeaders::new_with_capacity(3);
        if let Some(cluster) = &self.cluster {
            headers = headers.insert(Header {
                key: "cluster",
                value: Some(cluster.as_str()),
            });
        }
        if let Some(t) = &meta.event_type {
            headers = headers.insert(Header {
                key: "type",
                value: Some(t.as_str()),
            });
        }
        if let Some(r) = &meta.reason {
            headers = headers.insert(Header {
                key: "reason",
                value: Some(r.as_str()),
            });
        }
        let mut record: FutureRecord<'_, str, [u8]> =
            FutureRecord::to(&self.topic).payload(line).headers(headers);
        if let Some(key) = &meta.key {
            record = record.key(key.as_str());
        }
        self.producer.send_result(record).map_err(|(e, _)| e)
    }

    /// Sorts a record's delivery error by the rules in [`problems`](super::problems).
    fn classify(&self, error: &KafkaError, size: usize) -> Failure {
        problems::classify(error, size, &self.topic, &self.problems.brokers)
    }

    /// After a fatal error (the brokers lost the idempotent producer's state): a new producer,
    /// and every record of the batch not yet reported delivered is sent again. Some may have
    /// landed already: a duplicate, never a loss.
    fn restart(&mut self, current: &mut InFlight) -> Failure {
        let reason = self
            .producer
            .client()
            .fatal_error()
            .map(|(code, text)| format!("{code}: {text}"))
            .unwrap_or_default();
        current.pending = Mutex::new(FuturesUnordered::new());
        current.unsent = (0..current.delivered.len())
            .rev()
            .filter(|&i| !current.delivered[i])
            .collect();
        match self
            .client_config
            .create_with_context(Context(self.problems.clone()))
        {
            Ok(producer) => {
                self.producer = producer;
                Failure::retry(
                    "fatal",
                    format!(
                        "the Kafka producer hit a fatal error ({reason}); a new producer sends the batch's undelivered records again (some may appear twice)"
                    ),
                )
            }
            Err(e) => Failure::retry(
                "fatal",
                format!(
                    "the Kafka producer hit a fatal error ({reason}) and a new one cannot be made: {e}"
                ),
            ),
        }
    }
}

impl Deliver for KafkaSink {
    async fn deliver(&mut self, batch: &Arc<Batch>) -> Result<(), Failure> {
        self.deliver_batch(batch).await
    }
}
