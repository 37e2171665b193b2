//! The configuration structs, `config/agh-worker.toml` and `docs/configuration.md` stay in step.
//!
//! The keys come from the structs (`agh_worker::config::section_keys` and `handler_keys`). The
//! example file shows a section key as `key = …` (commented out or not) inside its `[section]`,
//! and a handler key in its "Keys of one entry" comment block as `#   exec.program  …` (several
//! on one line joined by ` / `). The docs document a key as a table row that starts with the key
//! in backticks, `` | `section.key` | `` or `` | `handlers[].exec.program` | ``, exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use agh_worker::config::{
    AGH_CONVENTIONS, Config, HANDLER_KEY_PREFIX, env_var_for, handler_keys, section_keys,
};

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn all_keys() -> Vec<String> {
    let mut keys = section_keys();
    keys.extend(handler_keys());
    keys
}

/// The cells of a Markdown table row, split on the `|` that are not escaped as `\|`.
fn cells(row: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut escaped = false;
    for c in row.trim().trim_start_matches('|').chars() {
        match c {
            '|' if !escaped => cells.push(std::mem::take(&mut cell).trim().to_string()),
            _ => cell.push(c),
        }
        escaped = c == '\\';
    }
    if !cell.trim().is_empty() {
        cells.push(cell.trim().to_string());
    }
    cells
}

/// The documented keys of `docs/configuration.md`: each table row whose first cell is one name
/// in backticks, with the row's cells, in order of appearance.
fn documented_rows() -> Vec<(String, Vec<String>)> {
    read("docs/configuration.md")
        .lines()
        .filter(|line| line.starts_with("| `"))
        .filter_map(|line| {
            let cells = cells(line);
            let first = cells.first()?;
            let name = first.strip_prefix('`')?.strip_suffix('`')?;
            (!name.contains('`')).then(|| (name.to_string(), cells.clone()))
        })
        .collect()
}

/// The lines of `text` between `[section]` and the next section header.
fn section_text<'a>(text: &'a str, section: &str) -> Vec<&'a str> {
    let header = format!("[{section}]");
    text.lines()
        .skip_while(|line| line.trim_start_matches(['#', ' ']) != header)
        .skip(1)
        .take_while(|line| !line.trim_start_matches(['#', ' ']).starts_with('['))
        .collect()
}

/// The handler keys the example file lists: the leading `key / key …` of each `#   ` line.
fn example_handler_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("#   ") else {
            continue;
        };
        if rest.starts_with(' ') {
            continue; // a continuation line
        }
        let mut words = rest.split_whitespace();
        while let Some(key) = words.next() {
            keys.insert(key.to_string());
            if words.next() != Some("/") {
                break;
            }
        }
    }
    keys
}

#[test]
fn every_section_key_is_shown_in_its_section_of_the_example_file_with_its_variable() {
    let text = read("config/agh-worker.toml");
    for key in section_keys() {
        let Some((section, leaf)) = key.split_once('.') else {
            panic!("{key} has no section");
        };
        let lines = section_text(&text, section);
        let assignment = format!("{leaf} =");
        assert!(
            lines
                .iter()
                .any(|l| l.trim_start_matches(['#', ' ']).starts_with(&assignment)),
            "{key} is not shown in [{section}] of config/agh-worker.toml"
        );
        assert!(
            lines.iter().any(|l| l.contains(&env_var_for(&key))),
            "{} is not mentioned in [{section}] of config/agh-worker.toml",
            env_var_for(&key)
        );
    }
    for (_, vars) in AGH_CONVENTIONS {
        assert!(text.contains(vars[0]), "{} is not mentioned", vars[0]);
    }
}

#[test]
fn every_handler_key_is_listed_in_the_example_file() {
    let listed = example_handler_keys(&read("config/agh-worker.toml"));
    let missing: Vec<String> = handler_keys()
        .into_iter()
        .filter(|key| {
            let relative = key.strip_prefix(HANDLER_KEY_PREFIX).unwrap_or(key);
            !listed.contains(relative)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "not listed under [[handlers]] in config/agh-worker.toml: {missing:?}"
    );
}

#[test]
fn every_key_is_documented_exactly_once_in_the_configuration_doc() {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (name, _) in documented_rows() {
        *counts.entry(name).or_default() += 1;
    }
    let wrong: Vec<(String, usize)> = all_keys()
        .into_iter()
        .map(|key| {
            let count = counts.get(&key).copied().unwrap_or(0);
            (key, count)
        })
        .filter(|(_, count)| *count != 1)
        .collect();
    assert!(
        wrong.is_empty(),
        "keys documented other than once in docs/configuration.md (key, rows): {wrong:?}"
    );
}

#[test]
fn no_documented_key_is_unknown_to_the_configuration_structs() {
    let known: BTreeSet<String> = all_keys().into_iter().collect();
    let unknown: Vec<String> = documented_rows()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| !known.contains(name))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents keys the structs do not have: {unknown:?}"
    );
}

#[test]
fn the_configuration_doc_gives_each_section_key_its_default_and_its_variable() {
    let defaults = serde_json::to_value(Config::default()).expect("the defaults serialise");
    let rows: BTreeMap<String, Vec<String>> = documented_rows().into_iter().collect();
    for key in section_keys() {
        let Some(cells) = rows.get(&key) else {
            panic!("{key} has no row in docs/configuration.md");
        };
        let (section, leaf) = key.split_once('.').expect("section.key");
        let default = serde_json::to_string(&defaults[section][leaf]).expect("a JSON value");
        assert!(
            cells
                .get(1)
                .is_some_and(|cell| cell.starts_with(&format!("`{default}`"))),
            "{key}: the default column should start with `{default}`: {cells:?}"
        );
        assert!(
            cells
                .get(2)
                .is_some_and(|cell| cell.contains(&env_var_for(&key))),
            "{key}: the environment column should name {}: {cells:?}",
            env_var_for(&key)
        );
    }
    let text = read("docs/configuration.md");
    for (key, vars) in AGH_CONVENTIONS {
        for var in *vars {
            assert!(
                text.contains(&format!("`{var}`")),
                "{var} (for {key}) is not mentioned"
            );
        }
    }
}
