#!/bin/sh
# cross_compile.sh -- show that the C core (src/subring/_core/*.c) compiles for
# aarch64, with no warnings beyond those the host compiler gives.
#
#   scripts/cross_compile.sh [--install] [--cc CC] [--host-cc CC] [--outdir DIR] [--src DIR]
#
#   --install   apt-get install the Debian cross compiler first
#               (gcc-aarch64-linux-gnu + libc6-dev-arm64-cross, which brings
#               the aarch64 libc and kernel uapi headers)
#   --cc        cross compiler (default aarch64-linux-gnu-gcc)
#   --host-cc   compiler whose warnings are the baseline (default: sysconfig CC,
#               else cc); "none" skips the comparison
#   --outdir    keep the aarch64 objects there (default: a temp dir, removed)
#   --src       compile DIR/*.c instead of src/subring/_core/*.c (the test
#               uses it to show that an aarch64-only warning fails the check)
#
# Compile only (-c): nothing is linked or run, so no aarch64 libpython is needed.
#
# Python headers: the HOST interpreter's include dir is used.  That is sound for
# a compile check because x86-64 and aarch64 Linux share the LP64 little-endian
# ABI for everything the public CPython headers size or lay out (Py_ssize_t,
# pointers, long, wchar_t, double).  The one generated header, pyconfig.h, is
# not trusted blindly: a probe below static_asserts every SIZEOF_*/ALIGNOF_*
# it states, and its byte order, against the cross compiler's own types.  Its
# x86-only macros (HAVE_GCC_ASM_FOR_X87/X64) are read only under
# Py_BUILD_CORE, which the core never defines -- and inline x87 asm reaching
# an aarch64 compile would fail the assembler step here anyway.
#
# The flags come from setup.py (read with ast, not repeated here); the sources
# are every *.c in the core's folder, so a file not yet listed is checked too.  Exit status: 0 = every file compiled and
# no new warnings; 1 = a compile failed or aarch64 warned where the host did
# not; 2 = bad usage / missing compiler.
set -eu

CC=aarch64-linux-gnu-gcc
HOST_CC=
OUTDIR=
SRCDIR=
INSTALL=0
while [ $# -gt 0 ]; do
    case "$1" in
        --install) INSTALL=1 ;;
        --cc) CC=$2; shift ;;
        --host-cc) HOST_CC=$2; shift ;;
        --outdir) OUTDIR=$2; shift ;;
        --src) SRCDIR=$(cd "$2" && pwd); shift ;;
        -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}

if [ "$INSTALL" = 1 ] && ! command -v "$CC" >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "--install needs root (apt-get)" >&2; exit 2
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        gcc-aarch64-linux-gnu libc6-dev-arm64-cross
fi
if ! command -v "$CC" >/dev/null 2>&1; then
    echo "cross compiler $CC not found (Debian: scripts/cross_compile.sh --install)" >&2
    exit 2
fi

# Include dir, compile flags and the C sources of the real build.
PYINC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
FLAGS=$(cd "$ROOT" && "$PY" - <<'EOF'
import ast
tree = ast.parse(open("setup.py").read())
for node in ast.walk(tree):
    if isinstance(node, ast.keyword) and node.arg == "extra_compile_args":
        print(" ".join(ast.literal_eval(node.value)))
        break
else:
    raise SystemExit("extra_compile_args not found in setup.py")
EOF
)
if [ -z "$HOST_CC" ]; then
    HOST_CC=$("$PY" -c 'import sysconfig; print((sysconfig.get_config_var("CC") or "cc").split()[0])')
fi
# Same defines and code-generation flags setuptools passes for an extension,
# plus one error: C compiles a call to an undeclared function (say, an x86-only
# builtin on aarch64) with only a warning, and the module then fails at import
# with an undefined symbol.
COMMON="-DNDEBUG -fPIC -fwrapv -Wsign-compare -I$ROOT/src/subring/_core -I$PYINC $FLAGS"
COMMON="$COMMON -Werror=implicit-function-declaration"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT INT TERM
[ -n "$OUTDIR" ] || OUTDIR=$WORK/obj
mkdir -p "$OUTDIR"

echo "cross compiler: $($CC --version | head -n1)"
echo "python headers: $PYINC (host; checked below)"
echo "flags:          $COMMON"

# 1. pyconfig.h probe: every size and alignment it claims, on the target.
"$PY" - "$PYINC/pyconfig.h" > "$WORK/pyconfig_probe.c" <<'EOF'
import re, sys
ctype = {"DOUBLE": "double", "FLOAT": "float", "FPOS_T": "fpos_t", "INT": "int",
         "LONG": "long", "LONG_DOUBLE": "long double", "LONG_LONG": "long long",
         "OFF_T": "off_t", "PID_T": "pid_t", "PTHREAD_KEY_T": "pthread_key_t",
         "PTHREAD_T": "pthread_t", "SHORT": "short", "SIZE_T": "size_t",
         "TIME_T": "time_t", "UINTPTR_T": "uintptr_t", "VOID_P": "void *",
         "WCHAR_T": "wchar_t", "_BOOL": "_Bool"}
print("#include <pyconfig.h>\n#include <stdint.h>\n#include <stdio.h>\n#include <wchar.h>")
print("#include <pthread.h>\n#include <sys/types.h>\n#include <time.h>")
n = 0
for kind, name, val in re.findall(r"^#define (SIZEOF|ALIGNOF)_(\w+) (\d+)$",
                                  open(sys.argv[1]).read(), re.M):
    if name not in ctype:
        print(f"/* {kind}_{name}: no C type known to this probe, not checked */")
        continue
    op = "sizeof" if kind == "SIZEOF" else "_Alignof"
    print(f'_Static_assert({op}({ctype[name]}) == {val}, "pyconfig.h {kind}_{name}={val}");')
    n += 1
print("#if defined(WORDS_BIGENDIAN) != (__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)")
print('#error "pyconfig.h byte order differs from the target"')
print("#endif")
print(f"/* {n} sizes/alignments checked */")
EOF
"$CC" -std=gnu11 -I"$PYINC" -c "$WORK/pyconfig_probe.c" -o "$WORK/pyconfig_probe.o"
echo "pyconfig.h:     $(grep -c _Static_assert "$WORK/pyconfig_probe.c") sizes/alignments match the target, same byte order"

# 2. Every C file of the core, for aarch64; warnings collected per compiler.
fail=0
: > "$WORK/warn.target"
: > "$WORK/warn.host"
cd "$ROOT"
[ -n "$SRCDIR" ] || SRCDIR=src/subring/_core
for src in "$SRCDIR"/*.c; do
    obj=$OUTDIR/$(basename "$src" .c).o
    if "$CC" $COMMON -c "$src" -o "$obj" 2> "$WORK/err"; then
        status=ok
    else
        status=FAILED; fail=1
    fi
    grep -E ': (warning|error):' "$WORK/err" >> "$WORK/warn.target" || true
    nw=$(grep -c ': warning:' "$WORK/err" || true)
    echo "  aarch64  $src: $status ($nw warnings)"
    [ "$status" = ok ] || cat "$WORK/err" >&2
    if [ "$HOST_CC" != none ]; then
        "$HOST_CC" $COMMON -c "$src" -o /dev/null 2> "$WORK/err" || true
        grep -E ': (warning|error):' "$WORK/err" >> "$WORK/warn.host" || true
    fi
done

# 3. Warnings on aarch64 that the host compiler does not give (same file, line,
#    message) -- the arch-specific ones.
if [ "$HOST_CC" != none ]; then
    sort -u "$WORK/warn.target" > "$WORK/t"; sort -u "$WORK/warn.host" > "$WORK/h"
    comm -23 "$WORK/t" "$WORK/h" > "$WORK/new"
    echo "warnings:       aarch64 $(wc -l < "$WORK/t"), host ($HOST_CC) $(wc -l < "$WORK/h"), aarch64-only $(wc -l < "$WORK/new")"
    if [ -s "$WORK/new" ]; then
        echo "aarch64-only warnings:" >&2; cat "$WORK/new" >&2; fail=1
    fi
fi

[ "$fail" = 0 ] && echo "OK: the C core compiles for aarch64" || echo "FAILED" >&2
exit "$fail"
