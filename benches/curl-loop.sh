#!/usr/bin/env bash
# The hand-written alternative to agh-worker that `agh-worker bench` compares against: a shell
# loop that claims a run with curl, runs the task (`true`), and completes the run.
#
# usage: curl-loop.sh BASE_URL SESSION_ID AGENT RUNS
#
# It does what such scripts usually do and no more: no heartbeats, no context read, no retries,
# no lease recovery. The run id is read with jq when it is installed (what most people reach
# for), with sed otherwise. Exits non-zero when a claim finds nothing or a call fails.
set -euo pipefail

base=${1:?base URL, e.g. http://127.0.0.1:2123}
session=${2:?session id}
agent=${3:?agent name}
runs=${4:?number of runs}

headers=(-H "X-AGH-Session-ID: $session" -H "X-AGH-Agent: $agent" -H 'Content-Type: application/json')

run_id_of() {
  if command -v jq >/dev/null 2>&1; then
    jq -r '.claim.run.id // empty'
  else
    sed -n 's/.*"run":{[^{}]*"id":"\([^"]*\)".*/\1/p'
  fi
}

for ((i = 0; i < runs; i++)); do
  claim=$(curl -sS -f "${headers[@]}" -X POST -d '{"lease_seconds":60}' "$base/api/agent/tasks/claim-next")
  run_id=$(printf '%s' "$claim" | run_id_of)
  if [[ -z "$run_id" ]]; then
    echo "curl-loop: claim $i found nothing to do" >&2
    exit 1
  fi
  true
  curl -sS -f -o /dev/null "${headers[@]}" -X POST -d '{"result":{"ok":true}}' \
    "$base/api/agent/tasks/$run_id/complete"
done
