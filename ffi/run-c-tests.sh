#!/usr/bin/env bash
# The C side of smtps-ffi, for CI: header drift, the header as C99/C11/C++, the C programs built
# against the staticlib and the cdylib (plus ASan/UBSan builds) and driven by real clients,
# the misuse tests, a valgrind run of the misuse program when valgrind is installed, the ABI
# check (ffi/abi-check.sh) and an install into a temporary prefix (ffi/install-test.sh).
# Honours CARGO_TARGET_DIR (default: the workspace target/). Every step is time-bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export SMTPS_C_TESTS_REQUIRED=1

step() { printf '\n==> %s\n' "$*"; }

step "header drift (ffi/check-header.sh)"
timeout 900 bash ffi/check-header.sh

step "cargo build -p smtps-ffi (staticlib + cdylib)"
timeout 1200 cargo build -p smtps-ffi --lib

step "ABI: exported symbols against ffi/abi/symbols.txt (ffi/abi-check.sh)"
timeout 1200 bash ffi/abi-check.sh

step "C programs: static, shared, ASan/UBSan; the header as C99, C11, C++"
timeout 300 make -C tests/c all asan header

step "misuse tests (static, shared, ASan)"
for flavour in static shared asan; do
    timeout 120 tests/c/build/misuse-$flavour > /dev/null
done

if command -v valgrind > /dev/null; then
    step "misuse tests under valgrind"
    timeout 600 valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
        -q tests/c/build/misuse-shared > /dev/null
fi

step "installed with ffi/install.sh, built by pkg-config alone (ffi/install-test.sh)"
# The dev profile by default: the build above already made it, where a release build would
# cost CI minutes; SMTPS_INSTALL_TEST_PROFILE=release tests what users install.
timeout 2400 bash ffi/install-test.sh --profile "${SMTPS_INSTALL_TEST_PROFILE:-dev}"

step "C programs driven by smtplib and openssl s_client (cargo test --test c_programs)"
timeout 1200 cargo test -p smtps-ffi --test c_programs --test version
