//! The Kafka sink's settings: what the user writes, validated without touching the network or
//! reading a file (the password file is read when the sink opens).

use std::fmt;
use std::path::PathBuf;

use crate::config::{ConfigError, Get, parse};

/// `--kafka-topic`.
pub const TOPIC: &str = "kube-events";
/// `--kafka-compression`: of lz4 and zstd, lz4 cost less CPU per event on replayed events
/// (docs/performance.md#kafka-sink); gzip cost almost twice as much.
pub const COMPRESSION: &str = "lz4";

/// Why `--sink kafka` cannot be used without brokers.
pub const MISSING: &str = "the kafka sink needs --kafka-brokers HOST:PORT (or KUBE_EVENT_PIPE_KAFKA_BROKERS, or kafka_brokers in the config file)";

/// The environment variable that may hold the SASL password (there is no flag: a flag's value
/// shows in `ps` and in the pod spec).
pub const PASSWORD_ENV: &str = "KUBE_EVENT_PIPE_KAFKA_SASL_PASSWORD";

/// Producer settings that carry the delivery guarantee; `--kafka-property` may not change them.
const FIXED_PROPERTIES: &[&str] = &[
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "bootstrap.servers",
    "metadata.broker.list",
];

/// Record batch compression; the default is [`COMPRESSION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codecs by name, as `--kafka-compression` takes them.
    const NAMES: &[&str] = &["none", "gzip", "snappy", "lz4", "zstd"];

    fn from_name(name: &str) -> Compression {
        match name {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "zstd" => Compression::Zstd,
            _ => Compression::Lz4,
        }
    }

    /// The name librdkafka's `compression.codec` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// SASL mechanisms the sink offers. GSSAPI (Kerberos) and OAUTHBEARER are not built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// A secret value: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::config::REDACTED)
    }
}

/// Where the SASL password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// A file (a mounted Secret), read when the sink opens; one trailing newline is dropped.
    File(PathBuf),
    /// [`PASSWORD_ENV`].
    Env(Secret),
}

/// SASL login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: Password,
}

/// TLS to the brokers. With no CA file the system's trust store is used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for brokers that authenticate clients by certificate.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The Kafka sink's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// Bootstrap brokers, `host:port` each.
    pub brokers: Vec<String>,
    /// Default [`TOPIC`].
    pub topic: String,
    /// Default [`COMPRESSION`].
    pub compression: Compression,
    /// Off unless `--kafka-tls` or a TLS file is given.
    pub tls: Option<Tls>,
    pub sasl: Option<Sasl>,
    /// Any other librdkafka producer property, applied after ours.
    pub properties: Vec<(String, String)>,
}

impl KafkaSettings {
    /// librdkafka's `security.protocol` for these settings.
    pub fn security_protocol(&self) -> &'static str {
        match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        }
    }
}

/// Validates the Kafka options; `None` when no broker is given (the sink is not configured).
pub(crate) fn settings(
    get: &Get<'_>,
    password_env: Option<String>,
) -> Result<Option<KafkaSettings>, ConfigError> {
    let Some(brokers_raw) = get("kafka_brokers", &["kafka_brokers"]) else {
        return Ok(None);
    };
    let brokers = brokers_raw.parse(brokers)?;
    let topic = match get("kafka_topic", &["kafka_topic"]) {
        Some(raw) => raw.parse(topic)?,
        None => TOPIC.to_string(),
    };
    let compression = match get("kafka_compression", &["kafka_compression"]) {
        Some(raw) => Compression::from_name(raw.parse(|v| parse::one_of(v, Compression::NAMES))?),
        None => Compression::from_name(COMPRESSION),
    };
    let tls = tls(get)?;
    let sasl = sasl(get, password_env)?;
    let properties = match get("kafka_property", &["kafka_property", "kafka_properties"]) {
        Some(raw) => raw.parse(properties)?,
        None => Vec::new(),
    };
    Ok(Some(KafkaSettings {
        brokers,
        topic,
        compression,
        tls,
        sasl,
        properties,
    }))
}

/// An optional file path option: given, it must not be blank.
fn path(get: &Get<'_>, id: &str) -> Result<Option<PathBuf>, ConfigError> {
    match get(id, &[id]) {
        Some(raw) if raw.value.trim().is_empty() => Err(raw.invalid("must be a file path")),
        Some(raw) => Ok(Some(PathBuf::from(raw.value))),
        None => Ok(None),
    }
}

/// TLS is on when asked for or when any of its files is given, and cannot be turned off
/// while one is.
fn tls(get: &Get<'_>) -> Result<Option<Tls>, ConfigError> {
    let files = Tls {
        ca: path(get, "kafka_tls_ca")?,
        cert: path(get, "kafka_tls_cert")?,
        key: path(get, "kafka_tls_key")?,
    };
    if files.cert.is_some() != files.key.is_some() {
        return Err(ConfigError::Conflict(
            "--kafka-tls-cert and --kafka-tls-key go together: give both (a client certificate and its key) or neither".into(),
        ));
    }
    let any_file = files != Tls::default();
    let on = match get("kafka_tls", &["kafka_tls"]) {
        Some(raw) => {
            let on = raw.parse(parse::boolean)?;
            if !on && any_file {
                return Err(raw.invalid(
                    "cannot be false while a --kafka-tls-* file is given; remove the file settings or the false",
                ));
            }
            on
        }
        None => any_file,
    };
    Ok(on.then_some(files))
}

/// SASL needs a mechanism, a user name and a password (a file, else the environment), or
/// none of them.
fn sasl(get: &Get<'_>, password_env: Option<String>) -> Result<Option<Sasl>, ConfigError> {
    let mechanism = match get("kafka_sasl_mechanism", &["kafka_sasl_mechanism"]) {
        Some(raw) => Some(
            match raw.parse(|v| parse::one_of(v, &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]))? {
                "PLAIN" => SaslMechanism::Plain,
                "SCRAM-SHA-256" => SaslMechanism::ScramSha256,
                _ => SaslMechanism::ScramSha512,
            },
        ),
        None => None,
    };
    let username = get("kafka_sasl_username", &["kafka_sasl_username"]);
    let password_file = path(get, "kafka_sasl_password_file")?;
    match (mechanism, username) {
        (None, None) if password_file.is_none() => Ok(None),
        (Some(mechanism), Some(user)) => {
            if user.value.is_empty() || user.value.chars().any(char::is_control) {
                return Err(user.invalid("must be a non-empty name without control characters"));
            }
            let password = match (password_file, password_env) {
                (Some(file), _) => Password::File(file),
                (None, Some(value)) => Password::Env(Secret(value)),
                (None, None) => {
                    return Err(ConfigError::Conflict(format!(
                        "SASL needs a password: set --kafka-sasl-password-file FILE (or kafka_sasl_password_file in the config file) or the environment variable {PASSWORD_ENV}"
                    )));
                }
            };
            Ok(Some(Sasl {
                mechanism,
                username: user.value,
                password,
            }))
        }
        _ => Err(ConfigError::Conflict(
            "SASL needs both --kafka-sasl-mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512) and --kafka-sasl-username".into(),
        )),
    }
}

/// `host:port[,host:port…]`.
fn brokers(v: &str) -> Result<Vec<String>, String> {
    let requirement =
        "must be a comma-separated list of HOST:PORT, e.g. kafka-0.kafka:9092,kafka-1.kafka:9092";
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let valid = part.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && !host.chars().any(|c| c.is_whitespace() || c == '/')
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            return Err(format!("{part:?} is not HOST:PORT; {requirement}"));
        }
        out.push(part.to_string());
    }
    if out.is_empty() {
        return Err(requirement.into());
    }
    Ok(out)
}

/// Kafka's topic name rule: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn topic(v: &str) -> Result<String, String> {
    let valid = !v.is_empty()
        && v.len() <= 249
        && v != "."
        && v != ".."
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if valid {
        Ok(v.to_string())
    } else {
        Err("must be a Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-'".into())
    }
}

/// `KEY=VALUE` pairs. Repeated flags arrive joined with commas, and a value may hold commas
/// itself (`ssl.cipher.suites=A,B`): a piece without `=` continues the previous value.
fn properties(v: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for piece in v.split(',') {
        match piece.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                let key = key.trim().to_string();
                if FIXED_PROPERTIES.contains(&key.as_str()) {
                    return Err(format!(
                        "sets {key}, which the sink fixes (idempotent producer, acks=all, --kafka-brokers); remove it"
                    ));
                }
                out.push((key, value.trim().to_string()));
            }
            _ => match out.last_mut() {
                Some((_, value)) => {
                    value.push(',');
                    value.push_str(piece);
                }
                None => {
                    return Err(
                        "must be KEY=VALUE (a librdkafka producer property, e.g. linger.ms=20)"
                            .into(),
                    );
                }
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_are_host_port_lists() {
        assert_eq!(
            brokers("a:9092, b.example:9093").unwrap(),
            vec!["a:9092".to_string(), "b.example:9093".to_string()]
        );
        assert_eq!(
            brokers("[::1]:9092").unwrap(),
            vec!["[::1]:9092".to_string()]
        );
        for bad in ["", "a", "a:", ":9092", "a:0", "a:99999", "kafka://a:9092"] {
            assert!(brokers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topics_follow_kafkas_rule() {
        assert!(topic("kube-events").is_ok());
        assert!(topic("a.b_c-1").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", &"x".repeat(250)] {
            assert!(topic(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn properties_keep_commas_in_values_and_refuse_the_guarantees() {
        assert_eq!(
            properties("linger.ms=20,ssl.cipher.suites=A,B,client.id=x").unwrap(),
            vec![
                ("linger.ms".to_string(), "20".to_string()),
                ("ssl.cipher.suites".to_string(), "A,B".to_string()),
                ("client.id".to_string(), "x".to_string()),
            ]
        );
        assert!(properties("linger.ms").is_err());
        assert!(
            properties("acks=1")
                .unwrap_err()
                .contains("which the sink fixes")
        );
        assert!(properties("enable.idempotence=false").is_err());
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let p = Password::Env(Secret("hunter2".into()));
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
