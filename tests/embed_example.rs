//! `examples/embed.rs`: a Rust program with an in-process handler, built through the public API,
//! run against the built-in simulator.

#[allow(dead_code)]
#[path = "../examples/embed.rs"]
mod embed;

use agh_worker::WorkerExit;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedding_example_completes_each_run_with_its_handlers_result_and_fails_an_empty_one()
{
    let finished = embed::count_words(&["count these four words", "two words", " "])
        .await
        .expect("the example runs");
    assert_eq!(finished.exit, WorkerExit::MaxRuns);
    let outcomes: Vec<(&str, Option<serde_json::Value>)> = finished
        .runs
        .iter()
        .map(|(_, status, result)| (status.as_str(), result.clone()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("completed", Some(json!({"words": 4}))),
            ("completed", Some(json!({"words": 2}))),
            ("failed", Some(json!("the task has no title to count"))),
        ]
    );
}
