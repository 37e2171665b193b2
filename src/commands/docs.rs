//! `completions` and `man`: shell completion scripts and man pages generated from the clap
//! definition, so they can never drift from the flags the binary actually accepts.
//!
//! Generated at run time by the installed binary rather than shipped as files: a package or an
//! install script asks the very binary it installs (`agh-worker completions bash > …`,
//! `agh-worker man --out-dir …`), with no build script and nothing checked in to keep in step.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};

/// `agh-worker completions SHELL`: the script on stdout.
pub fn completions(args: &CompletionsArgs) -> ExitCode {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "agh-worker", &mut out);
    write_stdout(&out)
}

/// `agh-worker man [--out-dir DIR]`: agh-worker.1 on stdout, or every page into DIR.
pub fn man(args: &ManArgs) -> ExitCode {
    let command = Cli::command();
    if let Some(dir) = &args.out_dir {
        if let Err(err) = std::fs::create_dir_all(dir) {
            eprintln!("agh-worker man: cannot create {}: {err}", dir.display());
            return ExitCode::FAILURE;
        }
        return match clap_mangen::generate_to(command, dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!(
                    "agh-worker man: cannot write the pages into {}: {err}",
                    dir.display()
                );
                ExitCode::FAILURE
            }
        };
    }
    let mut out = Vec::new();
    if let Err(err) = clap_mangen::Man::new(command).render(&mut out) {
        eprintln!("agh-worker man: cannot render the page: {err}");
        return ExitCode::FAILURE;
    }
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("agh-worker: cannot write to stdout: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_scripts_name_the_subcommands_for_every_shell() {
        use clap::ValueEnum;
        for shell in clap_complete::Shell::value_variants() {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "agh-worker", &mut out);
            let text = String::from_utf8_lossy(&out);
            assert!(text.contains("check"), "{shell}: no `check` in\n{text}");
        }
    }

    #[test]
    fn the_man_page_is_roff_for_agh_worker() {
        let mut out = Vec::new();
        let rendered = clap_mangen::Man::new(Cli::command()).render(&mut out);
        assert!(rendered.is_ok());
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with(".ie"), "{}", &text[..text.len().min(200)]);
        assert!(text.contains("agh\\-worker"), "no program name");
    }

    #[test]
    fn the_man_pages_cover_every_command() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let code = man(&ManArgs {
            out_dir: Some(dir.path().join("man1")),
        });
        assert_eq!(code, ExitCode::SUCCESS);
        for page in ["agh-worker.1", "agh-worker-run.1", "agh-worker-check.1"] {
            assert!(dir.path().join("man1").join(page).is_file(), "{page}");
        }
    }
}
