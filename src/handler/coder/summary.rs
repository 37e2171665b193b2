//! What a finished run reports besides its outcome: the session's final answer, and its usage
//! with cost (`null` when unknown, never 0).

use serde_json::{Value, json};

use super::LOG_TARGET;
use super::hub::Hub;
use crate::agentuity::{Session, Usage};

/// The lead's last message in the session's replay.
pub(super) async fn final_message(client: &Hub<'_>, id: &str) -> Option<String> {
    match client.replay(id).await {
        Ok(replay) => replay.final_message(),
        Err(err) => {
            tracing::debug!(target: LOG_TARGET, error = %err, "reading the replay failed");
            None
        }
    }
}

/// The usage with the highest known cost among the reads (cost only grows).
pub(super) fn best_usage<const N: usize>(sessions: [Option<&Session>; N]) -> Option<Usage> {
    sessions
        .into_iter()
        .flatten()
        .filter_map(|s| s.usage.clone())
        .max_by(|a, b| {
            a.cost_usd
                .unwrap_or(-1.0)
                .total_cmp(&b.cost_usd.unwrap_or(-1.0))
                .then(a.input_tokens.cmp(&b.input_tokens))
        })
}

/// `usage` of the result: unknown values are `null`, never 0.
pub(super) fn usage_json(usage: Option<&Usage>) -> Value {
    let usage = usage.cloned().unwrap_or_default();
    json!({
        "cost_usd": usage.cost_usd,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    })
}
