#!/usr/bin/env bash
# Idle USS of an installed `serve` (agent on / --no-monitor) vs the baselines, each process alone.
#
#     benchmarks/serve_uss.sh <installed launcher> <model.onnx> [rounds] [signed launcher]
#
# serve_throughput.py starts every server from a Python process that has imported numpy,
# onnxruntime and scikit-learn from the same venv, so a source-checkout server (and the stdlib
# and uvicorn baselines) shares those library pages with its parent and they leave its USS;
# the installed executable maps its own copies and is charged for all of them. Here the parent
# is this shell and one server runs at a time, so USS is each server's whole private memory
# (the issue's reading: 55.0 MB for the stdlib server). Needs the venv's baselines
# (benchmarks/_serve_baselines.py); the launcher is `<prefix>/<name>/current/<name>` after
# `<executable> install --prefix <prefix> --allow-unsigned`. The optional signed launcher is
# the same model built `--sign-key K.key` and installed `--trust-key K.pub` (the secure
# default: every start verifies manifest.sig); it adds a row per round.
set -euo pipefail
launcher=$1 onnx=$2 rounds=${3:-3} signed=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-$here/../.venv/bin/python}
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
mem() { awk '/^Private_(Clean|Dirty)/ {u+=$2} /^Rss/ {r=$2} END {printf "USS %.1f MB RSS %.1f MB", u/1024, r/1024}' "/proc/$1/smaps_rollup"; }
one() {  # start, wait until it answers (any HTTP status), read its memory, stop
    "$@" >/dev/null 2>&1 & local pid=$!
    for _ in $(seq 1 300); do
        curl -s -o /dev/null "http://127.0.0.1:$port/" && break
        sleep 0.1
    done
    sleep 2  # settle: the agent's first tick
    mem "$pid"; kill "$pid"; wait "$pid" 2>/dev/null || true
}
port=18171
for r in $(seq 1 "$rounds"); do
    echo "round $r  installed, agent on:     $(one "$launcher" serve --port $port)"
    if [ -n "$signed" ]; then
        echo "round $r  signed, agent on:        $(one "$signed" serve --port $port)"
    fi
    echo "round $r  installed, --no-monitor: $(one "$launcher" serve --port $port --no-monitor)"
    echo "round $r  stdlib + onnxruntime:    $(one "$py" "$here/_serve_baselines.py" stdlib "$onnx" $port)"
    echo "round $r  uvicorn + onnxruntime:   $(one "$py" "$here/_serve_baselines.py" uvicorn "$onnx" $port)"
done
