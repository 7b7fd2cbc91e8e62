//! The S3 client: the default AWS credential chain, rustls, and what S3-compatible stores need.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_s3::error::DisplayErrorContext;

use super::S3Error;
use super::config::S3Connection;

/// A connected S3 client for `connection`. No request is made here: credentials are resolved
/// (env, profile, web identity, instance metadata) at the first PUT.
pub async fn client(connection: &S3Connection) -> Client {
    // rustls with ring, as the kube client uses: no second crypto library to build.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(region) = &connection.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &connection.profile {
        loader = loader.profile_name(profile);
    }
    let shared = loader.load().await;
    let mut config = aws_sdk_s3::config::Builder::from(&shared)
        // The sink retries itself, forever and with its own logging; the SDK's three attempts
        // would only hide how long an outage lasts.
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(connection.timeout)
                .build(),
        )
        .force_path_style(connection.force_path_style);
    if shared.region().is_none() {
        config = config.region(Region::from_static("us-east-1"));
    }
    if let Some(endpoint) = &connection.endpoint {
        config = config
            .endpoint_url(endpoint)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    }
    Client::from_conf(config.build())
}

/// Reads one whole object, for `decode --s3`.
pub async fn get_object(
    connection: &S3Connection,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, S3Error> {
    let client = client(connection).await;
    let fail = |reason: String| S3Error::Get {
        url: format!("s3://{bucket}/{key}"),
        reason,
    };
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| fail(DisplayErrorContext(&e).to_string()))?;
    let body = out.body.collect().await.map_err(|e| fail(e.to_string()))?;
    Ok(body.into_bytes().to_vec())
}
