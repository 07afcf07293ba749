#!/usr/bin/env bash
# The ABI check of libsmtps.so: its exported symbols against ffi/abi/symbols.txt (the sorted
# names, one a line, as `nm -D --defined-only` shows them), and against include/smtps.h.
#
#   ffi/abi-check.sh [--lib PATH]            check (builds the dev cdylib unless --lib)
#   ffi/abi-check.sh --update [--lib PATH]   rewrite ffi/abi/symbols.txt from the library
#
# Fails when
#   - a listed symbol is gone: a breaking change. Bump the SONAME (the version's minor while
#     0.x, the major from 1.0: ffi/build.rs) and update the list;
#   - a symbol is new: additions are reviewed. Run --update and commit ffi/abi/symbols.txt
#     with the change that adds it;
#   - the library exports anything not named smtps_* (rustc exports only the #[no_mangle]
#     items of a cdylib, so this is a missing prefix or a leaked dependency symbol);
#   - include/smtps.h declares a function the library does not export, or the reverse.
#
# Honours CARGO_TARGET_DIR. Called by ffi/run-c-tests.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LIST=ffi/abi/symbols.txt

update=0
lib=
while [ $# -gt 0 ]; do
    case "$1" in
        --update) update=1; shift ;;
        --lib) lib=${2:?--lib needs a path}; shift 2 ;;
        --lib=*) lib=${1#*=}; shift ;;
        *) echo "usage: ffi/abi-check.sh [--update] [--lib PATH]" >&2; exit 2 ;;
    esac
done
if [ -z "$lib" ]; then
    timeout 1200 "${CARGO:-cargo}" build -q -p smtps-ffi --lib
    lib=${CARGO_TARGET_DIR:-$ROOT/target}/debug/libsmtps.so
fi
[ -f "$lib" ] || { echo "abi-check: no library at $lib" >&2; exit 1; }

indent() { printf '%s\n' "$1" | sed 's/^/    /' >&2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Defined dynamic symbols, names only (a version suffix, if one ever appears, dropped).
nm -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }' | sed 's/@.*//' | LC_ALL=C sort -u \
    > "$work/exported"
failed=0

leaked=$(grep -v '^smtps_' "$work/exported" || true)
if [ -n "$leaked" ]; then
    echo "abi-check: $lib exports symbols outside smtps_*:" >&2
    indent "$leaked"
    echo "  name exports smtps_*, and keep dependencies' symbols out of the dynamic table" >&2
    failed=1
fi
grep '^smtps_' "$work/exported" > "$work/actual" || true

# Functions the header declares: cbindgen's `type smtps_name(` lines, doc comments left out.
grep -v -E '^[[:space:]]*(/\*|\*)' include/smtps.h | grep -oE '\bsmtps_[a-z0-9_]+\(' \
    | tr -d '(' | LC_ALL=C sort -u > "$work/declared"
undeclared=$(LC_ALL=C comm -23 "$work/actual" "$work/declared")
unexported=$(LC_ALL=C comm -13 "$work/actual" "$work/declared")
if [ -n "$unexported" ]; then
    echo "abi-check: include/smtps.h declares functions $lib does not export:" >&2
    indent "$unexported"
    echo "  rebuild the library, or regenerate the header (ffi/regen-header.sh)" >&2
    failed=1
fi
if [ -n "$undeclared" ]; then
    echo "abi-check: $lib exports functions include/smtps.h does not declare:" >&2
    indent "$undeclared"
    echo "  regenerate the header (ffi/regen-header.sh)" >&2
    failed=1
fi

if [ "$update" = 1 ]; then
    [ "$failed" = 0 ] || exit 1
    mkdir -p "$(dirname "$LIST")"
    if [ -f "$LIST" ]; then
        LC_ALL=C comm -23 "$LIST" "$work/actual" | sed 's/^/removed: /'
        LC_ALL=C comm -13 "$LIST" "$work/actual" | sed 's/^/added: /'
    fi
    cp "$work/actual" "$LIST"
    echo "abi-check: wrote $LIST ($(wc -l < "$LIST") symbols); commit it with the change"
    exit 0
fi

[ -f "$LIST" ] || { echo "abi-check: $LIST is missing: run ffi/abi-check.sh --update" >&2; exit 1; }
if ! LC_ALL=C sort -c "$LIST" 2> /dev/null; then
    echo "abi-check: $LIST is not sorted (LC_ALL=C): run ffi/abi-check.sh --update" >&2
    exit 1
fi
removed=$(LC_ALL=C comm -23 "$LIST" "$work/actual")
added=$(LC_ALL=C comm -13 "$LIST" "$work/actual")
if [ -n "$removed" ]; then
    echo "abi-check: symbols of $LIST no longer exported:" >&2
    indent "$removed"
    echo "breaking change: bump the SONAME and update ffi/abi/symbols.txt" \
        "(raise the version's minor while 0.x, the major from 1.0: see ffi/build.rs;" \
        "then ffi/abi-check.sh --update)" >&2
    failed=1
fi
if [ -n "$added" ]; then
    echo "abi-check: note: new exports, not yet in $LIST:" >&2
    indent "$added"
    echo "  additions keep the SONAME; review them, run ffi/abi-check.sh --update and commit" \
        "$LIST with the change that adds them" >&2
    failed=1
fi
[ "$failed" = 0 ] || exit 1
echo "abi-check: OK, $(wc -l < "$work/actual") smtps_* symbols as in $LIST, all declared in include/smtps.h, nothing else exported"
