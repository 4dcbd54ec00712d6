# shellcheck shell=bash
# Settings and helpers of tls-up.sh / tls-down.sh. Sourced, never run. Reuses the test
# cluster's helpers (clean_rmq_env, alive, port_in_use, require_tools); nothing here touches
# the default node (rabbit@localhost, 5672) or the test cluster (lp1..lp3, 5681-5683).
HERE_TLS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../cluster/cluster-lib.sh
. "$HERE_TLS/../cluster/cluster-lib.sh"

# --- settings (override with env vars) ---------------------------------------------------------
# Where the node's state, configuration and the throw-away certificates live; deleted by
# tls-down.sh.
LEPUS_TLS_DIR=${LEPUS_TLS_DIR:-${TMPDIR:-/tmp}/lepus-tls-$(id -u)}
LEPUS_TLS_NODE=${LEPUS_TLS_NODE:-lptls@localhost}
# amqps on this port (on 127.0.0.1, and on 127.0.0.2 for the wrong-host-name test); no plain
# AMQP listener. The Erlang distribution port is this + 20000 (25671).
LEPUS_TLS_PORT=${LEPUS_TLS_PORT:-5671}
LEPUS_TLS_DIST_PORT=${LEPUS_TLS_DIST_PORT:-$((LEPUS_TLS_PORT + 20000))}
# Upper bound, in seconds, for booting and stopping.
LEPUS_TLS_TIMEOUT=${LEPUS_TLS_TIMEOUT:-60}

LEPUS_TLS_MARKER=".lepus-tls-node"
LEPUS_TLS_NODE_DIR="$LEPUS_TLS_DIR/node"

log() { printf '[lepus-tls %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[lepus-tls] ERROR: %s\n' "$*" >&2; exit 1; }

# tls_cli <tool> [args...]: a RabbitMQ CLI tool against our node with its own cookie, bounded.
tls_cli() {
    local tool=$1; shift
    (
        cd "$LEPUS_TLS_DIR" || exit 1
        clean_rmq_env
        export HOME="$LEPUS_TLS_NODE_DIR"
        export RABBITMQ_CONF_ENV_FILE="$LEPUS_TLS_NODE_DIR/rabbitmq-env.conf"
        export ERL_EPMD_ADDRESS=127.0.0.1
        exec timeout --kill-after=5 "$((LEPUS_TLS_TIMEOUT + 10))" \
            "$RMQ_SBIN/$tool" -n "$LEPUS_TLS_NODE" "$@"
    )
}

# PID of our node if it runs: a beam.smp whose command line carries our node directory.
tls_node_pid() {
    local pid
    [ -s "$LEPUS_TLS_NODE_DIR/pid" ] || return 1
    pid=$(tr -dc '0-9' < "$LEPUS_TLS_NODE_DIR/pid")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = beam.smp ] || return 1
    tr '\0' '\n' < "/proc/$pid/cmdline" | grep -qxF -- "$LEPUS_TLS_NODE_DIR" || return 1
    echo "$pid"
}

# Any beam.smp of our node directory, pid file or not.
tls_beam_pids() {
    local p comm
    for p in /proc/[0-9]*; do
        # `read`, a builtin: no process per entry of /proc
        comm=; read -r comm < "$p/comm" 2>/dev/null || true
        [ "$comm" = beam.smp ] || continue
        if tr '\0' '\n' < "$p/cmdline" 2>/dev/null | grep -qxF -- "$LEPUS_TLS_NODE_DIR"; then
            echo "${p#/proc/}"
        fi
    done
}

tls_take_lock() {
    mkdir -p "$(dirname "$LEPUS_TLS_DIR")"
    exec 8>"$LEPUS_TLS_DIR.lock"
    flock -w "$LEPUS_TLS_TIMEOUT" 8 || die "another tls-up/down holds $LEPUS_TLS_DIR.lock"
}
