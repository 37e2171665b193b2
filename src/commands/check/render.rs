//! The checklist for a person (`--json` prints the [`Report`] itself).

use super::{Report, Status};

/// The checklist for a person.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    out.push_str(&match &report.config_file {
        Some(path) => format!("Configuration file: {}\n", path.display()),
        None => "Configuration file: none (defaults, environment and flags only)\n".to_string(),
    });
    if !report.settings.is_empty() {
        out.push_str("\nEffective settings (value, then where it came from):\n");
        let key_width = report
            .settings
            .iter()
            .map(|s| s.key.len())
            .max()
            .unwrap_or(0);
        let value_width = report
            .settings
            .iter()
            .map(|s| s.value.to_string().chars().count().min(40))
            .max()
            .unwrap_or(0);
        for setting in &report.settings {
            out.push_str(&format!(
                "  {:key_width$} = {:value_width$}  ({})\n",
                setting.key,
                setting.value.to_string(),
                setting.origin
            ));
        }
    }
    out.push_str("\nChecks:\n");
    for check in &report.checks {
        out.push_str(&format!("  {} {}\n", check.status.mark(), check.summary));
        for detail in &check.details {
            out.push_str(&format!("      - {detail}\n"));
        }
    }
    let failed = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .count();
    let warned = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Warn)
        .count();
    out.push('\n');
    out.push_str(&if failed == 0 && warned == 0 {
        "All checks passed.".to_string()
    } else if failed == 0 {
        format!("All checks passed; {warned} warning(s) (marked !) need a look.")
    } else {
        format!(
            "{failed} of {} checks failed (exit {}).",
            report.checks.len(),
            report.exit_code
        )
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::check::{CheckLine, Setting};
    use serde_json::Value;

    #[test]
    fn the_human_checklist_marks_each_line_and_sums_up_failures() {
        let report = Report {
            ok: false,
            exit_code: 1,
            config_file: None,
            settings: vec![Setting {
                key: "agh.endpoint".into(),
                value: Value::String("unix:/run/agh/daemon.sock".into()),
                origin: "env AGH_WORKER__AGH__ENDPOINT".into(),
            }],
            checks: vec![
                CheckLine::new("config", Status::Pass, "the configuration is valid"),
                CheckLine::new("identity", Status::Fail, "AGH did not answer")
                    .with_details(vec!["me: transport".into()]),
            ],
        };
        let text = render(&report);
        assert!(text.contains("✓ the configuration is valid"), "{text}");
        assert!(text.contains("✗ AGH did not answer"), "{text}");
        assert!(text.contains("- me: transport"), "{text}");
        assert!(text.contains("(env AGH_WORKER__AGH__ENDPOINT)"), "{text}");
        assert!(text.ends_with("1 of 2 checks failed (exit 1)."), "{text}");
    }
}
