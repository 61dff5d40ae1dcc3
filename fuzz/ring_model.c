/*
 * ring_model.c -- drives ring.h's four halves (SQ producer, SQ consumer, CQ
 * producer, CQ consumer) against a model with 64-bit counters, from any
 * start index (so across the 2^32 wrap) and any interleaving, single
 * threaded.  Built as a shared library by tests/reliability (ctypes) and by
 * scripts/sanitize.sh (ASan/UBSan); driven by hypothesis and atheris.
 *
 * A program is a byte string; each byte is one step: low 2 bits the action,
 * the rest (0..63) its count:
 *   0  client prepares and publishes up to `count` SQEs (payload: sequence no.)
 *   1  server takes up to `count` SQEs (as many as the CQ has room for) and
 *      posts one CQE per SQE, then publishes
 *   2  client reaps up to `count` CQEs
 *   3  check every derived quantity against the model
 * Returns 0, or a line number of the violated check (err says what).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ring.h"

#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); return __LINE__; } while (0)

int sr_model_run(uint32_t start, uint32_t log2_entries, const uint8_t *prog, size_t n,
                 char *err, size_t errlen)
{
    if (log2_entries > 12)
        FAIL("log2_entries too large");
    uint32_t entries = 1u << log2_entries;
    /* shared words, as in struct sr_uring_region */
    uint32_t sq_head = start, sq_tail = start, sq_flags = 0, cq_head = start, cq_tail = start;
    uint8_t *sqes = calloc(entries, 128);
    uint8_t *cqes = calloc(entries, 16);
    if (!sqes || !cqes) {
        free(sqes); free(cqes);
        FAIL("out of memory");
    }
    struct sr_sq sq = {.khead = &sq_head, .ktail = &sq_tail, .kflags = &sq_flags,
                       .sqes = sqes, .mask = entries - 1, .entries = entries,
                       .sqe_tail = start, .sqe_shift = 1, .head_cache = start};
    struct sr_sq_cons sc = {.ktail = &sq_tail, .khead = &sq_head, .sqes = sqes,
                            .mask = entries - 1, .entries = entries, .sqe_shift = 1,
                            .head = start};
    struct sr_cq_prod cp = {.khead = &cq_head, .ktail = &cq_tail, .cqes = cqes,
                            .mask = entries - 1, .entries = entries, .cqe_shift = 0,
                            .tail = start, .head_cache = start};
    struct sr_cq cq = {.khead = &cq_head, .ktail = &cq_tail, .cqes = cqes,
                       .mask = entries - 1, .entries = entries, .cqe_shift = 0};
    uint32_t cq_private_head = start;
    /* the model: 64-bit counts that never wrap */
    uint64_t produced = 0, consumed = 0, posted = 0, reaped = 0;
    int rc = 0;
    uint8_t sqe_copy[128];
    for (size_t i = 0; i < n && !rc; i++) {
        uint32_t count = prog[i] >> 2;
        switch (prog[i] & 3) {
        case 0: {
            uint32_t space = sr_sq_space(&sq);
            uint64_t true_space = entries - (produced - consumed);
            if (space > true_space) { rc = __LINE__; snprintf(err, errlen, "step %zu: sq space %u > true %llu", i, space, (unsigned long long)true_space); break; }
            for (uint32_t k = 0; k < count; k++) {
                struct io_uring_sqe *s = sr_sq_get(&sq, &space);
                if (!s)
                    break;
                s->user_data = produced++;
            }
            sr_sq_publish(&sq);
            if (sq_tail != (uint32_t)(start + produced)) { rc = __LINE__; snprintf(err, errlen, "step %zu: tail %u != start+%llu", i, sq_tail, (unsigned long long)produced); }
            break;
        }
        case 1: {
            int64_t avail = sr_sqc_avail(&sc);
            if (avail != (int64_t)(produced - consumed)) { rc = __LINE__; snprintf(err, errlen, "step %zu: avail %lld != %llu", i, (long long)avail, (unsigned long long)(produced - consumed)); break; }
            int64_t space = sr_cqp_space_cached(&cp);
            if (space < avail) space = sr_cqp_space(&cp);
            /* the cached value is a lower bound of the true room, never more */
            if (space < 0 || space > (int64_t)(entries - (posted - reaped))) { rc = __LINE__; snprintf(err, errlen, "step %zu: cq space %lld, true %llu", i, (long long)space, (unsigned long long)(entries - (posted - reaped))); break; }
            uint32_t take = count;
            if (take > avail) take = (uint32_t)avail;
            if (take > space) take = (uint32_t)space;
            for (uint32_t k = 0; k < take; k++) {
                sr_sqc_take(&sc, sqe_copy);
                uint64_t ud;
                memcpy(&ud, sqe_copy + offsetof(struct io_uring_sqe, user_data), 8);
                if (ud != consumed) { rc = __LINE__; snprintf(err, errlen, "step %zu: took sqe %llu, expected %llu", i, (unsigned long long)ud, (unsigned long long)consumed); break; }
                consumed++;
                sr_cqp_put(&cp, ud, (int32_t)(ud & 0x7fffffff), 0);
                posted++;
            }
            sr_sqc_release(&sc);
            sr_cqp_publish(&cp);
            break;
        }
        case 2: {
            uint32_t ready = sr_cq_ready(&cq, cq_private_head);
            if (ready != posted - reaped) { rc = __LINE__; snprintf(err, errlen, "step %zu: cq ready %u != %llu", i, ready, (unsigned long long)(posted - reaped)); break; }
            uint32_t k;
            for (k = 0; k < count && k < ready; k++) {
                const struct io_uring_cqe *c = sr_cq_at(&cq, cq_private_head + k);
                if (c->user_data != reaped) { rc = __LINE__; snprintf(err, errlen, "step %zu: cqe %llu, expected %llu", i, (unsigned long long)c->user_data, (unsigned long long)reaped); break; }
                reaped++;
            }
            cq_private_head += k;
            sr_cq_release(&cq, cq_private_head);
            break;
        }
        default: {
            uint32_t now = sr_sq_space_now(&sq);
            if (now != entries - (produced - consumed)) { rc = __LINE__; snprintf(err, errlen, "step %zu: space_now %u", i, now); break; }
            if (sr_sq_pending(&sq) != produced - consumed) { rc = __LINE__; snprintf(err, errlen, "step %zu: pending", i); break; }
            if (sr_cqp_space(&cp) != (int64_t)(entries - (posted - reaped))) { rc = __LINE__; snprintf(err, errlen, "step %zu: cqp space", i); break; }
            break;
        }
        }
    }
    free(sqes);
    free(cqes);
    return rc;
}

/* The untrusted-index checks: a client tail `delta` ahead of the server's
 * head, a client CQ head `delta` behind the server's tail.  Returns what the
 * server computes (avail, cq space) so the caller can check -1 <=> impossible. */
void sr_model_validate(uint32_t start, uint32_t log2_entries, uint32_t sq_delta,
                       uint32_t cq_delta, int64_t *avail, int64_t *space)
{
    uint32_t entries = 1u << (log2_entries & 15);
    uint32_t sq_head = start, sq_tail = start + sq_delta, cq_tail = start,
             cq_head = start - cq_delta;
    static uint8_t dummy[16];
    struct sr_sq_cons sc = {.ktail = &sq_tail, .khead = &sq_head, .sqes = dummy,
                            .mask = entries - 1, .entries = entries, .head = start};
    struct sr_cq_prod cp = {.khead = &cq_head, .ktail = &cq_tail, .cqes = dummy,
                            .mask = entries - 1, .entries = entries, .tail = start,
                            .head_cache = start};
    *avail = sr_sqc_avail(&sc);
    *space = sr_cqp_space(&cp);
}
