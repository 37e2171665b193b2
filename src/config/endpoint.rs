//! Finding the AGH daemon the way the `agh` CLI does: explicit endpoint, else the home's socket,
//! else loopback TCP on the port the daemon recorded in `daemon.json`.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::AghConfig;
use crate::api::{Endpoint, EndpointParseError};

/// AGH's TCP port when `daemon.json` does not say otherwise.
pub const DEFAULT_TCP_PORT: u16 = 2123;

/// `daemon.json` is a few dozen bytes; the cap keeps a wrong file from being read whole.
const DAEMON_JSON_MAX_BYTES: u64 = 64 * 1024;

/// Why no endpoint could be worked out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveEndpointError {
    #[error("agh.endpoint is invalid: {0}")]
    Invalid(#[from] EndpointParseError),
    #[error(
        "agh.endpoint is empty and there is no AGH home to look in: set AGH_HOME or agh.home (HOME is not set either), or set agh.endpoint"
    )]
    NoHome,
}

/// How the endpoint was chosen, for `check` output and start-up logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSource {
    /// `agh.endpoint` was set.
    Configured,
    /// `<home>/daemon.sock` exists.
    Socket,
    /// The port recorded in this `daemon.json`.
    DaemonJson(PathBuf),
    /// Nothing found: AGH's default port.
    Fallback,
}

impl fmt::Display for EndpointSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointSource::Configured => f.write_str("set by agh.endpoint"),
            EndpointSource::Socket => f.write_str("socket found in the AGH home"),
            EndpointSource::DaemonJson(path) => write!(f, "port read from {}", path.display()),
            EndpointSource::Fallback => write!(
                f,
                "no socket and no readable daemon.json in the AGH home: default port {DEFAULT_TCP_PORT}"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedEndpoint {
    pub endpoint: Endpoint,
    pub source: EndpointSource,
}

/// `agh.endpoint` if set; else `<home>/daemon.sock` if it exists; else
/// `http://127.0.0.1:<port>` with the port from `<home>/daemon.json`, or 2123.
///
/// Looks at the filesystem each time it is called, so a daemon started after the worker is found.
pub fn resolve_endpoint(agh: &AghConfig) -> Result<ResolvedEndpoint, ResolveEndpointError> {
    if !agh.endpoint.trim().is_empty() {
        return Ok(ResolvedEndpoint {
            endpoint: Endpoint::parse(&agh.endpoint)?,
            source: EndpointSource::Configured,
        });
    }
    let home = agh.home.trim();
    if home.is_empty() {
        return Err(ResolveEndpointError::NoHome);
    }
    let home = Path::new(home);
    let socket = home.join("daemon.sock");
    if socket.exists() {
        return Ok(ResolvedEndpoint {
            endpoint: Endpoint::Unix(socket),
            source: EndpointSource::Socket,
        });
    }
    let info = home.join("daemon.json");
    let (port, source) = match recorded_port(&info) {
        Some(port) => (port, EndpointSource::DaemonJson(info)),
        None => (DEFAULT_TCP_PORT, EndpointSource::Fallback),
    };
    Ok(ResolvedEndpoint {
        endpoint: Endpoint::Http(format!("http://127.0.0.1:{port}")),
        source,
    })
}

/// The `port` in `daemon.json`, or `None` when the file is missing, unreadable or makes no sense
/// (AGH itself falls back to 2123 for a port ≤ 0).
fn recorded_port(path: &Path) -> Option<u16> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(DAEMON_JSON_MAX_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    let info: serde_json::Value = serde_json::from_str(&text).ok()?;
    let port = info.get("port")?.as_u64()?;
    u16::try_from(port).ok().filter(|p| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agh_with_home(home: &Path) -> AghConfig {
        AghConfig {
            home: home.display().to_string(),
            ..AghConfig::default()
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
    }

    #[test]
    fn an_explicit_endpoint_wins_over_everything_in_the_home() {
        let home = tempdir();
        write(&home.path().join("daemon.sock"), "");
        let agh = AghConfig {
            endpoint: "http://127.0.0.1:9999/".into(),
            ..agh_with_home(home.path())
        };
        let resolved = resolve_endpoint(&agh).ok();
        assert_eq!(
            resolved,
            Some(ResolvedEndpoint {
                endpoint: Endpoint::Http("http://127.0.0.1:9999".into()),
                source: EndpointSource::Configured,
            })
        );
    }

    #[test]
    fn an_explicit_endpoint_of_the_wrong_form_is_an_error() {
        let agh = AghConfig {
            endpoint: "https://agh".into(),
            ..AghConfig::default()
        };
        assert!(matches!(
            resolve_endpoint(&agh),
            Err(ResolveEndpointError::Invalid(
                EndpointParseError::Unsupported(_)
            ))
        ));
    }

    #[test]
    fn the_socket_is_preferred_when_it_exists() {
        let home = tempdir();
        write(&home.path().join("daemon.sock"), "");
        write(&home.path().join("daemon.json"), r#"{"port": 4000}"#);
        let resolved = resolve_endpoint(&agh_with_home(home.path()));
        assert_eq!(
            resolved.map(|r| (r.endpoint, r.source)).ok(),
            Some((
                Endpoint::Unix(home.path().join("daemon.sock")),
                EndpointSource::Socket
            ))
        );
    }

    #[test]
    fn without_a_socket_the_port_comes_from_daemon_json() {
        let home = tempdir();
        let info = home.path().join("daemon.json");
        write(
            &info,
            r#"{"port": 41234, "pid": 77, "started_at": "2026-05-31T10:00:00Z"}"#,
        );
        let resolved = resolve_endpoint(&agh_with_home(home.path()));
        assert_eq!(
            resolved.ok(),
            Some(ResolvedEndpoint {
                endpoint: Endpoint::Http("http://127.0.0.1:41234".into()),
                source: EndpointSource::DaemonJson(info),
            })
        );
    }

    #[test]
    fn with_nothing_in_the_home_the_default_port_is_used() {
        let home = tempdir();
        let resolved = resolve_endpoint(&agh_with_home(home.path()));
        assert_eq!(
            resolved.ok(),
            Some(ResolvedEndpoint {
                endpoint: Endpoint::Http("http://127.0.0.1:2123".into()),
                source: EndpointSource::Fallback,
            })
        );
    }

    #[test]
    fn a_garbage_or_senseless_daemon_json_falls_back_to_the_default_port() {
        let home = tempdir();
        let info = home.path().join("daemon.json");
        for text in [
            "not json at all \u{0}\u{1}",
            r#"{"port": "2124"}"#,
            r#"{"port": 0}"#,
            r#"{"port": -5}"#,
            r#"{"port": 70000}"#,
            r#"[1, 2, 3]"#,
            "",
        ] {
            write(&info, text);
            let resolved = resolve_endpoint(&agh_with_home(home.path())).ok();
            assert_eq!(
                resolved.map(|r| r.endpoint),
                Some(Endpoint::Http("http://127.0.0.1:2123".into())),
                "daemon.json was {text:?}"
            );
        }
    }

    #[test]
    fn no_endpoint_and_no_home_is_an_error_that_says_what_to_set() {
        let err = resolve_endpoint(&AghConfig::default()).err();
        assert_eq!(err, Some(ResolveEndpointError::NoHome));
        assert!(
            ResolveEndpointError::NoHome
                .to_string()
                .contains("AGH_HOME")
        );
    }
}
