//! The S3 sink's settings, defaults and validation, and the connection settings `decode`
//! shares with it.

use std::time::Duration;

use crate::config::{ConfigError, DecodeArgs, Get, Origin, Raw, parse};
use crate::encode::object::ObjectFormat;

/// `--s3-timeout`: one upload attempt; a hung endpoint is logged and counted this soon.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Why `--sink s3` cannot be used without a bucket.
pub const MISSING: &str = "the s3 sink needs a bucket: set --s3-bucket, KUBE_EVENT_PIPE_S3_BUCKET or aws_bucket in the config file";

/// The storage classes S3 accepts on a PUT.
const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "GLACIER_IR",
    "DEEP_ARCHIVE",
    "EXPRESS_ONEZONE",
];

/// Server-side encryption asked of S3 for each object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// SSE-S3 (`AES256`).
    S3,
    /// SSE-KMS, with the account's default key when `key_id` is none.
    Kms { key_id: Option<String> },
}

/// How to reach S3 (shared by the sink and `decode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Connection {
    /// Default: the SDK's chain (AWS_REGION, the profile), else us-east-1.
    pub region: Option<String>,
    /// A shared-config profile; default: the SDK's (AWS_PROFILE, else `default`).
    pub profile: Option<String>,
    /// An S3-compatible store's URL; request checksums are then sent only when required, since
    /// many such stores reject the CRC32 checksums recent SDKs add.
    pub endpoint: Option<String>,
    /// `endpoint/bucket/key` instead of `bucket.endpoint/key`. Default false (AWS's style).
    pub force_path_style: bool,
    /// The longest one request attempt (a PUT with its body, and its answer) may take before it
    /// fails and is retried (default 30 s). An endpoint that accepts the connection and never
    /// answers pauses the pipe behind it; this bounds how long that goes unnoticed. Raise it
    /// for large batches over a slow link.
    pub timeout: Duration,
}

impl Default for S3Connection {
    fn default() -> Self {
        S3Connection {
            region: None,
            profile: None,
            endpoint: None,
            force_path_style: false,
            timeout: TIMEOUT,
        }
    }
}

/// The S3 options as given. Validated whether or not the sink is on, so that a k8stream config
/// file is accepted whole and a typo is caught before the sink is switched on; the startup line
/// shows them. The sink itself gets [`S3Settings`], which only exist with a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    /// The stream's id in object keys. Default: the kube-system namespace's UID when the kube
    /// source can read it, else a UUID kept in the persistence directory (`stream-uid`).
    pub uid: Option<String>,
    /// Leading key segment(s), without a trailing `/`. Default: none.
    pub prefix: Option<String>,
    pub bucket: Option<String>,
    pub connection: S3Connection,
    /// Default jsonl: the same lines the other sinks get, readable with zcat.
    pub format: ObjectFormat,
    pub storage_class: Option<String>,
    pub sse: Option<Sse>,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            uid: None,
            prefix: None,
            bucket: None,
            connection: S3Connection::default(),
            format: ObjectFormat::Jsonl,
            storage_class: None,
            sse: None,
        }
    }
}

/// The S3 sink's settings: the options of a sink that has its bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// See [`S3Options::uid`].
    pub uid: Option<String>,
    pub prefix: Option<String>,
    pub connection: S3Connection,
    pub format: ObjectFormat,
    pub storage_class: Option<String>,
    pub sse: Option<Sse>,
}

impl S3Options {
    /// The sink's settings; `None` without a bucket.
    pub fn settings(&self) -> Option<S3Settings> {
        Some(S3Settings {
            bucket: self.bucket.clone()?,
            uid: self.uid.clone(),
            prefix: self.prefix.clone(),
            connection: self.connection.clone(),
            format: self.format,
            storage_class: self.storage_class.clone(),
            sse: self.sse.clone(),
        })
    }
}

/// Validates the S3 options.
pub(crate) fn options(get: &Get<'_>) -> Result<S3Options, ConfigError> {
    // In this order, so that of several bad values the same one is reported as always.
    let sse = sse(get)?;
    let prefix = prefix(get("prefix", &["prefix", "s3_prefix"]))?;
    Ok(S3Options {
        uid: get("uid", &["uid"]).map(|r| r.parse(uid)).transpose()?,
        prefix,
        bucket: get("aws_bucket", &["aws_bucket", "s3_bucket"])
            .map(|r| r.parse(bucket))
            .transpose()?,
        connection: connection(get)?,
        format: match get("s3_format", &["s3_format"]) {
            Some(raw) => match raw.parse(|v| parse::one_of(v, &["jsonl", "protobuf"]))? {
                "protobuf" => ObjectFormat::Protobuf,
                _ => ObjectFormat::Jsonl,
            },
            None => ObjectFormat::Jsonl,
        },
        storage_class: get("s3_storage_class", &["s3_storage_class"])
            .map(|r| r.parse(|v| parse::one_of(v, STORAGE_CLASSES).map(str::to_string)))
            .transpose()?,
        sse,
    })
}

/// `--s3-sse` and `--s3-sse-kms-key-id`: a key id only with aws:kms.
fn sse(get: &Get<'_>) -> Result<Option<Sse>, ConfigError> {
    let sse = match get("s3_sse", &["s3_sse"]) {
        Some(raw) => Some(
            match raw.parse(|v| parse::one_of(v, &["AES256", "aws:kms"]))? {
                "AES256" => Sse::S3,
                _ => Sse::Kms { key_id: None },
            },
        ),
        None => None,
    };
    Ok(
        match (sse, get("s3_sse_kms_key_id", &["s3_sse_kms_key_id"])) {
            (Some(Sse::Kms { .. }), Some(raw)) if !raw.value.trim().is_empty() => Some(Sse::Kms {
                key_id: Some(raw.value.trim().to_string()),
            }),
            (_, Some(raw)) => return Err(raw.invalid("needs --s3-sse aws:kms")),
            (sse, None) => sse,
        },
    )
}

/// The key prefix without its slashes; none when only slashes are given.
fn prefix(raw: Option<Raw>) -> Result<Option<String>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let trimmed = raw.value.trim_matches('/');
    if trimmed.chars().any(char::is_control) || trimmed.split('/').any(|s| s == "..") {
        return Err(raw.invalid("must be a key prefix without control characters or .."));
    }
    Ok((!trimmed.is_empty()).then(|| trimmed.to_string()))
}

fn connection(get: &Get<'_>) -> Result<S3Connection, ConfigError> {
    Ok(S3Connection {
        region: get("aws_region", &["aws_region"])
            .map(|r| r.parse(region))
            .transpose()?,
        profile: get("aws_profile", &["aws_profile"]).map(|r| r.value),
        endpoint: get("s3_endpoint", &["s3_endpoint"])
            .map(|r| r.parse(endpoint))
            .transpose()?,
        force_path_style: match get("s3_force_path_style", &["s3_force_path_style"]) {
            Some(raw) => raw.parse(parse::boolean)?,
            None => false,
        },
        timeout: match get("s3_timeout", &["s3_timeout"]) {
            Some(raw) => raw.parse(|v| parse::seconds(v, 0.1, 3600.0))?,
            None => TIMEOUT,
        },
    })
}

/// Validates the S3 options of `decode`, with the same rules and messages as the run options.
pub fn decode_connection(args: &DecodeArgs) -> Result<S3Connection, ConfigError> {
    let flag = |name: &str, value: &str| Raw {
        name: format!("--{name}"),
        value: value.to_string(),
        origin: Origin::Flag,
    };
    Ok(S3Connection {
        region: args
            .aws_region
            .as_deref()
            .map(|v| flag("aws-region", v).parse(region))
            .transpose()?,
        profile: args.aws_profile.clone(),
        endpoint: args
            .s3_endpoint
            .as_deref()
            .map(|v| flag("s3-endpoint", v).parse(endpoint))
            .transpose()?,
        force_path_style: match args.s3_force_path_style.as_deref() {
            Some(v) => flag("s3-force-path-style", v).parse(parse::boolean)?,
            None => false,
        },
        timeout: TIMEOUT,
    })
}

fn uid(v: &str) -> Result<String, String> {
    if !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && v != "."
        && v != ".."
    {
        Ok(v.to_string())
    } else {
        Err("must be 1 to 128 characters of letters, digits, '-', '_' or '.'".into())
    }
}

/// An S3 bucket name by the AWS naming rules (length and characters).
fn bucket(v: &str) -> Result<String, String> {
    let ok = (3..=63).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
        && v.as_bytes()[0].is_ascii_alphanumeric()
        && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(v.to_string())
    } else {
        Err("must be a bucket name: 3 to 63 lower-case letters, digits, '-' or '.'".into())
    }
}

/// An AWS region name (`eu-west-1`), or a store's own (`auto`, `garage`): lower-case letters,
/// digits and '-', starting with a letter.
fn region(v: &str) -> Result<String, String> {
    let ok = (1..=32).contains(&v.len())
        && v.as_bytes()[0].is_ascii_lowercase()
        && !v.ends_with('-')
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(v.to_string())
    } else {
        Err("must be a region name such as eu-west-1 (lower-case letters, digits and '-')".into())
    }
}

/// An endpoint URL: http or https, a host, nothing after the authority but an optional `/`.
fn endpoint(v: &str) -> Result<String, String> {
    let requirement =
        || "must be an http:// or https:// URL such as http://127.0.0.1:9000".to_string();
    let uri: http::Uri = v.parse().map_err(|_| requirement())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri.host().is_some_and(|h| !h.is_empty());
    let path_ok = matches!(uri.path(), "" | "/") && uri.query().is_none();
    if scheme_ok && host_ok && path_ok {
        Ok(v.trim_end_matches('/').to_string())
    } else {
        Err(requirement())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_become_key_segments_are_safe() {
        assert!(uid("prod-eu-1").is_ok());
        assert!(uid("../x").is_err());
        assert!(bucket("my-events").is_ok());
        assert!(bucket("My_Bucket").is_err());
        assert!(bucket("ab").is_err());
    }

    #[test]
    fn regions_and_endpoints_are_checked() {
        assert!(region("eu-west-1").is_ok());
        assert!(region("auto").is_ok());
        for bad in ["EU-WEST-1", "eu_west_1", "1eu", "eu-", ""] {
            assert!(region(bad).is_err(), "{bad}");
        }
        assert_eq!(
            endpoint("http://127.0.0.1:9000/").unwrap(),
            "http://127.0.0.1:9000"
        );
        assert!(endpoint("https://s3.example.com").is_ok());
        for bad in [
            "127.0.0.1:9000",
            "ftp://x",
            "http://",
            "http://h/path",
            "not a url",
        ] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }
}
