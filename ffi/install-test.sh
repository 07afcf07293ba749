#!/usr/bin/env bash
# Installs libsmtps into a temporary prefix with ffi/install.sh and builds the C programs
# tests/c/{host,conn_server,misuse}.c as a C host would: with nothing but
# PKG_CONFIG_PATH=PREFIX/lib/pkgconfig (no -I or -L into the source tree), against the shared
# library and against libsmtps.a. Then:
#
#   - the installed library's SONAME, and NEEDED of the shared programs (the SONAME, not
#     libsmtps.so); no libsmtps in NEEDED of the static ones;
#   - misuse (shared with LD_LIBRARY_PATH, shared with an rpath, static) exits 0; the shared
#     one again under valgrind (definite leaks are errors) when valgrind is installed;
#   - host and conn_server, shared and static: start, print their ports, take one message
#     each from Python smtplib over implicit TLS (host: STARTTLS too) with a self-signed
#     openssl certificate as the CA, spool it byte-exact, and exit 0 when stdin closes;
#   - a --destdir/--libdir install writes the files where a packager expects them.
#
#   ffi/install-test.sh [--profile release|dev]     (default release)
#
# Needs cc, pkg-config, readelf, strip, python3, openssl. Every step is bounded by timeout.
# Honours CARGO_TARGET_DIR and CC. Leaves nothing behind unless a step fails (then the work
# directory is kept and named).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
case "${1:-}" in
    --profile) profile=${2:?--profile needs a name} ;;
    --profile=*) profile=${1#*=} ;;
    "") ;;
    *) echo "usage: ffi/install-test.sh [--profile release|dev]" >&2; exit 2 ;;
esac

CC=${CC:-cc}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/smtps-install-test.XXXXXX")
PREFIX=$WORK/prefix
BIN=$WORK/bin
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do
        kill "$pid" 2> /dev/null || true
    done
    if [ "$status" = 0 ]; then
        rm -rf "$WORK"
    else
        echo "install-test: FAILED; work directory kept: $WORK" >&2
    fi
}
trap cleanup EXIT

step() { printf '\n--> %s\n' "$*"; }
fail() {
    echo "install-test: $*" >&2
    exit 1
}

step "ffi/install.sh --prefix $PREFIX --profile $profile"
timeout 1800 bash ffi/install.sh --prefix "$PREFIX" --profile "$profile"

# From here on, only what a C host has: the installed tree and pkg-config.
export PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig
unset PKG_CONFIG_LIBDIR PKG_CONFIG_SYSROOT_DIR

step "pkg-config"
version=$(timeout 10 pkg-config --modversion smtps)
libdir=$(timeout 10 pkg-config --variable=libdir smtps)
[ "$libdir" = "$PREFIX/lib" ] || fail "pkg-config libdir is $libdir, expected $PREFIX/lib"
read -ra cflags <<< "$(timeout 10 pkg-config --cflags smtps)"
read -ra libs <<< "$(timeout 10 pkg-config --libs smtps)"
# The static build: the same flags, with libsmtps.a named instead of -lsmtps (which would pick
# libsmtps.so), and the system libraries it needs (Libs.private).
read -ra static_libs <<< "$(timeout 10 pkg-config --static --libs smtps | sed 's/-lsmtps\b/-l:libsmtps.a/')"
echo "smtps $version"
echo "shared: ${cflags[*]} ${libs[*]}"
echo "static: ${cflags[*]} ${static_libs[*]}"

step "SONAME of the installed library"
soname=$(readelf -d "$libdir/libsmtps.so" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
case "$soname" in
    libsmtps.so.[0-9]*) echo "SONAME $soname" ;;
    *) fail "$libdir/libsmtps.so has SONAME '${soname:-none}', expected libsmtps.so.<version>" ;;
esac
if [ ! -f "$libdir/libsmtps.so.$version" ] || [ -L "$libdir/libsmtps.so.$version" ]; then
    fail "$libdir/libsmtps.so.$version is not a file"
fi
[ "$(readlink -f "$libdir/$soname")" = "$libdir/libsmtps.so.$version" ] \
    || fail "$libdir/$soname does not lead to libsmtps.so.$version"
[ "$(readlink -f "$libdir/libsmtps.so")" = "$libdir/libsmtps.so.$version" ] \
    || fail "$libdir/libsmtps.so does not lead to libsmtps.so.$version"
if readelf -S "$libdir/libsmtps.a" 2> /dev/null | grep -q '\.debug_info'; then
    fail "$libdir/libsmtps.a still has debug info"
fi

step "building host, conn_server, misuse: shared and static, from the installed tree only"
mkdir -p "$BIN"
warn=(-std=c11 -Wall -Wextra -Wpedantic -Werror -g -O1 -pthread)
for program in host conn_server misuse; do
    timeout 120 "$CC" "${warn[@]}" "${cflags[@]}" "tests/c/$program.c" "${libs[@]}" \
        -o "$BIN/$program-shared"
    timeout 120 "$CC" "${warn[@]}" "${cflags[@]}" "tests/c/$program.c" "${static_libs[@]}" \
        -o "$BIN/$program-static"
done
# The alternative to LD_LIBRARY_PATH: the library's directory recorded in the program.
timeout 120 "$CC" "${warn[@]}" "${cflags[@]}" tests/c/misuse.c "${libs[@]}" \
    "-Wl,-rpath,$libdir" -o "$BIN/misuse-rpath"

step "NEEDED: the SONAME in the shared programs, no libsmtps in the static ones"
for program in host conn_server misuse; do
    needed=$(readelf -d "$BIN/$program-shared" | sed -n 's/.*(NEEDED).*\[\(.*\)\].*/\1/p')
    grep -qx "$soname" <<< "$needed" || fail "$program-shared NEEDS: $needed (no $soname)"
    others=$(grep '^libsmtps' <<< "$needed" | grep -vx "$soname" || true)
    [ -z "$others" ] || fail "$program-shared NEEDS another libsmtps too: $others"
    if readelf -d "$BIN/$program-static" | grep -q 'NEEDED.*libsmtps'; then
        fail "$program-static depends on a shared libsmtps"
    fi
done
echo "NEEDED $soname"
resolved=$(LD_LIBRARY_PATH=$libdir timeout 10 ldd "$BIN/misuse-shared" | awk -v s="$soname" '$1 == s { print $3 }')
[ "$resolved" = "$libdir/$soname" ] || fail "misuse-shared loads '$resolved', not $libdir/$soname"
resolved=$(timeout 10 ldd "$BIN/misuse-rpath" | awk -v s="$soname" '$1 == s { print $3 }')
[ "$resolved" = "$libdir/$soname" ] || fail "misuse-rpath loads '$resolved', not $libdir/$soname"

step "misuse: shared (LD_LIBRARY_PATH), shared (rpath), static"
LD_LIBRARY_PATH=$libdir timeout 120 "$BIN/misuse-shared" > /dev/null
timeout 120 "$BIN/misuse-rpath" > /dev/null
timeout 120 "$BIN/misuse-static" > /dev/null
if command -v valgrind > /dev/null; then
    step "misuse (shared) under valgrind"
    LD_LIBRARY_PATH=$libdir timeout 600 valgrind --error-exitcode=1 --leak-check=full \
        --errors-for-leak-kinds=definite -q "$BIN/misuse-shared" > /dev/null
fi

step "host and conn_server take a message from smtplib"
CERT=$WORK/cert.pem
KEY=$WORK/key.pem
timeout 60 openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$KEY" -out "$CERT" -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost 2> /dev/null
MESSAGE=$WORK/message.eml
{
    printf 'From: sender@example.org\r\nTo: rcpt@example.net\r\nSubject: install test\r\n\r\n'
    printf 'Sent to a program built from the installed libsmtps.\r\n'
    printf '.a line that starts with a dot\r\n'
    for i in $(seq 1 200); do printf 'line %04d %070d\r\n' "$i" 0; done
} > "$MESSAGE"

# smoke NAME BINARY MODE_ARG USER PASSWORD CLIENT_MODE...: starts BINARY (stdin held open by
# a FIFO), sends the message once per CLIENT_MODE to the port(s) it prints (host: implicit TLS
# on the first, STARTTLS on the second), closes stdin, checks exit 0 and the spool.
smoke() {
    local name=$1 binary=$2 mode_arg=$3 user=$4 password=$5
    shift 5
    local dir=$WORK/$name
    mkdir -p "$dir/spool"
    mkfifo "$dir/stdin"
    LD_LIBRARY_PATH=$libdir timeout 120 "$binary" "$mode_arg" "$dir/spool" "$CERT" "$KEY" \
        < "$dir/stdin" > "$dir/stdout" 2> "$dir/stderr" &
    local pid=$!
    pids+=("$pid")
    exec 3> "$dir/stdin"
    local ports=() tries=0
    until read -ra ports < <(sed -n '1{s/^PORTS\{0,1\} //p}' "$dir/stdout") && [ ${#ports[@]} -gt 0 ]; do
        tries=$((tries + 1))
        if [ "$tries" -gt 300 ] || ! kill -0 "$pid" 2> /dev/null; then
            exec 3>&-
            cat "$dir/stderr" >&2
            fail "$name printed no ports"
        fi
        sleep 0.1
    done
    local index=0 client_mode
    for client_mode in "$@"; do
        timeout 60 python3 tests/c/client.py send "$client_mode" "${ports[$index]}" "$CERT" \
            "$user" "$password" "$MESSAGE" rcpt@example.net > "$dir/client-$index" \
            || { cat "$dir/client-$index" "$dir/stderr" >&2; fail "$name: smtplib ($client_mode) failed"; }
        index=$((index + 1))
    done
    exec 3>&-
    local status=0
    wait "$pid" || status=$?
    [ "$status" = 0 ] || { cat "$dir/stderr" >&2; fail "$name exited with $status after stdin closed"; }
    local spooled=0 file
    while IFS= read -r file; do
        cmp -s "$file" "$MESSAGE" || fail "$name spooled $file, which differs from the message sent"
        spooled=$((spooled + 1))
    done < <(find "$dir/spool" -name '*.eml' -type f)
    [ "$spooled" = "$#" ] || fail "$name spooled $spooled messages, expected $#"
    echo "$name: listened on ${ports[*]}, spooled $spooled message(s) byte-exact, exited 0"
}
for flavour in shared static; do
    smoke "host-$flavour" "$BIN/host-$flavour" threads alice wonderland implicit starttls
    smoke "conn_server-$flavour" "$BIN/conn_server-$flavour" implicit anyone secret implicit
done

step "examples/c: the three example hosts built by pkg-config alone, shared and static, run by test.py"
for link in shared static; do
    timeout 300 make -s -C examples/c clean > /dev/null
    timeout 300 make -s -C examples/c LINK=$link test \
        || fail "examples/c ($link) failed: make -C examples/c LINK=$link test"
done
if command -v valgrind > /dev/null; then
    step "examples/c under valgrind (shared, from the installed prefix)"
    timeout 1200 make -s -C examples/c LINK=shared valgrind \
        || fail "examples/c under valgrind failed: make -C examples/c LINK=shared valgrind"
fi
timeout 60 make -s -C examples/c clean > /dev/null

step "a staged install (--destdir, --libdir) for packagers"
timeout 300 bash ffi/install.sh --no-build --profile "$profile" --destdir "$WORK/stage" \
    --prefix /opt/smtps --libdir lib/x86_64-linux-gnu > /dev/null
staged=$WORK/stage/opt/smtps
for file in "lib/x86_64-linux-gnu/libsmtps.so.$version" "lib/x86_64-linux-gnu/$soname" \
    lib/x86_64-linux-gnu/libsmtps.so lib/x86_64-linux-gnu/libsmtps.a include/smtps.h; do
    [ -e "$staged/$file" ] || fail "staged install lacks $file"
done
pc=$staged/lib/x86_64-linux-gnu/pkgconfig/smtps.pc
grep -qx 'prefix=/opt/smtps' "$pc" || fail "$pc does not name prefix /opt/smtps"
# shellcheck disable=SC2016 # a literal ${prefix}, as pkg-config files spell it
grep -qx 'libdir=${prefix}/lib/x86_64-linux-gnu' "$pc" || fail "$pc has the wrong libdir"
echo "staged: $staged"

echo
echo "install-test: OK (libsmtps $version, SONAME $soname)"
