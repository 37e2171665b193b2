//! The layers of `src/` depend one way (ARCHITECTURE.md, "Layers"): a module uses only the
//! modules of lower layers, the simulator and the dev Hub use nothing but `util`, and the command-line
//! definitions and exit codes use nothing at all. Read from the source itself, so a new import
//! that reaches up fails here, with the file and the module it reached.

use std::path::{Path, PathBuf};

/// Each top-level module and its layer; a module may use the modules of lower layers only.
const LAYERS: &[(&str, u8)] = &[
    ("util", 0),
    ("exit", 0),
    ("cli", 0),
    ("api", 1),
    ("agentuity", 1),
    ("handler", 2),
    ("config", 3),
    ("worker", 4),
    ("coordination", 5),
    ("assembly", 6),
    ("ops", 7),
    ("commands", 8),
    ("dev", 8),
    ("acp", 8),
    ("attach", 9),
    ("app", 10),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, layer)| *layer)
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).expect("src/ is readable");
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// The top-level modules a file names as `crate::<module>`.
fn crate_uses(text: &str) -> Vec<String> {
    let mut uses = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        uses.push(name);
    }
    uses
}

/// Every `crate::` use in `src/` that breaks the layering, as "file uses module".
fn violations() -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("below src/");
        let mut parts = relative.iter().map(|p| p.to_string_lossy().to_string());
        let top = parts.next().unwrap_or_default();
        let top = top.trim_end_matches(".rs").to_string();
        // The AGH simulator and the dev Coder Hub stand in for outside services: neither may
        // depend on the worker code it serves.
        let in_simulator = top == "dev" && matches!(parts.next().as_deref(), Some("sim" | "hub"));
        let Some(own) = layer(&top) else {
            continue; // lib.rs and main.rs sit above everything
        };
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        for used in crate_uses(&text) {
            if used == top {
                continue;
            }
            let Some(theirs) = layer(&used) else {
                continue;
            };
            let allowed = if in_simulator {
                used == "util"
            } else if own == 0 {
                top == "util" && theirs == 0 && used == "util"
            } else {
                theirs < own || used == "cli" || used == "exit"
            };
            if !allowed {
                found.push(format!("{} uses crate::{used}", relative.display()));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn no_module_reaches_up_a_layer_and_the_simulator_uses_only_util() {
    let found = violations();
    assert!(
        found.is_empty(),
        "imports against the layers:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_reads_every_module_a_file_names_through_crate() {
    assert_eq!(
        crate_uses("use crate::worker::ClaimLoop;\nlet x = crate::util::sync::lock(&m);"),
        vec!["worker".to_string(), "util".to_string()]
    );
    assert!(layer("worker") > layer("handler"));
}

/// The one place product code may use `unsafe`: the parent-death signal of handler programs,
/// set between fork and exec, which std offers only as an unsafe hook.
const UNSAFE_ALLOWED_IN: &str = "src/handler/exec/process.rs";

/// Files outside [`UNSAFE_ALLOWED_IN`] that allow `unsafe_code` or hold an `unsafe` block, and
/// how many such places that file has.
fn unsafe_places() -> (Vec<String>, usize) {
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    let mut elsewhere = Vec::new();
    let mut allowed = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        let places = text.matches("allow(unsafe_code)").count() + text.matches("unsafe {").count();
        if places == 0 {
            continue;
        }
        if file == Path::new(UNSAFE_ALLOWED_IN) {
            allowed = places;
        } else {
            elsewhere.push(file.display().to_string());
        }
    }
    (elsewhere, allowed)
}

#[test]
fn unsafe_code_lives_in_one_audited_place_only() {
    let (elsewhere, allowed) = unsafe_places();
    assert!(elsewhere.is_empty(), "unsafe code in {elsewhere:?}");
    // One `allow(unsafe_code)` and one `unsafe {` block.
    assert_eq!(
        allowed, 2,
        "{UNSAFE_ALLOWED_IN} should hold exactly one audited block"
    );
}
