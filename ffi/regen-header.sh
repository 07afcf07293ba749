#!/usr/bin/env bash
# Regenerates include/smtps.h from ffi/ with the pinned cbindgen: the one documented command.
# Installs that cbindgen version first if it is missing or a different version.
set -euo pipefail
CBINDGEN_VERSION=0.29.4
cd "$(dirname "$0")"
if [ "$(cbindgen --version 2>/dev/null || true)" != "cbindgen $CBINDGEN_VERSION" ]; then
    echo "installing cbindgen $CBINDGEN_VERSION" >&2
    cargo install cbindgen --version "$CBINDGEN_VERSION" --locked
fi
cbindgen --quiet --config cbindgen.toml --crate smtps-ffi --output ../include/smtps.h .
echo "include/smtps.h regenerated" >&2
