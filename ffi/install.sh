#!/usr/bin/env bash
# Builds libsmtps (release) and installs it for C hosts, found by pkg-config alone:
#
#   ffi/install.sh [--prefix DIR] [--destdir DIR] [--libdir DIR] [--includedir DIR]
#                  [--profile NAME] [--no-build] [--no-strip]
#
#   PREFIX/lib/libsmtps.so.0.1.0            the shared library, SONAME libsmtps.so.0.1
#   PREFIX/lib/libsmtps.so.0.1 -> libsmtps.so.0.1.0   what the loader looks for
#   PREFIX/lib/libsmtps.so -> libsmtps.so.0.1         what -lsmtps finds at link time
#   PREFIX/lib/libsmtps.a                   the static library
#   PREFIX/include/smtps.h                  the header
#   PREFIX/lib/pkgconfig/smtps.pc           from ffi/smtps.pc.in
#
# --prefix defaults to /usr/local; --libdir (PREFIX/lib) and --includedir (PREFIX/include) may
# be absolute or relative to the prefix (--libdir lib/x86_64-linux-gnu). --destdir stages the
# tree under DIR for packaging: files land in DESTDIR/PREFIX/..., while smtps.pc names PREFIX.
# Both libraries are installed with `strip --strip-debug` (symbols kept, DWARF dropped: the
# release profile has debug = 1); --no-strip keeps the debug info. --no-build installs what
# `cargo build --release -p smtps-ffi` left in the target directory (CARGO_TARGET_DIR or the
# workspace target/). --profile dev installs the debug build instead (CI's install test, to
# spare a release build; the default is release). The version and the SONAME come from the workspace Cargo.toml (see
# ffi/build.rs for the SONAME rule). Linux/ELF only; no cross-compilation.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

prefix=/usr/local
destdir=
libdir=
includedir=
build=1
profile=release
strip_debug=1
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
        --destdir=*) destdir=${1#*=}; shift ;;
        --libdir) libdir=${2:?--libdir needs a directory}; shift 2 ;;
        --libdir=*) libdir=${1#*=}; shift ;;
        --includedir) includedir=${2:?--includedir needs a directory}; shift 2 ;;
        --includedir=*) includedir=${1#*=}; shift ;;
        --profile) profile=${2:?--profile needs a name}; shift 2 ;;
        --profile=*) profile=${1#*=}; shift ;;
        --no-build) build=0; shift ;;
        --no-strip) strip_debug=0; shift ;;
        -h | --help) usage ;;
        *) echo "install.sh: unknown argument: $1" >&2; usage ;;
    esac
done
case "$prefix" in
    /*) ;;
    *) echo "install.sh: --prefix must be absolute: $prefix" >&2; exit 2 ;;
esac
prefix=${prefix%/}
[ -n "$prefix" ] || prefix=/
absolute() { # a directory given relative to the prefix
    case "$1" in /*) printf '%s\n' "${1%/}" ;; *) printf '%s/%s\n' "${prefix%/}" "${1%/}" ;; esac
}
libdir=$(absolute "${libdir:-lib}")
includedir=$(absolute "${includedir:-include}")

CARGO=${CARGO:-cargo}
STRIP=${STRIP:-strip}
READELF=${READELF:-readelf}
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}

# The version of the package (version.workspace = true), e.g. 0.1.0.
version=$("$CARGO" pkgid -p smtps-ffi | sed 's/.*[#@]//')
case "$version" in
    [0-9]*.[0-9]*.[0-9]*) ;;
    *) echo "install.sh: cannot read the version (cargo pkgid said: $version)" >&2; exit 1 ;;
esac
IFS=.- read -r major minor patch _ <<< "$version"
if [ "$major" = 0 ] && [ "$minor" = 0 ]; then
    soversion=0.0.$patch
elif [ "$major" = 0 ]; then
    soversion=0.$minor
else
    soversion=$major
fi
soname=libsmtps.so.$soversion
real=libsmtps.so.$major.$minor.$patch

if [ "$build" = 1 ]; then
    "$CARGO" build --profile "$profile" -p smtps-ffi --lib
fi
case "$profile" in
    dev) built=$target_dir/debug ;;
    *) built=$target_dir/$profile ;;
esac
for file in libsmtps.so libsmtps.a; do
    [ -f "$built/$file" ] || { echo "install.sh: $built/$file is missing: build it first" >&2; exit 1; }
done
actual=$("$READELF" -d "$built/libsmtps.so" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
if [ "$actual" != "$soname" ]; then
    echo "install.sh: $built/libsmtps.so has SONAME '${actual:-none}', expected $soname" \
        "(version $version; see ffi/build.rs): rebuild it" >&2
    exit 1
fi

staged_lib=$destdir$libdir
staged_include=$destdir$includedir
install -d "$staged_lib" "$staged_lib/pkgconfig" "$staged_include"
install -m 755 "$built/libsmtps.so" "$staged_lib/$real"
install -m 644 "$built/libsmtps.a" "$staged_lib/libsmtps.a"
if [ "$strip_debug" = 1 ]; then
    "$STRIP" --strip-debug "$staged_lib/$real" "$staged_lib/libsmtps.a"
fi
if [ "$soname" != "$real" ]; then
    ln -sfn "$real" "$staged_lib/$soname"
fi
ln -sfn "$soname" "$staged_lib/libsmtps.so"
install -m 644 include/smtps.h "$staged_include/smtps.h"

# smtps.pc: directories under the prefix are written as ${prefix}/..., so that the module
# stays right when a packager relocates the tree (pkg-config --define-prefix).
relative() {
    case "$1" in
        "$prefix") printf '%s\n' "\${prefix}" ;;
        "${prefix%/}"/*) printf '%s\n' "\${prefix}/${1#"${prefix%/}"/}" ;;
        *) printf '%s\n' "$1" ;;
    esac
}
pc_libdir=$(relative "$libdir")
pc_includedir=$(relative "$includedir")
sed -e "s|@PREFIX@|$prefix|g" -e "s|@LIBDIR@|$pc_libdir|g" \
    -e "s|@INCLUDEDIR@|$pc_includedir|g" -e "s|@VERSION@|$version|g" \
    ffi/smtps.pc.in > "$staged_lib/pkgconfig/smtps.pc.tmp"
chmod 644 "$staged_lib/pkgconfig/smtps.pc.tmp"
mv -f "$staged_lib/pkgconfig/smtps.pc.tmp" "$staged_lib/pkgconfig/smtps.pc"

echo "installed libsmtps $version (SONAME $soname) into ${destdir}${prefix}:"
for file in "$staged_lib/$real" "$staged_lib/$soname" "$staged_lib/libsmtps.so" \
    "$staged_lib/libsmtps.a" "$staged_include/smtps.h" "$staged_lib/pkgconfig/smtps.pc"; do
    if [ -L "$file" ]; then
        printf '  %s -> %s\n' "$file" "$(readlink "$file")"
    elif [ -e "$file" ]; then
        printf '  %s (%s bytes)\n' "$file" "$(stat -c %s "$file")"
    fi
done
if [ -z "$destdir" ]; then
    echo "use: PKG_CONFIG_PATH=$libdir/pkgconfig pkg-config --cflags --libs smtps"
fi
