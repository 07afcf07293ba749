#!/usr/bin/env bash
# Fails if include/smtps.h differs from what ffi/ generates (CI: header drift).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ffi/regen-header.sh
if ! git diff --exit-code -- include/smtps.h; then
    echo "include/smtps.h is out of date: run ffi/regen-header.sh and commit the result" >&2
    exit 1
fi
