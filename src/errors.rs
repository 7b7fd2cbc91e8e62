//! An error and its causes on one line, for logs and for the exit message.
//!
//! Errors keep their cause as a `#[source]` rather than as text, so the whole chain is only
//! written out where it is shown. hyper's and kube's errors keep the useful part ("Connection
//! refused") two causes deep; many library errors also repeat their cause in their own message,
//! so a cause whose text is already on the line is not written twice.

use std::error::Error;

/// `e` followed by each of its causes not already named, joined by ": ".
pub fn error_chain(e: &(dyn Error + 'static)) -> String {
    let mut line = String::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        next = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        cause: Option<Box<Layer>>,
    }

    fn chain(texts: &[&'static str]) -> Layer {
        texts
            .iter()
            .rev()
            .fold(None, |cause, text| {
                Some(Layer {
                    text,
                    cause: cause.map(Box::new),
                })
            })
            .expect("at least one layer")
    }

    #[test]
    fn causes_are_joined_in_order() {
        let e = chain(&["cannot watch", "client error", "Connection refused"]);
        assert_eq!(
            error_chain(&e),
            "cannot watch: client error: Connection refused"
        );
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let e = chain(&["cannot open x: No such file", "No such file"]);
        assert_eq!(error_chain(&e), "cannot open x: No such file");
    }

    #[test]
    fn an_empty_message_adds_no_separator() {
        let e = chain(&["", "timed out"]);
        assert_eq!(error_chain(&e), "timed out");
    }
}
