//! The credential file lines: every `…_file` key with a value must name a readable file.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{CheckLine, Status};
use crate::config;

/// Every `…_file` key with a value (such as a webhook handler's `secret_file`) must name a
/// readable file. A relative path is resolved against `$CREDENTIALS_DIRECTORY` when systemd
/// provides one (`LoadCredential=`), else against the working directory.
pub(super) fn credential_file_checks(config: &config::Config) -> Vec<CheckLine> {
    let tree = serde_json::to_value(config).unwrap_or(Value::Null);
    let mut found = Vec::new();
    collect_file_keys(&tree, String::new(), &mut found);
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    found
        .into_iter()
        .map(|(key, raw)| {
            let path = resolve_file(&raw, credentials.as_deref());
            match std::fs::File::open(&path) {
                Ok(file) if shared_with_others(&file) => CheckLine::new(
                    format!("file:{key}"),
                    Status::Warn,
                    format!(
                        "{key}: {} holds a secret and other users can read it",
                        path.display()
                    ),
                )
                .with_details(vec![format!(
                    "make it readable by the worker's user only: chmod 600 {}",
                    path.display()
                )]),
                Ok(_) => CheckLine::new(
                    format!("file:{key}"),
                    Status::Pass,
                    format!("{key}: {} is readable", path.display()),
                ),
                Err(err) => CheckLine::new(
                    format!("file:{key}"),
                    Status::Fail,
                    format!("{key}: {} cannot be read: {err}", path.display()),
                )
                .with_details(vec![match &credentials {
                    Some(_) => "relative paths are resolved against $CREDENTIALS_DIRECTORY; check the unit's LoadCredential= lines".to_string(),
                    None => "no $CREDENTIALS_DIRECTORY (not started by systemd with LoadCredential=), so a relative path is resolved against the working directory".to_string(),
                }]),
            }
        })
        .collect()
}

/// Whether the group or others may read the file (on Unix; elsewhere nothing is known).
fn shared_with_others(file: &std::fs::File) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.metadata()
            .is_ok_and(|meta| meta.permissions().mode() & 0o044 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        false
    }
}

fn collect_file_keys(value: &Value, path: String, found: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match child {
                    Value::String(text) if key.ends_with("_file") && !text.trim().is_empty() => {
                        found.push((child_path, text.clone()));
                    }
                    _ => collect_file_keys(child, child_path, found),
                }
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                collect_file_keys(child, format!("{path}[{index}]"), found);
            }
        }
        _ => {}
    }
}

/// An absolute path as it is; a relative one inside the credentials directory when there is one.
pub fn resolve_file(raw: &str, credentials: Option<&Path>) -> PathBuf {
    let path = Path::new(raw);
    match credentials {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_credential_paths_resolve_inside_the_credentials_directory() {
        let dir = Path::new("/run/credentials/agh-worker.service");
        assert_eq!(
            resolve_file("webhook-secret", Some(dir)),
            dir.join("webhook-secret")
        );
        assert_eq!(
            resolve_file("/etc/agh-worker/secret", Some(dir)),
            PathBuf::from("/etc/agh-worker/secret")
        );
        assert_eq!(
            resolve_file("webhook-secret", None),
            PathBuf::from("webhook-secret")
        );
    }

    #[test]
    fn file_keys_are_found_in_sections_and_in_handler_tables() {
        let tree = serde_json::json!({
            "log": {"level": "info"},
            "handlers": [{"name": "w", "webhook": {"url": "http://x", "secret_file": "s"}}],
        });
        let mut found = Vec::new();
        collect_file_keys(&tree, String::new(), &mut found);
        assert_eq!(
            found,
            vec![(
                "handlers[0].webhook.secret_file".to_string(),
                "s".to_string()
            )]
        );
    }
}
