/*
 * arch.h -- the only place the C core depends on the CPU architecture.
 *
 * Everything else is portable C11 + GCC/Clang builtins that every target has
 * (__atomic_*, __builtin_expect).  scripts/cross_compile.sh builds the core
 * for aarch64 to keep it that way.
 *
 * Known architecture facts that live elsewhere, and why they need no code here:
 *   - io_uring syscall numbers (kernel.c's fallback 425/426/427): the
 *     asm-generic numbers, the same on x86-64, aarch64 and every other Linux
 *     architecture except alpha (535..537); <sys/syscall.h> wins when it has them.
 *   - SR_CACHELINE (abi.h) is 64 on every architecture: it is a layout constant
 *     of the shared region (both peers must agree), not a tuning hint.  On a
 *     CPU with 128-byte lines neighbouring indices may share a line: slower,
 *     never wrong.
 *   - Memory ordering: ring.h uses __atomic acquire/release/seq_cst only, so
 *     the weaker aarch64 model is covered by the compiler (ldar/stlr/dmb ish).
 *   - Byte order: both peers of a region run on the same host, so the region
 *     needs none; SR_URING_MAGIC reads "SRNG" in memory on little-endian hosts.
 */
#ifndef SUBRING_ARCH_H
#define SUBRING_ARCH_H

/* sr_cpu_relax(): one iteration's pause inside a spin-wait loop.  It tells the
 * core we are spinning (saves power, yields the pipeline to an SMT sibling,
 * avoids the memory-order mis-speculation flush when the awaited store lands)
 * and never sleeps or enters the kernel. */
#if defined(__x86_64__) || defined(__i386__)
/* PAUSE (encoded as REP NOP, so it is harmless on CPUs that predate it). */
static inline void sr_cpu_relax(void) { __builtin_ia32_pause(); }
#elif defined(__aarch64__)
/* ISB, not YIELD: YIELD retires as a no-op on most Arm cores (Neoverse,
 * Cortex-A7x), while ISB flushes the pipeline and gives a short real delay,
 * like x86 PAUSE; the same choice as Rust's spin_loop() and PostgreSQL. */
static inline void sr_cpu_relax(void) { __asm__ __volatile__("isb" ::: "memory"); }
#else
/* Generic: no pause instruction known; a compiler barrier keeps the loop from
 * being collapsed and forces the awaited word to be re-read. */
static inline void sr_cpu_relax(void) { __asm__ __volatile__("" ::: "memory"); }
#endif

#endif /* SUBRING_ARCH_H */
