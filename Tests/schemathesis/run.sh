#!/usr/bin/env bash
# Checks the API against its own OpenAPI document (docs/swiftlet-api.yaml) with schemathesis,
# from PyPI into a git-ignored virtual environment: every documented operation gets generated
# requests, valid and invalid, and every answer must match the document (status codes, content
# type, body schema) and never be a 5xx.
#
#   Tests/schemathesis/run.sh [MAX_EXAMPLES]      default 30 per operation
#
# swiftlet runs with --debug-simulated-vm (no KVM needed, kernel files not read), so InstanceStart
# succeeds and the running and paused states are reached too. schemathesis speaks TCP; socat
# carries its connections to the Unix socket.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
examples=${1:-30}
venv=.build-schemathesis/venv
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "schemathesis>=4,<5"
fi
command -v socat >/dev/null || { echo "schemathesis/run.sh: socat is needed" >&2; exit 2; }
swift build -q --product swiftlet
work=$(mktemp -d)
sock=$work/api.sock
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Both run in the scratch folder: the generated log and metrics paths are created there.
(cd "$work" && exec "$root/.build/debug/swiftlet" --api-sock "$sock" --debug-simulated-vm --no-seccomp >swiftlet.out 2>&1) &
vmm=$!
socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" "UNIX-CONNECT:$sock" &
proxy=$!
trap 'kill $vmm $proxy 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
status=0
# Two checks are left out because Firecracker's API, which Swiftlet follows, answers otherwise:
# unsupported_method expects 405 where Firecracker answers 400 ("Invalid request method and/or
# path"), and positive_data_acceptance expects every schema-valid body to be accepted, where
# Firecracker (and Swiftlet) refuse with 400 what the VM's state or the host forbids (pausing a VM
# that has not started, more memory than the host has, a log file that cannot be opened).
(cd "$work" && "$root/$venv/bin/schemathesis" run "$root/docs/swiftlet-api.yaml" --url "http://127.0.0.1:$port" \
    --checks all --exclude-checks unsupported_method,positive_data_acceptance \
    --max-examples "$examples" --phases examples,coverage,fuzzing --seed 1 --no-color) || status=$?
if ! kill -0 $vmm 2>/dev/null; then
    echo "schemathesis/run.sh: swiftlet ended during the run:" >&2
    cat "$work/swiftlet.out" >&2
    status=1
fi
exit $status
