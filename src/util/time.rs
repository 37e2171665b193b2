//! Timer helpers for `select!` loops.

use tokio::time::Instant;

/// Sleeps until `deadline`, or forever when there is none: a `select!` arm that never fires
/// when its deadline is not set.
pub async fn sleep_until_option(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
