//! How a sink sorts a failed write: retried with backoff, or refused until an operator fixes
//! something. Each sink writes its rule as a named value or function beside its code
//! (`otlp::RETRIED`, `webhook::RETRIED`, `s3::upload::verdict`, `kafka::problems`), each with
//! its own tests; the retry policy then acts on the [`Failure`](super::Failure) built from it.

/// What a failed write calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transient (an outage, throttling): retried with capped exponential backoff.
    Retry,
    /// The peer refuses it until an operator fixes a credential, a policy or the data: the
    /// dead-letter directory takes the batch, or it is retried on the slow timer.
    Refused,
}

/// Which HTTP statuses a sink retries; every other status that is not a success is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpStatuses {
    /// Statuses retried whatever `server_errors` says.
    pub retried: &'static [u16],
    /// Whether every 5xx is retried too.
    pub server_errors: bool,
}

impl HttpStatuses {
    /// The verdict on a status that is not a success.
    pub fn verdict(&self, status: u16) -> Verdict {
        let server_error = (500..600).contains(&status);
        if self.retried.contains(&status) || (self.server_errors && server_error) {
            Verdict::Retry
        } else {
            Verdict::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_statuses_and_server_errors_are_retried_when_asked() {
        let only_listed = HttpStatuses {
            retried: &[429],
            server_errors: false,
        };
        assert_eq!(only_listed.verdict(429), Verdict::Retry);
        assert_eq!(only_listed.verdict(500), Verdict::Refused);
        let with_5xx = HttpStatuses {
            retried: &[],
            server_errors: true,
        };
        assert_eq!(with_5xx.verdict(500), Verdict::Retry);
        assert_eq!(with_5xx.verdict(599), Verdict::Retry);
        assert_eq!(with_5xx.verdict(600), Verdict::Refused);
        assert_eq!(with_5xx.verdict(404), Verdict::Refused);
    }
}
