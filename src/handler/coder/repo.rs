//! The repositories a session is created with, in the SDK's shape
//! (`CoderSessionRepositoryRefSchema`): `url` is the web URL and `cloneUrl` what is cloned, so
//! both are sent. For GitHub either one gives the other; for another host the one URL given is
//! sent as both, since which one the Hub clones from is not documented.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// One repository of `handlers.coder.repos`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepoConfig {
    /// The web URL (`https://github.com/acme/app`).
    pub url: Option<String>,
    /// The clone URL (`https://github.com/acme/app.git`).
    pub clone_url: Option<String>,
    pub branch: Option<String>,
}

/// `owner` and `name` of a GitHub URL, web or clone (`https://github.com/o/n[.git]`,
/// `git@github.com:o/n.git`).
fn github(url: &str) -> Option<(String, String)> {
    let url = url.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("https://github.com/")
        .or_else(|| url.strip_prefix("http://github.com/"))
        .or_else(|| url.strip_prefix("git@github.com:"))
        .or_else(|| url.strip_prefix("ssh://git@github.com/"))?;
    let rest = rest.strip_suffix(".git").unwrap_or(rest);
    let (owner, name) = rest.split_once('/')?;
    let valid = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (valid(owner) && valid(name)).then(|| (owner.to_string(), name.to_string()))
}

impl RepoConfig {
    /// The repository reference sent on create; `None` when no URL is set.
    pub fn to_ref(&self) -> Option<Value> {
        let given = self.url.as_deref().or(self.clone_url.as_deref())?;
        let mut repo = Map::new();
        let found = github(given);
        let (url, clone_url) = match &found {
            Some((owner, name)) => (
                self.url
                    .clone()
                    .unwrap_or_else(|| format!("https://github.com/{owner}/{name}")),
                self.clone_url
                    .clone()
                    .unwrap_or_else(|| format!("https://github.com/{owner}/{name}.git")),
            ),
            None => (
                self.url.clone().unwrap_or_else(|| given.to_string()),
                self.clone_url.clone().unwrap_or_else(|| given.to_string()),
            ),
        };
        repo.insert("url".into(), json!(url));
        repo.insert("cloneUrl".into(), json!(clone_url));
        if let Some((owner, name)) = found {
            repo.insert("provider".into(), json!("github"));
            repo.insert("fullName".into(), json!(format!("{owner}/{name}")));
            repo.insert("owner".into(), json!(owner));
            repo.insert("name".into(), json!(name));
        }
        if let Some(branch) = &self.branch {
            repo.insert("branch".into(), json!(branch));
        }
        Some(Value::Object(repo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(url: Option<&str>, clone_url: Option<&str>) -> Value {
        RepoConfig {
            url: url.map(str::to_string),
            clone_url: clone_url.map(str::to_string),
            branch: None,
        }
        .to_ref()
        .expect("a repository")
    }

    #[test]
    fn a_github_web_url_gives_its_clone_url_and_a_clone_url_its_web_url() {
        for given in [
            repo(Some("https://github.com/acme/app"), None),
            repo(None, Some("https://github.com/acme/app.git")),
            repo(None, Some("git@github.com:acme/app.git")),
        ] {
            assert_eq!(given["url"], "https://github.com/acme/app");
            assert_eq!(given["fullName"], "acme/app");
            assert_eq!(given["provider"], "github");
        }
        assert_eq!(
            repo(Some("https://github.com/acme/app/"), None)["cloneUrl"],
            "https://github.com/acme/app.git"
        );
        // A configured clone URL is sent as it was given.
        assert_eq!(
            repo(None, Some("git@github.com:acme/app.git"))["cloneUrl"],
            "git@github.com:acme/app.git"
        );
    }

    #[test]
    fn another_host_sends_the_one_url_given_as_both_unless_both_are_set() {
        let one = repo(Some("https://git.example.com/team/app.git"), None);
        assert_eq!(one["url"], one["cloneUrl"]);
        assert!(one.get("provider").is_none());
        let both = repo(
            Some("https://git.example.com/team/app"),
            Some("ssh://git@git.example.com/team/app.git"),
        );
        assert_eq!(both["url"], "https://git.example.com/team/app");
        assert_eq!(both["cloneUrl"], "ssh://git@git.example.com/team/app.git");
        assert_eq!(RepoConfig::default().to_ref(), None);
    }
}
