#!/usr/bin/env bash
# Instructions per decode of a JSON envelope, with callgrind: the count at 4,000 decodes minus
# the count at 1,000, divided by 3,000 (start-up and set-up cancel out). Current decoder,
# the reference model (the decoder before issue 13) and serde_json, in one run; then the
# 1 MiB payloads (count at 4 minus count at 1, divided by 3 and by the input size).
#
#   bash core/benches/decode_instructions.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}/ref"
RUSTFLAGS="--cfg lepus_reference" CARGO_TARGET_DIR="$target" \
    cargo build --release -q -p lepus-core --example decode_count
bin="$target/release/examples/decode_count"

count() { # decoder input n -> instructions
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" "$3" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

per() { # decoder input low high
    local lo hi
    lo=$(count "$1" "$2" "$3")
    hi=$(count "$1" "$2" "$4")
    echo $(( (hi - lo) / ($4 - $3) ))
}

echo "talk message (159 bytes), instructions per decode:"
for d in lepus reference serde_json lepus_raw reference_raw; do
    printf '  %-14s %s\n' "$d" "$(per "$d" talk 1000 4000)"
done
for input in string records; do
    size=$("$bin" lepus_raw "$input" 0 | cut -d' ' -f1)
    echo "1 MiB payload ($input, $size bytes), decode_json_raw instructions per byte:"
    for d in lepus_raw reference_raw; do
        n=$(per "$d" "$input" 1 4)
        printf '  %-14s %s (%s per decode)\n' "$d" "$(echo "scale=2; $n / $size" | bc)" "$n"
    done
done
