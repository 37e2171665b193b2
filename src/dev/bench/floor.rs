//! The floor: the least a correct worker must do per run, with the worker's client.

use anyhow::bail;
use serde_json::json;

use crate::api::types::{ClaimRequest, CompleteRequest};
use crate::api::{AghClient, ClaimOutcome};

/// Claims (waiting), reads the context (the handler's bundle and time limit) and, beside it, the
/// task view (AGH's claim carries no description and no task metadata: only
/// `GET /api/tasks/{id}` has them), completes; again while `another` says so (asked before each
/// claim, so a loop never waits for a run that is not queued).
pub(super) async fn floor_loop(
    client: &AghClient,
    mut another: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let request = ClaimRequest {
        wait: true,
        lease_seconds: Some(60),
        ..ClaimRequest::default()
    };
    let result = CompleteRequest {
        result: Some(json!({"handler": "noop"})),
    };
    while another() {
        let claim = match client.claim_next(&request).await? {
            ClaimOutcome::Claimed(claim) => claim,
            other => bail!("the floor loop found no run to claim: {other:?}"),
        };
        let (context, view) = tokio::join!(client.context(), client.task(&claim.task.id));
        context?;
        view?;
        client.complete(&claim.run.id, &result).await?;
    }
    Ok(())
}
