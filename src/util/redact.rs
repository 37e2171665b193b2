//! Taking secrets out of text that is shown: the `user:password@` a URL may carry, and AGH claim
//! tokens.

/// `text` with the userinfo (`user:password@`) of every URL in it replaced by `[REDACTED]@`. A
/// URL pasted into a setting with credentials must not be printed, logged or served back.
pub fn without_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        let authority_start = scheme_end + 3;
        out.push_str(&rest[..authority_start]);
        rest = &rest[authority_start..];
        let authority_end = rest
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`') || c.is_whitespace()
            })
            .unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            out.push_str("[REDACTED]");
            rest = &rest[at..];
        }
    }
    out.push_str(rest);
    out
}

/// Replaces raw claim tokens (`agh_claim_` + base64url) by `agh_claim_[REDACTED]`.
pub fn redact_claim_tokens(text: &str) -> String {
    const PREFIX: &str = "agh_claim_";
    if !text.contains(PREFIX) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        out.push_str(&rest[..at]);
        out.push_str("agh_claim_[REDACTED]");
        let after = &rest[at + PREFIX.len()..];
        let token_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(after.len());
        rest = &after[token_len..];
        // `[REDACTED]` left by the daemon itself is not a token; skip it so it is not doubled.
        if let Some(stripped) = rest.strip_prefix("[REDACTED]") {
            rest = stripped;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_url_are_replaced_and_the_rest_is_kept() {
        assert_eq!(
            without_userinfo("http://op:s3cret@127.0.0.1:2123"),
            "http://[REDACTED]@127.0.0.1:2123"
        );
        assert_eq!(
            without_userinfo("https://user:pa@ss@hub.example.com/api?x=a@b"),
            "https://[REDACTED]@hub.example.com/api?x=a@b"
        );
        assert_eq!(
            without_userinfo("the Coder Hub at https://tok@hub.example.com cannot be reached"),
            "the Coder Hub at https://[REDACTED]@hub.example.com cannot be reached"
        );
        assert_eq!(
            without_userinfo("a http://a:b@x/ and https://c@y"),
            "a http://[REDACTED]@x/ and https://[REDACTED]@y"
        );
        for unchanged in [
            "http://127.0.0.1:2123",
            "unix:/run/agh/daemon.sock",
            "mail jane@example.com",
            "https://hub.example.com/users/@jane",
            "",
        ] {
            assert_eq!(without_userinfo(unchanged), unchanged);
        }
    }
}
