//! Error text with its causes.

use std::error::Error;

/// `err` followed by each of its causes that its text does not already carry, joined by ": ".
/// Some errors (reqwest's among them) keep the root cause, such as "connection refused", only
/// in their source chain.
pub fn chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn layer(text: &'static str, source: Option<Layer>) -> Layer {
        Layer {
            text,
            source: source.map(Box::new),
        }
    }

    #[test]
    fn each_cause_is_appended_once_unless_the_text_already_says_it() {
        let root = layer("connection refused", None);
        let middle = layer("tcp connect error", Some(root));
        let top = layer("error sending request", Some(middle));
        assert_eq!(
            chain(&top),
            "error sending request: tcp connect error: connection refused"
        );
        let repeated = layer(
            "connect failed: connection refused",
            Some(layer("connection refused", None)),
        );
        assert_eq!(chain(&repeated), "connect failed: connection refused");
        assert_eq!(chain(&layer("alone", None)), "alone");
    }
}
