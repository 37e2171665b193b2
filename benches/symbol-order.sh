#!/usr/bin/env bash
# Regenerates link/symbol-order.txt: the functions of the agh-worker binary that run while an
# exec-only worker starts, idles in its long-poll and works a few runs, in the order they first
# ran. build.rs hands the list to the linker for release builds (see its comment for why).
#
# usage: benches/symbol-order.sh [RUNS]        (from the repository root; RUNS defaults to 20)
#
# Needs valgrind (callgrind lists every function executed, not a sample), curl and a release
# toolchain. It relinks the release binary with symbols, runs the built-in simulator and the
# worker under callgrind against it, then relinks the shipped (stripped) binary. Run it after
# changes to start-up, the claim loop or the dependencies; `agh-worker bench`'s idle RSS row
# shows when the list has gone stale.
set -euo pipefail

runs=${1:-20}
root=$(pwd)
[[ -f "$root/build.rs" && -d "$root/link" ]] || { echo "run from the repository root" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }
# Under target/, beside the build (a 3-minute link later, a shared /tmp may have been swept).
work="$root/target/symbol-order"
rm -rf "$work" && mkdir -p "$work"
sim_pid=""
cleanup() {
  [[ -n "$sim_pid" ]] && kill "$sim_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# With symbols: the names callgrind reports are the linker's names.
cargo rustc --quiet --release --bin agh-worker -- -C strip=none
exe="$work/agh-worker"
cp target/release/agh-worker "$exe"

"$exe" sim --listen 127.0.0.1:0 >"$work/sim.json" 2>"$work/sim.log" &
sim_pid=$!
for _ in $(seq 50); do [[ -s "$work/sim.json" ]] && break; sleep 0.1; done
sim=$(cat "$work/sim.json")
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$sim"; }
base="http://$(field listen)"

env -i PATH="$PATH" AGH_SESSION_ID="$(field session_id)" AGH_AGENT="$(field agent)" \
  AGH_WORKER__AGH__ENDPOINT="$base" \
  AGH_WORKER__HANDLERS='[{"name":"true","kind":"exec","exec":{"program":"/bin/true"}}]' \
  AGH_WORKER__HEALTH__LISTEN=127.0.0.1:0 \
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/callgrind.out" \
  "$exe" run >"$work/worker.log" 2>&1 &
worker_pid=$!
# The health server logs where it listens (port 0: a free one).
health=""
for _ in $(seq 300); do
  health=$(sed -n 's/.*health server listening.*listen=\(http[^ ]*\).*/\1/p' "$work/worker.log" 2>/dev/null || true)
  [[ -n "$health" ]] && curl -sf "$health/readyz" >/dev/null && break
  sleep 0.1
done
[[ -n "$health" ]] || { echo "the worker did not start:" >&2; cat "$work/worker.log" >&2; exit 1; }
sleep 2 # an idle long-poll or two
for ((i = 0; i < runs; i++)); do
  curl -sf -X POST -H 'Content-Type: application/json' -d "{\"title\":\"order $i\"}" \
    "$base/sim/tasks" >/dev/null
done
sleep 5 # the runs, and back to idle
curl -sf "$health/metrics" >/dev/null
kill -TERM "$worker_pid"
wait "$worker_pid" || true

# Callgrind names each object and function once, as "ob=(n) name" / "fn=(n) name", and by its
# number alone afterwards. Keep the functions whose costs fall in the agh-worker object, in the
# order they first appear.
awk '
  /^c?(ob|fn)=\(/ {
    key = $0; sub(/=.*/, "", key)
    id = $0; sub(/^[a-z]+=\(/, "", id); sub(/\).*/, "", id)
    rest = $0; sub(/^[a-z]+=\([0-9]+\) ?/, "", rest)
    if (key ~ /ob$/) {
      if (rest != "") object[id] = rest
      if (key == "ob") current = object[id]
      next
    }
    if (rest != "") name[id] = rest
    if (key == "fn" && current ~ /agh-worker$/ && name[id] !~ /^0x/ && !(name[id] in seen)) {
      seen[name[id]] = 1; print name[id]
    }
  }
' "$work/callgrind.out" >link/symbol-order.txt
echo "link/symbol-order.txt: $(wc -l <link/symbol-order.txt) functions" >&2

# The shipped binary again: stripped, linked with the new list.
cargo build --quiet --release
