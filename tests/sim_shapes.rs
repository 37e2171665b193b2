//! The simulator gives no more than AGH: its claim answer, the context's task section, the task
//! view and the run view have exactly the key sets and value types of the reference payloads in
//! `tests/fixtures/agh/` (written from AGH's Go types; see the README there), and the task view is
//! served to the operator and to a validated agent identity only.

use agh_worker::dev::sim::{SessionInfo, SimConfig, Simulator, TaskSpec};
use serde_json::{Value, json};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/agh");

fn fixture(name: &str) -> Value {
    let path = format!("{DIR}/{name}.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{path}: {err}"))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every place where `actual` differs from `expected` in keys or value types: object keys must
/// be exactly the same; array elements each have the shape of the reference's first element (an
/// empty reference array must stay empty).
fn shape_differences(expected: &Value, actual: &Value, at: &str, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => {
            for key in got.keys().filter(|key| !want.contains_key(*key)) {
                out.push(format!("{at}/{key}: not in AGH's shape"));
            }
            for (key, inner) in want {
                match got.get(key) {
                    Some(value) => shape_differences(inner, value, &format!("{at}/{key}"), out),
                    None => out.push(format!("{at}/{key}: missing")),
                }
            }
        }
        (Value::Array(want), Value::Array(got)) => match want.first() {
            Some(first) => {
                for (index, item) in got.iter().enumerate() {
                    shape_differences(first, item, &format!("{at}/{index}"), out);
                }
            }
            None if !got.is_empty() => out.push(format!("{at}: AGH's is empty here")),
            None => {}
        },
        _ if kind(expected) != kind(actual) => out.push(format!(
            "{at}: a {} where AGH has a {}",
            kind(actual),
            kind(expected)
        )),
        _ => {}
    }
}

fn assert_shape(name: &str, actual: &Value) {
    let mut differences = Vec::new();
    shape_differences(&fixture(name), actual, "", &mut differences);
    assert!(
        differences.is_empty(),
        "the simulator's {name} is not AGH's shape:\n{}\n{actual:#}",
        differences.join("\n")
    );
}

struct Rig {
    sim: Simulator,
    _server: agh_worker::dev::sim::SimServer,
    base: String,
    client: reqwest::Client,
    worker: SessionInfo,
}

impl Rig {
    async fn start() -> Rig {
        let sim = Simulator::new(SimConfig::default());
        let server = sim
            .serve_tcp("127.0.0.1:0".parse().expect("loopback"))
            .await
            .expect("serve");
        let worker = sim.default_session().expect("default session");
        Rig {
            base: server.base_url(),
            _server: server,
            sim,
            client: reqwest::Client::new(),
            worker,
        }
    }

    /// A request as `who` (both identity headers), or as the operator (none).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if path.contains("claim-next") {
            request = request.body("{}");
        }
        let response = request.send().await.expect("the simulator answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get_as_worker(&self, path: &str) -> Value {
        let (status, body) = self
            .send(reqwest::Method::GET, path, &self.identity())
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    fn identity(&self) -> [(&'static str, &str); 2] {
        [
            ("x-agh-session-id", self.worker.session_id.as_str()),
            ("x-agh-agent", self.worker.agent_name.as_str()),
        ]
    }

    /// The README's situation: a task with a description, its own metadata and run metadata,
    /// claimed by the default session whose agent has a valid soul. Answers the claim.
    async fn claimed(&self) -> Value {
        self.sim.set_soul(
            &self.worker.agent_name,
            Some("# Soul\nShip carefully.".into()),
        );
        self.sim.enqueue_task(TaskSpec {
            description: Some("Tag, build and publish.".into()),
            task_metadata: json!({"team": "infra"}),
            metadata: json!({"lane": "fast"}),
            handoff_summary: Some("Attempt 0 left notes.".into()),
            max_runtime_seconds: 600,
            ..TaskSpec::titled("Ship the release")
        });
        let (status, claim) = self
            .send(
                reqwest::Method::POST,
                "/api/agent/tasks/claim-next",
                &self.identity(),
            )
            .await;
        assert_eq!(status, 200, "{claim}");
        claim
    }
}

#[tokio::test]
async fn the_claim_answer_is_a_task_reference_without_description_or_metadata() {
    let rig = Rig::start().await;
    let claim = rig.claimed().await;
    assert_shape("claim", &claim);
    assert_eq!(claim["claim"]["run"]["metadata"]["lane"], "fast");
    assert_eq!(
        claim["claim"]["run"]["metadata"]["soul"]["agent_name"],
        "worker"
    );
    assert!(claim["claim"]["run"]["metadata"].get("team").is_none());
}

#[tokio::test]
async fn the_context_bundle_holds_a_run_summary_with_zero_times() {
    let rig = Rig::start().await;
    rig.claimed().await;
    let context = rig.get_as_worker("/api/agent/context").await;
    let section = json!({"context": {"task": context["context"]["task"].clone()}});
    assert_shape("context_task", &section);
    let current = &section["context"]["task"]["bundle"]["current_run"];
    assert_eq!(current["started_at"], "0001-01-01T00:00:00Z");
    assert!(current.get("metadata").is_none());
}

#[tokio::test]
async fn the_task_view_carries_the_description_and_both_metadata() {
    let rig = Rig::start().await;
    let claim = rig.claimed().await;
    let task_id = claim["claim"]["task"]["id"].as_str().expect("task id");
    let view = rig.get_as_worker(&format!("/api/tasks/{task_id}")).await;
    assert_shape("task_view", &view);
    assert_eq!(
        view["task"]["task"]["description"],
        "Tag, build and publish."
    );
    assert_eq!(view["task"]["task"]["metadata"], json!({"team": "infra"}));
    assert_eq!(view["task"]["runs"][0]["metadata"]["lane"], "fast");
}

#[tokio::test]
async fn the_run_view_is_the_run_payload_its_task_session_and_summary() {
    let rig = Rig::start().await;
    let claim = rig.claimed().await;
    let run_id = claim["claim"]["run"]["id"].as_str().expect("run id");
    let view = rig.get_as_worker(&format!("/api/task-runs/{run_id}")).await;
    assert_shape("task_run_view", &view);
}

#[tokio::test]
async fn the_task_view_answers_the_operator_checks_an_agent_and_404s_an_unknown_task() {
    let rig = Rig::start().await;
    let claim = rig.claimed().await;
    let path = format!(
        "/api/tasks/{}",
        claim["claim"]["task"]["id"].as_str().expect("task id")
    );
    let get = reqwest::Method::GET;
    let (status, _) = rig.send(get.clone(), &path, &[]).await;
    assert_eq!(status, 200, "no identity header: the operator");
    let session = rig.worker.session_id.as_str();
    let (status, body) = rig
        .send(get.clone(), &path, &[("x-agh-session-id", session)])
        .await;
    assert_eq!(status, 401, "one header: both are checked: {body}");
    let (status, body) = rig
        .send(
            get.clone(),
            &path,
            &[
                ("x-agh-session-id", session),
                ("x-agh-agent", "someone-else"),
            ],
        )
        .await;
    assert!(
        matches!(status, 401 | 403),
        "a wrong agent: {status} {body}"
    );
    let (status, body) = rig
        .send(get, "/api/tasks/task-unknown", &rig.identity())
        .await;
    assert_eq!(status, 404);
    assert_eq!(body, json!({"error": "task: task not found"}));
}

#[test]
fn a_field_beyond_agh_or_a_changed_type_is_a_difference() {
    let reference = json!({"run": {"id": "r", "attempt": 1}, "items": [{"a": 1}], "none": []});
    let mut out = Vec::new();
    shape_differences(&reference, &reference, "", &mut out);
    assert!(out.is_empty(), "{out:?}");
    let richer =
        json!({"run": {"id": "r", "attempt": 1, "metadata": {}}, "items": [{"a": 1}], "none": []});
    let retyped =
        json!({"run": {"id": "r", "attempt": "1"}, "items": [{"a": 1}, {"b": 2}], "none": [1]});
    for (actual, expected) in [
        (richer, vec!["/run/metadata: not in AGH's shape"]),
        (
            retyped,
            vec![
                "/items/1/b: not in AGH's shape",
                "/items/1/a: missing",
                "/none: AGH's is empty here",
                "/run/attempt: a string where AGH has a number",
            ],
        ),
    ] {
        let mut out = Vec::new();
        shape_differences(&reference, &actual, "", &mut out);
        // Object keys come in insertion order: compare the differences as a set.
        let mut expected = expected;
        out.sort();
        expected.sort();
        assert_eq!(out, expected);
    }
}
