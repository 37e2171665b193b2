//! Request signing for the webhook handler: the HMAC key, read from `secret` or `secret_file`,
//! and the `X-AGH-Worker-Signature` it puts on each body. The key never shows in `Debug`.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::HeaderValue;
use sha2::Sha256;

use super::{WebhookConfig, WebhookError};

type HmacSha256 = Hmac<Sha256>;

impl WebhookConfig {
    /// The signing key, from `secret` or the file; `None` when requests are not signed.
    pub(super) fn signing_key(
        &self,
        credentials_dir: Option<&Path>,
    ) -> Result<Option<SigningKey>, WebhookError> {
        match (&self.secret, self.secret_file_path(credentials_dir)) {
            (Some(_), Some(_)) => Err(WebhookError::BothSecrets),
            (Some(secret), None) if secret.is_empty() => Err(WebhookError::EmptySecret),
            (Some(secret), None) => Ok(Some(SigningKey(secret.as_bytes().to_vec()))),
            (None, Some(path)) => {
                let mut bytes =
                    std::fs::read(&path).map_err(|source| WebhookError::SecretFile {
                        path: path.clone(),
                        source,
                    })?;
                // Files written by `echo` or an editor end with a newline that is not part of the key.
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                if bytes.is_empty() {
                    return Err(WebhookError::EmptySecretFile { path });
                }
                Ok(Some(SigningKey(bytes)))
            }
            (None, None) => Ok(None),
        }
    }
}

/// The HMAC key; its `Debug` never shows it.
#[derive(Clone)]
pub(super) struct SigningKey(Vec<u8>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// `sha256=<hex>` over exactly these bytes.
    pub(super) fn sign(&self, body: &[u8]) -> Option<HeaderValue> {
        // HMAC accepts keys of any length, so this cannot fail; no panic either way.
        let mut mac = HmacSha256::new_from_slice(&self.0).ok()?;
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        HeaderValue::from_str(&format!("sha256={}", hex(&digest))).ok()
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_lowercase_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let key = SigningKey(b"Jefe".to_vec());
        let signature = key.sign(b"what do ya want for nothing?");
        assert_eq!(
            signature.as_ref().and_then(|v| v.to_str().ok()),
            Some("sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }
}
