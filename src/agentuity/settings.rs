//! How to reach Agentuity: the settings shared by the handler config and the operator commands,
//! the environment they fall back to, and the checks every configured URL goes through.
//!
//! Environment values come in through an [`Env`] map so that tests never depend on the process
//! environment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::error::AgentuityError;

/// Environment variables the client reads (through an [`Env`] map).
pub(super) const SDK_KEY_VAR: &str = "AGENTUITY_SDK_KEY";
pub(super) const CLI_KEY_VAR: &str = "AGENTUITY_CLI_KEY";
pub(super) const CODER_URL_VAR: &str = "AGENTUITY_CODER_URL";
pub(super) const REGION_VAR: &str = "AGENTUITY_REGION";
pub(super) const CATALYST_URL_VAR: &str = "AGENTUITY_CATALYST_URL";
pub(super) const TRANSPORT_URL_VAR: &str = "AGENTUITY_TRANSPORT_URL";
pub(super) const API_URL_VAR: &str = "AGENTUITY_API_URL";
/// systemd's `LoadCredential=` directory; a relative `key_file` is resolved against it.
pub(super) const CREDENTIALS_DIRECTORY_VAR: &str = "CREDENTIALS_DIRECTORY";

/// The region used when neither the config nor `AGENTUITY_REGION` names one.
pub(super) const DEFAULT_REGION: &str = "usc";

/// Environment values, by name. Build it with [`process_env`] in the daemon, by hand in tests.
pub type Env = BTreeMap<String, String>;

/// The variables of this process the client may read.
pub fn process_env() -> Env {
    std::env::vars()
        .filter(|(name, _)| name.starts_with("AGENTUITY_") || name == CREDENTIALS_DIRECTORY_VAR)
        .collect()
}

/// How to reach Agentuity (shared by the handler config and the operator commands).
#[derive(Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSettings {
    /// The API key. Never printed. Prefer `key_file` or `AGENTUITY_SDK_KEY`.
    pub key: Option<String>,
    /// A file holding the key; relative paths are resolved against `$CREDENTIALS_DIRECTORY`.
    pub key_file: Option<PathBuf>,
    /// Sent as `x-agentuity-orgid` when set.
    pub org_id: Option<String>,
    /// The Catalyst region (`usc`, `usw`, …; `local`); else `AGENTUITY_REGION`, else `usc`.
    pub region: Option<String>,
    /// The Coder Hub base URL; else `AGENTUITY_CODER_URL`, else discovery. `http://` is accepted
    /// here (tests, local proxies).
    pub hub_url: Option<String>,
    /// The Catalyst base URL; else `AGENTUITY_CATALYST_URL`/`AGENTUITY_TRANSPORT_URL`, else the region's.
    pub catalyst_url: Option<String>,
    /// The App API base URL (session logs); else `AGENTUITY_API_URL`, else `https://api.agentuity.com`.
    pub api_url: Option<String>,
    /// Longest wait for one HTTP answer, in seconds (0 = 30).
    pub request_timeout_seconds: u64,
}

/// Written by hand so the key never reaches a log line through `{:?}`.
impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("key_file", &self.key_file)
            .field("org_id", &self.org_id)
            .field("region", &self.region)
            .field("hub_url", &shown_url(self.hub_url.as_deref()))
            .field("catalyst_url", &shown_url(self.catalyst_url.as_deref()))
            .field("api_url", &shown_url(self.api_url.as_deref()))
            .field("request_timeout_seconds", &self.request_timeout_seconds)
            .finish()
    }
}

/// A configured URL as `Debug` shows it: credentials written into it are not shown.
fn shown_url(url: Option<&str>) -> Option<String> {
    url.map(crate::util::redact::without_userinfo)
}

impl ClientSettings {
    /// Problems a config check can report, each a sentence naming `path` keys.
    pub fn problems(&self, path: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.key.is_some() && self.key_file.is_some() {
            problems.push(format!("{path}.key and key_file are both set: keep one"));
        }
        if self.key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            problems.push(format!("{path}.key is empty: set it or remove it"));
        }
        for (name, value) in [
            ("hub_url", &self.hub_url),
            ("catalyst_url", &self.catalyst_url),
            ("api_url", &self.api_url),
        ] {
            if let Some(value) = value
                && let Err(err) = normalize_url(name, value)
            {
                problems.push(format!("{path}.{err}"));
            }
        }
        problems
    }

    /// The key: `key`, else `key_file`, else `AGENTUITY_SDK_KEY`, else `AGENTUITY_CLI_KEY`.
    pub fn resolve_key(&self, env: &Env) -> Result<String, AgentuityError> {
        match (&self.key, &self.key_file) {
            (Some(_), Some(_)) => Err(AgentuityError::BothKeys),
            (Some(key), None) if !key.trim().is_empty() => Ok(key.trim().to_string()),
            (Some(_), None) => Err(AgentuityError::MissingKey),
            (None, Some(file)) => {
                let path = resolve_credential(file, env);
                let text =
                    std::fs::read_to_string(&path).map_err(|source| AgentuityError::KeyFile {
                        path: path.clone(),
                        source,
                    })?;
                let key = text.trim();
                if key.is_empty() {
                    return Err(AgentuityError::EmptyKeyFile { path });
                }
                Ok(key.to_string())
            }
            (None, None) => env
                .get(SDK_KEY_VAR)
                .or_else(|| env.get(CLI_KEY_VAR))
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .ok_or(AgentuityError::MissingKey),
        }
    }

    /// The region in force.
    pub fn region(&self, env: &Env) -> String {
        self.region
            .clone()
            .or_else(|| env.get(REGION_VAR).cloned())
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| DEFAULT_REGION.to_string())
    }

    /// The Hub URL named by `hub_url`, else `AGENTUITY_CODER_URL`; `None`: discover it.
    pub(super) fn resolve_hub_url(&self, env: &Env) -> Result<Option<String>, AgentuityError> {
        match &self.hub_url {
            Some(url) => normalize_url("hub_url", url).map(Some),
            None => match env.get(CODER_URL_VAR).filter(|u| !u.trim().is_empty()) {
                Some(url) => normalize_url(CODER_URL_VAR, url).map(Some),
                None => Ok(None),
            },
        }
    }

    /// `catalyst_url`, else `AGENTUITY_CATALYST_URL`, else `AGENTUITY_TRANSPORT_URL`, else the
    /// region's Catalyst.
    pub(super) fn resolve_catalyst_url(&self, env: &Env) -> Result<String, AgentuityError> {
        let named = first_set([
            ("catalyst_url", self.catalyst_url.as_ref()),
            (CATALYST_URL_VAR, env.get(CATALYST_URL_VAR)),
            (TRANSPORT_URL_VAR, env.get(TRANSPORT_URL_VAR)),
        ])?;
        Ok(named.unwrap_or_else(|| catalyst_url_for_region(&self.region(env))))
    }

    /// `api_url`, else `AGENTUITY_API_URL`, else the App API of the region (local or public).
    pub(super) fn resolve_api_url(&self, env: &Env) -> Result<String, AgentuityError> {
        let named = first_set([
            ("api_url", self.api_url.as_ref()),
            (API_URL_VAR, env.get(API_URL_VAR)),
        ])?;
        Ok(named.unwrap_or_else(|| match self.region(env).as_str() {
            "local" | "l" => "https://api.agentuity.io".to_string(),
            _ => "https://api.agentuity.com".to_string(),
        }))
    }
}

/// The first of `candidates` that is set, checked; `None` when none is, or when the one set is
/// blank (a blank value asks for the default, it does not fall through to the next candidate).
fn first_set<const N: usize>(
    candidates: [(&'static str, Option<&String>); N],
) -> Result<Option<String>, AgentuityError> {
    match candidates
        .into_iter()
        .find_map(|(name, value)| value.map(|value| (name, value)))
    {
        Some((name, value)) if !value.trim().is_empty() => normalize_url(name, value).map(Some),
        _ => Ok(None),
    }
}

fn resolve_credential(file: &Path, env: &Env) -> PathBuf {
    match env.get(CREDENTIALS_DIRECTORY_VAR) {
        Some(dir) if file.is_relative() => Path::new(dir).join(file),
        _ => file.to_path_buf(),
    }
}

/// The Catalyst URL of a region (SDK `buildRegionalURL`).
pub(super) fn catalyst_url_for_region(region: &str) -> String {
    match region {
        "local" | "l" => "https://catalyst.agentuity.io".to_string(),
        region => format!("https://catalyst-{region}.agentuity.cloud"),
    }
}

/// A URL checked for a scheme and host, without its trailing `/`.
pub(super) fn normalize_url(what: &'static str, value: &str) -> Result<String, AgentuityError> {
    let bad = |why: &str| AgentuityError::BadUrl {
        what,
        // The value is echoed to say which one is wrong, but never with credentials in it.
        value: crate::util::redact::without_userinfo(value),
        why: why.to_string(),
    };
    let url = Url::parse(value.trim()).map_err(|err| bad(&format!("is not a URL: {err}")))?;
    // reqwest would send them as basic auth beside the key, to whoever the URL names.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not carry credentials (user:password@): the key goes in key, key_file or AGENTUITY_SDK_KEY",
        ));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(
            "must start with https:// (or http:// for a local proxy)",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if url.query().is_some() {
        return Err(bad("must not have a query string"));
    }
    Ok(value.trim().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_map_to_catalyst_hosts() {
        assert_eq!(
            catalyst_url_for_region("usc"),
            "https://catalyst-usc.agentuity.cloud"
        );
        assert_eq!(
            catalyst_url_for_region("local"),
            "https://catalyst.agentuity.io"
        );
        let env: Env = [(REGION_VAR.to_string(), "usw".to_string())].into();
        assert_eq!(ClientSettings::default().region(&env), "usw");
        assert_eq!(
            ClientSettings::default().region(&Env::new()),
            DEFAULT_REGION
        );
    }

    #[test]
    fn a_relative_key_file_is_read_from_the_credentials_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("agentuity.key"), "ag_from_file\n").expect("write");
        let env: Env = [(
            CREDENTIALS_DIRECTORY_VAR.to_string(),
            dir.path().display().to_string(),
        )]
        .into();
        let settings = ClientSettings {
            key_file: Some("agentuity.key".into()),
            ..Default::default()
        };
        assert_eq!(settings.resolve_key(&env).expect("key"), "ag_from_file");
        let both = ClientSettings {
            key: Some("k".into()),
            key_file: Some("agentuity.key".into()),
            ..Default::default()
        };
        assert!(matches!(
            both.resolve_key(&env),
            Err(AgentuityError::BothKeys)
        ));
        assert_eq!(both.problems("c").len(), 1);
    }

    #[test]
    fn the_first_url_set_wins_and_a_blank_one_asks_for_the_default() {
        let env: Env = [
            (CATALYST_URL_VAR.to_string(), " ".to_string()),
            (
                TRANSPORT_URL_VAR.to_string(),
                "https://transport.test/".to_string(),
            ),
            (API_URL_VAR.to_string(), "https://api.test/".to_string()),
        ]
        .into();
        let settings = ClientSettings::default();
        assert_eq!(
            settings.resolve_catalyst_url(&env).expect("catalyst"),
            catalyst_url_for_region(DEFAULT_REGION)
        );
        assert_eq!(
            settings.resolve_api_url(&env).expect("api"),
            "https://api.test"
        );
        let local = ClientSettings {
            region: Some("local".into()),
            catalyst_url: Some("https://mine.test".into()),
            ..Default::default()
        };
        assert_eq!(
            local.resolve_catalyst_url(&env).expect("catalyst"),
            "https://mine.test"
        );
        assert_eq!(
            local.resolve_api_url(&Env::new()).expect("api"),
            "https://api.agentuity.io"
        );
        assert_eq!(local.resolve_hub_url(&Env::new()).expect("hub"), None);
    }
}
