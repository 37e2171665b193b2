//! Timer helpers for `select!` loops, and durations written for people.

use std::time::Duration;

use tokio::time::Instant;

/// Sleeps until `deadline`, or forever when there is none: a `select!` arm that never fires
/// when its deadline is not set.
pub async fn sleep_until_option(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// `3`, `0.3`, `1.25`: whole seconds plainly, fractions to the millisecond without trailing zeros.
pub fn seconds_text(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        return duration.as_secs().to_string();
    }
    let text = format!("{:.3}", duration.as_secs_f64());
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_printed_without_noise() {
        assert_eq!(seconds_text(Duration::from_secs(30)), "30");
        assert_eq!(seconds_text(Duration::from_millis(300)), "0.3");
        assert_eq!(seconds_text(Duration::from_millis(1250)), "1.25");
    }
}
