#!/bin/sh
# Example agh-worker exec handler (POSIX sh, coreutils, sed; no jq).
#
# Protocol (docs/exec-protocol.md): the first stdin line is the task document as JSON; stdout
# lines that are JSON objects with a known "type" talk to the worker; anything else is log.
# Exit 0 completes the run, 75 gives it back to the queue, anything else fails it.
#
# Behaviour, driven by the task title (case-insensitive), for demos and tests:
#   contains "fail"    -> exit 1 with a message on stderr (the run fails)
#   contains "release" -> exit 75 (the run is released for another attempt)
#   contains "slow"    -> sleeps a moment before finishing
#   otherwise          -> prints a result line and exits 0

set -u

trap 'echo "example handler: stopped by the worker" >&2; exit 143' TERM

if ! IFS= read -r task; then
    echo "example handler: no task document on stdin" >&2
    exit 1
fi

# json_string NAME: the first string value of key NAME in the task line, still JSON-escaped
# (so it can be put back into a JSON string as it is). Empty when absent.
json_string() {
    pattern="\"$1\":\""
    rest=${task#*"$pattern"}
    if [ "$rest" = "$task" ]; then
        return 0
    fi
    printf '%s\n' "$rest" | sed -n 's/^\([^"\\]*\(\\.[^"\\]*\)*\)".*$/\1/p'
}

progress() {
    printf '{"type":"progress","text":"%s"}\n' "$1"
}

run_id=$(json_string run_id)
title=$(json_string title)
lower=$(printf '%s' "$title" | tr '[:upper:]' '[:lower:]')

# A plain line: not protocol, so the worker keeps it as log.
echo "example handler: run $run_id, attempt ${AGH_WORKER_ATTEMPT:-?}"
progress "started: $title"

case $lower in
*fail*)
    echo "example handler: the task title asks for a failure" >&2
    exit 1
    ;;
*release*)
    echo "example handler: the task title asks to release the run" >&2
    exit 75
    ;;
esac

case $lower in
*slow*)
    progress "working slowly"
    sleep 2
    ;;
esac

progress "finished"
printf '{"type":"result","result":{"summary":"%s","run_id":"%s"}}\n' "handled: $title" "$run_id"
exit 0
