#!/usr/bin/env bash
# Stop the TLS test node started by tls-up.sh and delete its state and certificates.
#
#   ./tls-down.sh          # stop the node, delete $LEPUS_TLS_DIR
#   ./tls-down.sh --keep   # stop the node, keep $LEPUS_TLS_DIR (logs) for inspection
#
# A graceful `rabbitmqctl stop` (bounded), then SIGKILL if the node is still alive. Only a
# beam.smp whose command line carries this node's directory is ever signalled. Safe to run
# when nothing runs.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tls-lib.sh
. "$HERE/tls-lib.sh"

KEEP=0
case "${1:-}" in
    --keep) KEEP=1 ;;
    "") ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (use --keep or nothing)" ;;
esac

if [ ! -e "$LEPUS_TLS_DIR" ]; then
    log "nothing to do: $LEPUS_TLS_DIR does not exist"
    exit 0
fi
[ -f "$LEPUS_TLS_DIR/$LEPUS_TLS_MARKER" ] \
    || die "$LEPUS_TLS_DIR was not created by tls-up.sh; refusing to touch it"
tls_take_lock
T0=$(date +%s%N)

gone() {  # gone <pid> <seconds>: wait until the process is gone (a zombie counts as gone)
    local n=$(( $2 * 10 ))
    while alive "$1" && [ "$n" -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
    ! alive "$1"
}

pids=()
if pid=$(tls_node_pid); then
    kill -CONT "$pid" 2>/dev/null || true
    log "stopping $LEPUS_TLS_NODE (pid $pid)"
    LEPUS_TLS_TIMEOUT=20 tls_cli rabbitmqctl -q stop >/dev/null 2>&1 || true
    if ! gone "$pid" 20; then
        log "$LEPUS_TLS_NODE still alive after 20s: SIGKILL $pid"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    pids+=("$pid")
fi
for pid in $(tls_beam_pids); do
    log "killing stray beam.smp $pid of $LEPUS_TLS_NODE_DIR"
    kill -KILL "$pid" 2>/dev/null || true
    pids+=("$pid")
done
for pid in "${pids[@]}"; do gone "$pid" 10 || die "process $pid did not exit"; done

if [ "$KEEP" = 1 ]; then
    log "stopped in $(( ($(date +%s%N) - T0) / 1000000 ))ms; state kept in $LEPUS_TLS_DIR"
else
    rm -rf "$LEPUS_TLS_DIR"
    rm -f "$LEPUS_TLS_DIR.lock"
    log "stopped and $LEPUS_TLS_DIR removed in $(( ($(date +%s%N) - T0) / 1000000 ))ms"
fi
