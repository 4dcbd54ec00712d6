#!/usr/bin/env bash
# Instructions per message of each `--only cost` row, Lepus beside raw lapin (issue 13).
#
# For each row: `valgrind --tool=callgrind` of `bench --only cost --row ROW N` at N = 1,000 and
# N = 4,000; per message = (count at 4,000 - count at 1,000) / 3,000, so connecting, declaring
# and starting cancel out. A consume row reads a queue filled beforehand by `--fill`, run
# outside valgrind, so that filling is not counted. The broker is another process: only the
# client's instructions are counted (valgrind runs the client's threads one at a time).
#
#   AMQP_ADDR=amqp://127.0.0.1:5672/%2f bash adapters/lepus-bench/cost_instructions.sh [ROW..]
#
# Extra `bench` options go in BENCH_ARGS (e.g. BENCH_ARGS="--size 1048576" with rows
# raw-multi worker for 1 MiB payloads; then use smaller counts: LOW=20 HIGH=80), and KEEP=DIR
# keeps the callgrind files.
set -euo pipefail
shopt -s inherit_errexit   # a failed fill inside $(count ..) stops the script
cd "$(dirname "$0")/../.."
: "${AMQP_ADDR:=amqp://127.0.0.1:5672/%2f}"
export AMQP_ADDR
LOW=${LOW:-1000}
HIGH=${HIGH:-4000}
BENCH_ARGS=${BENCH_ARGS:-}
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p lepus-bench --bin bench
bench="$target/release/bench"
rows=("$@")
if [ ${#rows[@]} -eq 0 ]; then
    rows=(raw-task raw-all publish publish-batch send send-batch
          raw-multi raw-each worker worker-raw worker-events subscription-multi)
fi
# KEEP=DIR keeps the callgrind files there (for `callgrind_annotate --inclusive=yes`).
if [ -n "${KEEP:-}" ]; then
    out=$KEEP
    mkdir -p "$out"
else
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi

count() { # row n -> instructions of the whole client run
    local row=$1 n=$2
    case $row in
        raw-multi|raw-each|worker|worker-raw|worker-events|subscription-multi)
            # shellcheck disable=SC2086
            "$bench" --only cost --fill "$n" $BENCH_ARGS >/dev/null ;;
    esac
    # shellcheck disable=SC2086
    timeout 900 valgrind --tool=callgrind --callgrind-out-file="$out/$row-$n.out" \
        "$bench" --only cost --row "$row" "$n" $BENCH_ARGS >/dev/null 2>"$out/$row-$n.log"
    awk '/^(summary|totals):/ {print $2; exit}' "$out/$row-$n.out"
}

printf '| row | count at %s | count at %s | instructions per message |\n' "$LOW" "$HIGH"
printf '|---|---:|---:|---:|\n'
for row in "${rows[@]}"; do
    low=$(count "$row" "$LOW")
    high=$(count "$row" "$HIGH")
    per=$(( (high - low) / (HIGH - LOW) ))
    printf '| %s | %s | %s | %s |\n' "$row" "$low" "$high" "$per"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
