//! "Did you mean …?" for unknown keys: the nearest known key by edit distance.

/// Levenshtein distance over chars.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            let cost = usize::from(ca != *cb);
            row[j + 1] = (diagonal + cost).min(above + 1).min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

fn leaf(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

fn section(path: &str) -> Option<&str> {
    path.rsplit_once('.').map(|(section, _)| section)
}

/// The known key closest to `unknown`, if any is close enough to be a plausible typo.
///
/// Comparing leaf names too catches a right key put in the wrong section
/// (`agh.lease_seconds` → `worker.lease_seconds`) or given without one.
pub(crate) fn closest<'a>(
    unknown: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let unknown = unknown.to_ascii_lowercase();
    let unknown_leaf = leaf(&unknown);
    let threshold = (unknown_leaf.chars().count() / 3).max(2);
    let mut best: Option<(usize, &str)> = None;
    for candidate in known {
        let whole = distance(&unknown, candidate);
        let section_penalty = usize::from(section(&unknown) != section(candidate));
        let by_leaf = distance(unknown_leaf, leaf(candidate)) + section_penalty;
        let score = whole.min(by_leaf);
        // On a tie an `[acp]` key loses: it repeats a `[worker]` leaf (`lease_seconds`) for one
        // mode only, and the general key is the one a misplaced setting most likely meant.
        let better = |(b, held): (usize, &str)| {
            score < b
                || (score == b && section(held) == Some("acp") && section(candidate) != Some("acp"))
        };
        if score <= threshold && best.is_none_or(better) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[&str] = &[
        "agh.session_id",
        "worker.lease_seconds",
        "worker.max_runs",
        "worker.max_runtime_seconds",
        "log.level",
    ];

    #[test]
    fn distance_counts_single_edits() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("same", "same"), 0);
    }

    #[test]
    fn a_shortened_key_suggests_the_full_one() {
        assert_eq!(
            closest("worker.lease_secs", KEYS.iter().copied()),
            Some("worker.lease_seconds")
        );
        assert_eq!(
            closest("worker.max_run", KEYS.iter().copied()),
            Some("worker.max_runs")
        );
    }

    #[test]
    fn a_key_in_the_wrong_section_or_none_suggests_where_it_lives() {
        assert_eq!(
            closest("agh.lease_seconds", KEYS.iter().copied()),
            Some("worker.lease_seconds")
        );
        assert_eq!(
            closest("lease_seconds", KEYS.iter().copied()),
            Some("worker.lease_seconds")
        );
    }

    #[test]
    fn a_leaf_found_in_worker_and_acp_suggests_the_worker_key() {
        let keys = ["acp.lease_seconds", "worker.lease_seconds"];
        assert_eq!(closest("lease_seconds", keys), Some("worker.lease_seconds"));
        assert_eq!(closest("acp.lease_second", keys), Some("acp.lease_seconds"));
    }

    #[test]
    fn nothing_is_suggested_for_an_unrelated_key() {
        assert_eq!(closest("database.url", KEYS.iter().copied()), None);
    }
}
