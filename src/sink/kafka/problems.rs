//! What goes wrong with Kafka and what it calls for: the client-wide problems librdkafka
//! reports through its error callback, kept until a record is delivered again, and the rules
//! that sort a record's delivery error. The rules are pure functions of librdkafka's error
//! codes, tested without a client.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::sink::Failure;
use crate::sink::classify::Verdict;

/// How long a batch's records may go undelivered while librdkafka reports a problem before the
/// attempt counts as failed (and the outage is logged). Long enough that a problem already
/// over (a broker that just came back) does not count.
pub(super) const PROBLEM_GRACE: Duration = Duration::from_secs(1);

/// While a problem is already reported, how long an attempt waits for the records to go out
/// before it reports the problem again. The records sit in librdkafka, which sends them as soon
/// as a broker is back: waiting inside the attempt notices a recovery at once, where returning
/// at once would notice it only after the driver's next backoff delay (up to 30 s).
pub(super) const PROBLEM_WAIT: Duration = Duration::from_secs(10);

/// A client-wide problem librdkafka reported through its error callback, kept until a record
/// is delivered again.
#[derive(Debug, Clone)]
pub(super) struct Problem {
    /// A short stable name, so the log changes only when the problem does.
    kind: &'static str,
    verdict: Verdict,
    message: String,
}

/// What the producer's callbacks share with the sink.
#[derive(Debug, Default)]
pub(super) struct Problems {
    current: Mutex<Option<Problem>>,
    /// For the messages: who logs in, and where.
    pub(super) user: Option<String>,
    pub(super) brokers: String,
}

impl Problems {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Problem>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set(&self, kind: &'static str, verdict: Verdict, message: String) {
        let mut current = self.lock();
        // A refused login takes every broker down after it: the login is the news.
        let refused = |v: Verdict| v == Verdict::Refused;
        if !refused(verdict) && current.as_ref().is_some_and(|p| refused(p.verdict)) {
            return;
        }
        *current = Some(Problem {
            kind,
            verdict,
            message,
        });
    }

    /// A record was delivered: whatever was wrong is over.
    pub(super) fn clear(&self) {
        self.lock().take();
    }

    pub(super) fn get(&self) -> Option<Problem> {
        self.lock().clone()
    }
}

impl Problems {
    pub(super) fn new(user: Option<String>, brokers: String) -> Self {
        Problems {
            current: Mutex::new(None),
            user,
            brokers,
        }
    }

    /// The client-wide problem, if one has kept an attempt that started at `attempt` from
    /// delivering for `grace`.
    pub(super) fn since(&self, attempt: Instant, grace: Duration) -> Option<Failure> {
        let problem = self.get()?;
        if attempt.elapsed() < grace {
            return None;
        }
        Some(match problem.verdict {
            Verdict::Refused => Failure::refused(problem.kind, problem.message),
            Verdict::Retry => Failure::retry(problem.kind, problem.message),
        })
    }

    /// Takes a client-wide error librdkafka reported, when it is one that matters.
    fn report(&self, code: Option<RDKafkaErrorCode>, reason: &str) -> bool {
        let Some((kind, verdict)) = client_problem(code) else {
            return false;
        };
        let brokers = &self.brokers;
        let message = match verdict {
            Verdict::Retry => format!(
                "no Kafka broker of {brokers} is reachable ({reason}); records wait in the producer until one is"
            ),
            Verdict::Refused => {
                let who = self
                    .user
                    .as_deref()
                    .map(|u| format!(" of user {u}"))
                    .unwrap_or_default();
                format!(
                    "the Kafka brokers {brokers} refused the login{who} ({reason}); check --kafka-sasl-mechanism, --kafka-sasl-username and the password (file or KUBE_EVENT_PIPE_KAFKA_SASL_PASSWORD), or the --kafka-tls-* files"
                )
            }
        };
        self.set(kind, verdict, message);
        true
    }
}

/// The rule for librdkafka's client-wide errors: no broker reachable is an outage; a refused
/// login is for an operator. Connection errors of single brokers while others serve, and the
/// rest, are not: the records' own reports say whether they matter.
pub(super) fn client_problem(code: Option<RDKafkaErrorCode>) -> Option<(&'static str, Verdict)> {
    match code? {
        RDKafkaErrorCode::AllBrokersDown => Some(("brokers down", Verdict::Retry)),
        RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => {
            Some(("login refused", Verdict::Refused))
        }
        _ => None,
    }
}

/// Why the brokers refused a record, for the problems an operator must fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    UnknownTopic,
    NotAuthorized,
    TooLarge,
    LoginRefused,
}

/// The rule for a record's delivery error: `Some` when an operator must fix something (the
/// record is refused), `None` when it is retried.
pub(super) fn refusal(code: Option<RDKafkaErrorCode>) -> Option<Refusal> {
    use RDKafkaErrorCode as C;
    match code? {
        C::UnknownTopicOrPartition | C::UnknownTopic => Some(Refusal::UnknownTopic),
        C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed => Some(Refusal::NotAuthorized),
        C::MessageSizeTooLarge | C::InvalidRecord | C::InvalidMessageSize => {
            Some(Refusal::TooLarge)
        }
        C::Authentication | C::SaslAuthenticationFailed => Some(Refusal::LoginRefused),
        _ => None,
    }
}

/// Sorts a record's delivery error by [`refusal`], with the fix in the message.
pub(super) fn classify(error: &KafkaError, size: usize, topic: &str, brokers: &str) -> Failure {
    let code = error.rdkafka_error_code();
    let Some(refusal) = refusal(code) else {
        return Failure::retry(
            code.map_or_else(|| "delivery".to_string(), |c| format!("{c:?}")),
            format!("Kafka delivery to topic {topic} failed: {error}"),
        );
    };
    let code = code.map(|c| c.to_string()).unwrap_or_default();
    let (kind, message) = match refusal {
        Refusal::UnknownTopic => (
            "unknown topic",
            format!(
                "topic {topic} does not exist on the Kafka brokers {brokers}, which do not create topics on first use; create it (kafka-topics.sh --create --topic {topic}) or point --kafka-topic at an existing one"
            ),
        ),
        Refusal::NotAuthorized => (
            "not authorized",
            format!(
                "the Kafka brokers {brokers} refused the write to topic {topic} ({code}); grant the sink's principal WRITE on the topic and IDEMPOTENT_WRITE on the cluster"
            ),
        ),
        Refusal::TooLarge => (
            "record too large",
            format!(
                "the Kafka brokers refused a record of {size} bytes for topic {topic} ({code}); raise max.message.bytes on the topic and --kafka-property message.max.bytes, or lower --batch-max-bytes"
            ),
        ),
        Refusal::LoginRefused => (
            "login refused",
            format!(
                "the Kafka brokers {brokers} refused the login ({error}); check the SASL and TLS settings"
            ),
        ),
    };
    Failure::refused(kind, message)
}

/// The producer's context: librdkafka's client-wide errors become [`Problems`]; its log lines
/// go to `tracing` at debug (the sink logs each outage once itself).
pub(super) struct Context(pub(super) std::sync::Arc<Problems>);

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(target: "librdkafka", ?level, facility = fac, "{message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !self.0.report(error.rdkafka_error_code(), reason) {
            tracing::debug!(error = %error, reason, "Kafka client error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_down_is_an_outage_and_a_refused_login_is_for_an_operator() {
        assert_eq!(
            client_problem(Some(RDKafkaErrorCode::AllBrokersDown)),
            Some(("brokers down", Verdict::Retry))
        );
        for code in [
            RDKafkaErrorCode::Authentication,
            RDKafkaErrorCode::SaslAuthenticationFailed,
        ] {
            assert_eq!(
                client_problem(Some(code)),
                Some(("login refused", Verdict::Refused))
            );
        }
        assert_eq!(
            client_problem(Some(RDKafkaErrorCode::BrokerTransportFailure)),
            None
        );
        assert_eq!(client_problem(None), None);
    }

    #[test]
    fn what_an_operator_must_fix_is_refused_the_rest_retried() {
        use RDKafkaErrorCode as C;
        for (code, expected) in [
            (C::UnknownTopicOrPartition, Refusal::UnknownTopic),
            (C::UnknownTopic, Refusal::UnknownTopic),
            (C::TopicAuthorizationFailed, Refusal::NotAuthorized),
            (C::ClusterAuthorizationFailed, Refusal::NotAuthorized),
            (C::MessageSizeTooLarge, Refusal::TooLarge),
            (C::InvalidRecord, Refusal::TooLarge),
            (C::InvalidMessageSize, Refusal::TooLarge),
            (C::Authentication, Refusal::LoginRefused),
            (C::SaslAuthenticationFailed, Refusal::LoginRefused),
        ] {
            assert_eq!(refusal(Some(code)), Some(expected), "{code:?}");
        }
        for code in [
            C::RequestTimedOut,
            C::NotLeaderForPartition,
            C::NotEnoughReplicas,
            C::BrokerTransportFailure,
            C::QueueFull,
        ] {
            assert_eq!(refusal(Some(code)), None, "{code:?}");
        }
        assert_eq!(refusal(None), None);
    }

    #[test]
    fn a_refused_login_is_not_hidden_by_the_brokers_going_down_after_it() {
        let problems = Problems::new(Some("alice".into()), "k:9092".into());
        assert!(problems.report(Some(RDKafkaErrorCode::Authentication), "bad password"));
        assert!(problems.report(Some(RDKafkaErrorCode::AllBrokersDown), "down"));
        let problem = problems.get().unwrap();
        assert_eq!(problem.kind, "login refused");
        assert!(
            problem.message.contains("of user alice"),
            "{}",
            problem.message
        );
        assert!(
            problems
                .since(Instant::now(), Duration::from_secs(60))
                .is_none()
        );
        assert!(matches!(
            problems.since(Instant::now(), Duration::ZERO),
            Some(Failure::Refused { .. })
        ));
        problems.clear();
        assert!(problems.get().is_none());
    }

    #[test]
    fn record_errors_name_the_fix() {
        let error = KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopicOrPartition);
        let failure = classify(&error, 10, "evs", "k:9092");
        assert!(matches!(failure, Failure::Refused { .. }));
        assert!(
            failure
                .message()
                .contains("kafka-topics.sh --create --topic evs")
        );
        let error = KafkaError::MessageProduction(RDKafkaErrorCode::RequestTimedOut);
        assert!(matches!(
            classify(&error, 10, "evs", "k:9092"),
            Failure::Retry { .. }
        ));
    }
}
