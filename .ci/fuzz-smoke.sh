#!/usr/bin/env bash
# Fuzz smoke test: builds every cargo-fuzz target with nightly and runs each for N seconds
# (default 30) on a copy of its committed corpus, so CI never grows fuzz/corpus/.
# Any crash fails the script and prints the crashing input as a hexdump.
#
#   .ci/fuzz-smoke.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-30}"
targets=(command session data_decoder tls_transport conn proxy_header)

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: installing it"
    cargo +nightly install cargo-fuzz --locked
fi

echo "==> cargo +nightly fuzz build"
cargo +nightly fuzz build

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

status=0
for target in "${targets[@]}"; do
    corpus="$work/corpus-$target"
    artifacts="$work/artifacts-$target"
    mkdir -p "$corpus" "$artifacts"
    cp -R "corpus/$target/." "$corpus/" 2>/dev/null || true
    if [ -d "regressions/$target" ]; then
        cp -R "regressions/$target/." "$corpus/"
    fi
    echo "==> fuzz $target for ${seconds}s ($(find "$corpus" -type f | wc -l) inputs)"
    if ! cargo +nightly fuzz run "$target" "$corpus" -- \
        -max_total_time="$seconds" -dict=smtp.dict -print_final_stats=1 \
        -artifact_prefix="$artifacts/" >"$work/$target.log" 2>&1; then
        status=1
        echo "FAILED: $target"
        grep -E "panicked at|^thread|ERROR: libFuzzer|SUMMARY" -A2 "$work/$target.log" | head -40 || true
        for input in "$artifacts"/*; do
            [ -f "$input" ] || continue
            echo "--- crashing input $(basename "$input") ($(wc -c <"$input") octets):"
            od -A x -t x1z -v "$input" | head -200
            echo "--- reproduce: cd fuzz && cargo +nightly fuzz run $target <file>"
            echo "--- or:        cargo run -p smtps-fuzzing --example replay -- --show $target <file>"
        done
    else
        grep -E "^stat::number_of_executed_units|^#[0-9]+ +DONE" "$work/$target.log" | tail -2 || true
    fi
done
exit "$status"
