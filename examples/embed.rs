//! Embedding agh-worker in a Rust program: an in-process handler does the work of each task run,
//! and the worker does the rest (claims, leases, the one terminal call per run).
//!
//! This example runs against the built-in AGH simulator, so it needs nothing else:
//!
//! ```text
//! cargo run --example embed
//! ```
//!
//! Against a real daemon, build the [`Config`] with `agh_worker::config::load` (the same file,
//! environment and flags `agh-worker run` reads) and leave out `.endpoint(…)`.

use std::net::{Ipv4Addr, SocketAddr};

use agh_worker::dev::sim::{SimConfig, Simulator, TaskSpec};
use agh_worker::{
    Config, Handler, MatchRule, Outcome, Shutdown, TaskContext, WorkerBuilder, WorkerExit,
};
use anyhow::Context as _;
use serde_json::{Value, json};

/// Counts the words of a task's title; refuses an empty title.
struct WordCount;

impl Handler for WordCount {
    async fn run(&self, context: TaskContext) -> Outcome {
        context.progress("counting words").await;
        let title = &context.document.title;
        if title.trim().is_empty() {
            return Outcome::Fail {
                error: "the task has no title to count".into(),
                metadata: None,
            };
        }
        Outcome::Complete(json!({ "words": title.split_whitespace().count() }))
    }
}

/// What became of each task: its title and the run's result (or error).
#[derive(Debug)]
pub(crate) struct Finished {
    pub exit: WorkerExit,
    pub runs: Vec<(String, String, Option<Value>)>,
}

/// Queues a task per title on a fresh simulator, runs a worker with the [`WordCount`] handler
/// until every run is done, and answers what became of each.
pub(crate) async fn count_words(titles: &[&str]) -> anyhow::Result<Finished> {
    let simulator = Simulator::new(SimConfig::default());
    let server = simulator
        .serve_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .context("serving the simulator on loopback")?;
    let session = simulator
        .default_session()
        .context("the simulator has a default session")?;
    let runs: Vec<_> = titles
        .iter()
        .map(|title| {
            (
                title.to_string(),
                simulator.enqueue_task(TaskSpec::titled(title)),
            )
        })
        .collect();

    // The worker's identity is its session; `max_runs` ends it once every task is done.
    let mut config = Config::default();
    config.agh.session_id = session.session_id.clone();
    config.agh.agent = session.agent_name.clone();
    config.worker.max_runs = titles.len() as u64;
    let worker = WorkerBuilder::new(config)
        .endpoint(&server.base_url())?
        .handler("word-count", MatchRule::default(), WordCount)
        .build()?;
    let exit = worker.run(Shutdown::default()).await;
    server.shutdown().await;

    let runs = runs
        .into_iter()
        .map(|(title, enqueued)| {
            let run = simulator.run(&enqueued.run_id);
            let status = run.as_ref().map_or("unknown".into(), |r| r.status.clone());
            let result = run.and_then(|r| r.result.or(r.error.map(Value::String)));
            (title, status, result)
        })
        .collect();
    Ok(Finished { exit, runs })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let finished = count_words(&["count these four words", "two words", " "]).await?;
    for (title, status, result) in &finished.runs {
        println!(
            "{title:?}: {status} {}",
            result.clone().unwrap_or(Value::Null)
        );
    }
    println!("the worker stopped: {:?}", finished.exit);
    Ok(())
}
