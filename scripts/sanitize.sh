#!/usr/bin/env bash
# Build subring's C core with sanitizers into a separate tree and run tests
# against it.  Nothing in the source tree is touched.
#
#   scripts/sanitize.sh [asan|tsan|hooks] [pytest args...]   (tsan takes none)
#
#   asan (default): -fsanitize=address,undefined.  CPython itself is not
#        instrumented, so libasan is LD_PRELOADed into the interpreter (and,
#        through the environment, into every child process the tests start:
#        servers, workers, fuzz harnesses); leak detection is off (CPython's
#        arenas look like leaks).  Any ASan/UBSan report aborts the process,
#        which fails the test that ran it.
#   tsan: ThreadSanitizer.  CPython here is not built with TSan, and an
#        interpreter with libtsan preloaded crashes at start-up, so the
#        extension cannot run under TSan; instead the C core's concurrency
#        primitives (ring.h, both directions of the wake-up protocol, between
#        two real threads across the 2^32 wrap: fuzz/ring_threads.c) are built
#        with -fsanitize=thread and run for several seeds.  TSan does not model
#        standalone fences; the hang check covers the fence protocol.
#   hooks: no sanitizer; -DSUBRING_DEBUG_HOOKS, the random delays between the
#        wake-up protocol's steps (ring.h SR_DEBUG_DELAY; amount from
#        SUBRING_DEBUG_DELAY_NS, default here 50000), for the lost wake-up
#        hunt: scripts/sanitize.sh hooks tests/reliability/test_stress_wakeup.py
#
# Default tests: the reliability suite plus the kernel-ring and subsystem
# tests; pass paths / -k expressions to choose others.
#   SANITIZE_BUILD=dir  where to build (default: build/sanitize-<kind>)
#   SANITIZE_SRC=dir    the tree whose src/ and setup.py are built (default: this one)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
KIND=${1:-asan}
case "$KIND" in asan|tsan|hooks) shift || true ;; *) KIND=asan ;; esac
SRC=${SANITIZE_SRC:-$ROOT}
BUILD=${SANITIZE_BUILD:-$ROOT/build/sanitize-$KIND}
CC=${CC:-gcc}

case "$KIND" in
asan)
    FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
    RUNTIME=$($CC -print-file-name=libasan.so)
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1:detect_stack_use_after_return=0:handle_segv=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    ;;
hooks)
    FLAGS="-DSUBRING_DEBUG_HOOKS=1 -O2 -g"
    RUNTIME=""
    export SUBRING_DEBUG_HOOKS=1
    export SUBRING_DEBUG_DELAY_NS=${SUBRING_DEBUG_DELAY_NS:-50000}
    ;;
tsan)
    mkdir -p "${SANITIZE_BUILD:-$ROOT/build/sanitize-tsan}"
    EXE=${SANITIZE_BUILD:-$ROOT/build/sanitize-tsan}/ring_threads
    echo "== building fuzz/ring_threads.c with -fsanitize=thread"
    $CC -O1 -g -std=gnu11 -pthread -fsanitize=thread -Wno-tsan -I"$SRC/src/subring/_core" \
        -o "$EXE" "$ROOT/fuzz/ring_threads.c"
    export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:exitcode=66}
    for args in "200000 0xFFFFF000 3 1" "200000 0xFFFFFFF0 0 2" "200000 0xFFFFC000 6 3" \
                "200000 0 10 4"; do
        echo "== ring_threads $args"
        timeout 300 "$EXE" $args || { echo "FAILED (exit $?: 124 = hung, 66 = TSan report)"; exit 1; }
    done
    exit 0
    ;;
esac
[ "$KIND" = hooks ] || [ -e "$RUNTIME" ] || { echo "no $KIND runtime for $CC ($RUNTIME)" >&2; exit 2; }

echo "== building the C core with $FLAGS into $BUILD"
rm -rf "$BUILD"
mkdir -p "$BUILD"
cp -r "$SRC/src" "$SRC/setup.py" "$SRC/pyproject.toml" "$BUILD/"
find "$BUILD/src" -name '*.so' -delete
(cd "$BUILD" && CFLAGS="$FLAGS" LDFLAGS="$FLAGS" python3 setup.py -q build_ext --inplace \
    --build-temp "$BUILD/tmp" >"$BUILD/build.log" 2>&1) || { cat "$BUILD/build.log"; exit 1; }
SO=$(ls "$BUILD"/src/subring/_core*.so)
SYMS=$(nm -D "$SO")
case "$KIND:$SYMS" in *__asan_init*|*__tsan_init*|hooks:*sr_debug_delay*) ;;
    *) echo "the built module is not instrumented ($KIND)" >&2; exit 1 ;; esac

export SUBRING_SANITIZE_CFLAGS="$FLAGS"        # tests that compile C (fuzz/ring_model.c)
[ -z "$RUNTIME" ] || export LD_PRELOAD="$RUNTIME"
export PYTHONPATH="$BUILD/src"
export PYTHONMALLOC=malloc                     # let ASan see every allocation
if [ $# -eq 0 ]; then
    K=tests/kernel S=tests/subsystem
    set -- tests/reliability $K/test_nop.py $K/test_batch.py $K/test_links.py \
        $K/test_overflow.py $K/test_cancel.py $K/test_lifecycle.py \
        $K/test_buffer_lifetime.py $K/test_sq_full.py $K/test_bad_args.py \
        $S/test_subsystem_calls.py $S/test_subsystem_faults.py \
        $S/test_subsystem_fuzz.py $S/test_subsystem_records.py \
        --deselect $K/test_bad_args.py::test_regression_constructor_huge_or_negative_sizes
    # (that test caps RLIMIT_AS at 2 GiB; ASan's shadow memory needs terabytes
    # of address space, so the capped child dies with MemoryError at start-up)
fi
echo "== running pytest $* against $SO ($KIND)"
python3 -c 'import subring, sys; assert subring.__file__.startswith(sys.argv[1]), subring.__file__' "$BUILD/src"
exec python3 -m pytest -p no:cacheprovider -q "$@"
