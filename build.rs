//! Release link layout: the functions a worker runs while it starts, idles and works a run are
//! placed together at the start of `.text`, in the order `link/symbol-order.txt` lists them.
//!
//! Why: the kernel maps a program's code around each page it touches (64 KiB at a time, more
//! with large page-cache folios), and every mapped page counts in the process's RSS. Left to the
//! linker, the code an idle worker has run is spread over almost the whole 10 MiB `.text`, so an
//! idle exec-only worker showed about 7 MiB of its own code resident; packed together it shows
//! under 2 MiB. Nothing changes but where functions sit.
//!
//! Only for release builds of the `agh-worker` binary on x86_64 Linux with glibc, where rustc
//! links with its own LLD, which understands `--symbol-ordering-file` (so does mold; GNU ld does
//! not: set `AGH_WORKER_NO_SYMBOL_ORDER=1` when linking with it). A name the list has and the
//! binary lacks (the code changed since the list was made) is skipped without a warning; the
//! layout then degrades gradually, which `agh-worker bench` shows as a higher idle RSS.
//! `benches/symbol-order.sh` regenerates the list.

use std::path::Path;

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let list = Path::new(&manifest_dir).join("link/symbol-order.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    println!("cargo:rerun-if-env-changed=AGH_WORKER_NO_SYMBOL_ORDER");
    let release = std::env::var("PROFILE").is_ok_and(|profile| profile == "release");
    let target = std::env::var("TARGET").unwrap_or_default();
    let opted_out = std::env::var_os("AGH_WORKER_NO_SYMBOL_ORDER").is_some();
    if !release || target != "x86_64-unknown-linux-gnu" || opted_out || !list.is_file() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bin=agh-worker=-Wl,--symbol-ordering-file={}",
        list.display()
    );
    println!("cargo:rustc-link-arg-bin=agh-worker=-Wl,--no-warn-symbol-ordering");
}
