//! Where the AGH daemon is reached and who the worker says it is.

use std::fmt;
use std::path::PathBuf;

/// How the AGH API is reached: HTTP over a Unix socket or over loopback TCP.
#[derive(Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:/path/to/daemon.sock`
    Unix(PathBuf),
    /// `http://127.0.0.1:2123` (base URL without a trailing slash)
    Http(String),
}

/// Why an endpoint string could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointParseError {
    #[error("endpoint is empty: use unix:/path/to/daemon.sock or http://127.0.0.1:2123")]
    Empty,
    #[error(
        "endpoint {0:?} has an unsupported form: use unix:/path/to/daemon.sock or http://127.0.0.1:2123 (https is not served by AGH)"
    )]
    Unsupported(String),
    #[error("endpoint {0:?} has no socket path after unix:")]
    EmptySocketPath(String),
    #[error("endpoint {0:?} has no host after http://")]
    EmptyHost(String),
}

impl Endpoint {
    /// Parses `unix:/path`, `unix:///path` or `http://host:port[/]`.
    pub fn parse(raw: &str) -> Result<Self, EndpointParseError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(EndpointParseError::Empty);
        }
        if let Some(rest) = trimmed.strip_prefix("unix:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(EndpointParseError::EmptySocketPath(raw.to_string()));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = trimmed.strip_prefix("http://") {
            let host = rest.trim_end_matches('/');
            if host.is_empty() || host.starts_with(':') {
                return Err(EndpointParseError::EmptyHost(raw.to_string()));
            }
            return Ok(Endpoint::Http(format!("http://{host}")));
        }
        Err(EndpointParseError::Unsupported(raw.to_string()))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Http(base) => f.write_str(base),
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The identity headers sent on every call.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Identity {
    /// `X-AGH-Session-ID`
    pub session_id: String,
    /// `X-AGH-Agent`
    pub agent: String,
    /// `X-AGH-Workspace-ID`, sent only when set.
    pub workspace_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_endpoints_accept_one_or_three_slashes() {
        assert_eq!(
            Endpoint::parse("unix:/run/agh.sock"),
            Ok(Endpoint::Unix("/run/agh.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("unix:///run/agh.sock"),
            Ok(Endpoint::Unix("/run/agh.sock".into()))
        );
    }

    #[test]
    fn http_endpoints_lose_their_trailing_slash() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:2123/"),
            Ok(Endpoint::Http("http://127.0.0.1:2123".into()))
        );
    }

    #[test]
    fn other_schemes_are_refused_with_the_accepted_forms() {
        let err = Endpoint::parse("https://x").unwrap_err();
        assert!(err.to_string().contains("unix:/path/to/daemon.sock"));
        assert_eq!(Endpoint::parse("  "), Err(EndpointParseError::Empty));
        assert!(matches!(
            Endpoint::parse("unix:"),
            Err(EndpointParseError::EmptySocketPath(_))
        ));
    }
}
