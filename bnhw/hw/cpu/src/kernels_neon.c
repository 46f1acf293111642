/* NEON kernels: one source for ARMv7-A (Cortex-A9, -mfpu=neon) and AArch64 (Cortex-A53).
 * Bit-exact with kernels_ref.c (the specification); compiled to nothing without NEON.
 *
 * bgemm
 * -----
 * An MR x NR tile of the output (AArch64: 4 x 4, ARMv7: 2 x 4; 32 / 16 q registers) is computed
 * in one pass over K, 128 bits (two words) per step.  Per step the MR rows of A and the NR rows
 * of B are loaded once, and every output element (r, j) of the tile does
 *     x = veorq_u8(a_r, b_j);  n = vcntq_u8(x);  s8[r][j] = vaddq_u8(s8[r][j], n);
 * A byte lane of vcnt is at most 8 per step, so the byte accumulators s8 can take 31 steps
 * (31 * 8 = 248 <= 255).  After at most 31 steps ("a chunk", i.e. 62 words of K) each one is
 * widened: s16 = vpaddlq_u8(s8) (u16 lanes <= 496), acc32 = vpadalq_u16(acc32, s16) (u32 lanes;
 * they never overflow because the whole count fits int32), and s8 restarts from zero.  An odd last
 * word is done once with the 64-bit forms (veor_u8, vcnt_u8, vpaddl_u8, vaddw_u16).  Finally the
 * four u32 lanes of each acc32 are summed: AArch64 vpaddq_u32 (three per 4 outputs of a row) or
 * vaddvq_u32; ARMv7, which has neither vaddv nor q-form pairwise adds, vadd_u32 of the halves and
 * vpadd_u32.
 *
 * Instruction mix of the inner loop, per 128-bit step (2 words, 128 binary MACs) and per output
 * element of the MR x NR tile, as written:
 *   loads:  (MR + NR) / (MR * NR) 128-bit loads (AArch64 4 x 4: 8 / 16 = 0.5; ARMv7 2 x 4: 6 / 8 = 0.75);
 *   veor:   1 (AArch64 eor v.16b; ARMv7 veor q);
 *   vcnt:   1 (cnt v.16b; vcnt.8 q);
 *   vadd:   1 (add v.16b; vadd.i8 q) into the byte accumulator;
 *   widening, once per chunk of <= 31 steps (62 words; ceil(K / 62) chunks per tile): 1 vpaddl.u8
 *           (uaddlp) + 1 vpadal.u16 (uadalp) + 1 re-zeroing of s8 (movi / mov; vmov), i.e. 3 / 31 ~ 0.1
 *           per step for long K;
 *   loop:   one counter update, compare and branch per step for the whole tile.
 * Per tile, once: the odd last word (1 64-bit load per row / column, then per output veor d, vcnt d,
 * vpaddl.u8 d, vaddw.u16) and the final lane sums (AArch64: 3 addp + 1 q store per row of 4;
 * ARMv7: per output vadd.i32 d + vpadd.i32 d + a 32-bit lane store).
 *
 * Generated code (GCC 12.2 -O3; tests/test_cpu_kernels.py checks the per-step counts and that
 * nothing is spilled in the inner loop):
 *   AArch64 -mcpu=cortex-a53, 4 x 4 tile, inner loop 59 instructions per step (16 outputs):
 *     8 ldr q (register offset), 16 eor .16b, 16 cnt .16b, 16 add .16b, 1 add + 1 cmp + 1 bne;
 *     per chunk: 16 uaddlp + 16 uadalp + 15 mov.16b / 1 movi, and the 16 u32 accumulators (which do
 *     not fit beside the 16 byte accumulators and operands) go to and from the stack: 6 stp q + 6 ldp
 *     q + 1 ldr q + 1 str q, plus ~12 scalar instructions.
 *   ARMv7 -mcpu=cortex-a9 -mfpu=neon, 2 x 4 tile, inner loop 39 instructions per step (8 outputs):
 *     6 vld1.64 {dN-dN+1} (128-bit), 8 veor q, 8 vcnt.8 q, 8 vadd.i8 q, 6 add (one address per row:
 *     vld1 has no base + index form) + 1 adds + 1 cmp + 1 bne;
 *     per chunk: 8 vpaddl.u8 q + 8 vpadal.u16 q + ~12 vmov q (zeroing, accumulator moves) and the
 *     u32 accumulators spilled: 12 vldr d + 12 vstr d + 1 vld1 + 1 vst1, plus ~20 scalar.
 *
 * pack
 * ----
 * 8 channels at a time: two vcltq_s32 (x < thr, or x < 0), vmovn_u32 + vmovn_u16 narrow the
 * masks to 8 bytes, vand with the bit weights 1, 2, ..., 128; three levels of vpadd_u8 turn
 * 8 such vectors (64 channels) into the 8 bytes of one word (byte k = channels 8k..8k+7).
 * A partial last word of a group uses the scalar branch-free loop.
 *
 * gemm_s16
 * --------
 * The same MR x NR tiles with int32x4 accumulators: per 8 k and output element two vmlal_s16
 * (AArch64: vmlal_s16 + vmlal_high_s16), then a 4-wide step and a zero-padded 4-wide step for the
 * last 1..3 values (lane loads, nothing read past the row); the products are summed with
 * wrap-around (the contract guarantees the true sum fits int32).  No loop over a runtime count
 * touches the accumulator arrays outside the k loop, so GCC keeps them in registers (a scalar tail
 * loop made ARMv7 store every accumulator to the stack on every step).  Generated inner loop per 8 k
 * (GCC 12.2 -O3): AArch64 4 x 4: 8 ldr q, 16 smlal + 16 smlal2, add + cmp + bne (43 instructions,
 * 16 outputs); ARMv7 2 x 4: 6 vld1.16 q, 16 vmlal.s16, 7 add + cmp + bne (32 instructions, 8 outputs).
 */
#include "bnhw_kernels.h"
#include "bnhw_tiling.h"

#if BNHW_HAVE_NEON

#include <arm_neon.h>

#define BNHW_INLINE static inline __attribute__((always_inline))

#if defined(__aarch64__)
#define BNHW_NEON_A64 1
#ifndef BNHW_NEON_MR
#define BNHW_NEON_MR 4
#endif
#ifndef BNHW_NEON_NR
#define BNHW_NEON_NR 4
#endif
#else
#define BNHW_NEON_A64 0
#ifndef BNHW_NEON_MR
#define BNHW_NEON_MR 2
#endif
#ifndef BNHW_NEON_NR
#define BNHW_NEON_NR 4
#endif
#endif
#define MR BNHW_NEON_MR
#define NR BNHW_NEON_NR

/* 128-bit steps a byte accumulator takes before it must be widened: 31 * 8 = 248 <= 255 */
#define BNHW_NEON_CHUNK 31

/* ---------------------------------------------------------------------------------- pack */

/* 8 channels -> 8 bytes, byte b = weight b (1 << b) if x[b] < t[b] else 0 */
BNHW_INLINE uint8x8_t pack8(const int32_t *x, const int32_t *t, uint8x8_t weights)
{
    int32x4_t x0 = vld1q_s32(x), x1 = vld1q_s32(x + 4);
    int32x4_t t0 = t ? vld1q_s32(t) : vdupq_n_s32(0);
    int32x4_t t1 = t ? vld1q_s32(t + 4) : vdupq_n_s32(0);
    uint16x8_t m = vcombine_u16(vmovn_u32(vcltq_s32(x0, t0)), vmovn_u32(vcltq_s32(x1, t1)));
    return vand_u8(vmovn_u16(m), weights);
}

/* 64 channels -> one word */
BNHW_INLINE bnhw_word pack64(const int32_t *x, const int32_t *t)
{
    const uint8x8_t wt = vcreate_u8(0x8040201008040201ULL);
    uint8x8_t d0 = pack8(x, t, wt), d1 = pack8(x + 8, t ? t + 8 : NULL, wt);
    uint8x8_t d2 = pack8(x + 16, t ? t + 16 : NULL, wt), d3 = pack8(x + 24, t ? t + 24 : NULL, wt);
    uint8x8_t d4 = pack8(x + 32, t ? t + 32 : NULL, wt), d5 = pack8(x + 40, t ? t + 40 : NULL, wt);
    uint8x8_t d6 = pack8(x + 48, t ? t + 48 : NULL, wt), d7 = pack8(x + 56, t ? t + 56 : NULL, wt);
    /* the weighted bits of one vector are disjoint, so the pairwise sums are ORs (<= 255) */
    uint8x8_t q0 = vpadd_u8(vpadd_u8(d0, d1), vpadd_u8(d2, d3));
    uint8x8_t q1 = vpadd_u8(vpadd_u8(d4, d5), vpadd_u8(d6, d7));
    return vget_lane_u64(vreinterpret_u64_u8(vpadd_u8(q0, q1)), 0);
}

/* bits [0, cnt) of a partial word, cnt < 64, without a per-bit branch */
BNHW_INLINE bnhw_word pack_tail(const int32_t *x, const int32_t *t, int cnt)
{
    bnhw_word w = 0;
    for (int b = 0; b < cnt; b++)
        w |= (bnhw_word)(x[b] < (t ? t[b] : 0)) << b;
    return w;
}

BNHW_INLINE void pack_rows(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out)
{
    BNHW_FOR_PACK_WORDS(x, n, C, groups, thr, out, pack64, pack_tail);
}

void bnhw_pack_neon(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out)
{
    if (n <= 0 || C <= 0 || groups <= 0)
        return;
    if (thr)
        pack_rows(x, n, C, groups, thr, out);
    else
        pack_rows(x, n, C, groups, NULL, out);
}

/* --------------------------------------------------------------------------------- bgemm */

/* sum of the four u32 lanes */
BNHW_INLINE uint32_t sum_u32x4(uint32x4_t v)
{
#if BNHW_NEON_A64
    return vaddvq_u32(v);
#else
    uint32x2_t s = vadd_u32(vget_low_u32(v), vget_high_u32(v));
    return vget_lane_u32(vpadd_u32(s, s), 0);
#endif
}

/* the R x Cn (<= MR x NR) tile of c; R and Cn are constants after inlining, so the loops unroll
 * and the accumulator arrays become registers */
BNHW_INLINE void bgemm_tile(int R, int Cn, int K, const bnhw_word *a, size_t lda, const bnhw_word *b, size_t ldb,
                            int32_t *c, size_t ldc)
{
    const bnhw_word *ap[MR], *bp[NR];
    uint32x4_t acc[MR][NR];
    for (int r = 0; r < R; r++)
        ap[r] = a + r * lda;
    for (int j = 0; j < Cn; j++)
        bp[j] = b + j * ldb;
    for (int r = 0; r < R; r++)
        for (int j = 0; j < Cn; j++)
            acc[r][j] = vdupq_n_u32(0);

    /* the row pointers advance by one step (2 words) at a time: post-increment loads on ARMv7 */
    int steps = K / 2;
    while (steps > 0) {
        int chunk = steps < BNHW_NEON_CHUNK ? steps : BNHW_NEON_CHUNK;
        steps -= chunk;
        uint8x16_t s8[MR][NR];
        for (int r = 0; r < R; r++)
            for (int j = 0; j < Cn; j++)
                s8[r][j] = vdupq_n_u8(0);
        for (; chunk > 0; chunk--) {
            uint8x16_t va[MR];
            for (int r = 0; r < R; r++) {
                va[r] = vreinterpretq_u8_u64(vld1q_u64(ap[r]));
                ap[r] += 2;
            }
            for (int j = 0; j < Cn; j++) {
                uint8x16_t vb = vreinterpretq_u8_u64(vld1q_u64(bp[j]));
                bp[j] += 2;
                for (int r = 0; r < R; r++)
                    s8[r][j] = vaddq_u8(s8[r][j], vcntq_u8(veorq_u8(va[r], vb)));
            }
        }
        /* widen before a byte can overflow: u8 -> u16 (pairwise) -> u32 (pairwise accumulate) */
        for (int r = 0; r < R; r++)
            for (int j = 0; j < Cn; j++)
                acc[r][j] = vpadalq_u16(acc[r][j], vpaddlq_u8(s8[r][j]));
    }
    if (K & 1) { /* the odd last word, 64-bit forms */
        uint8x8_t va[MR];
        for (int r = 0; r < R; r++)
            va[r] = vreinterpret_u8_u64(vld1_u64(ap[r]));
        for (int j = 0; j < Cn; j++) {
            uint8x8_t vb = vreinterpret_u8_u64(vld1_u64(bp[j]));
            for (int r = 0; r < R; r++)
                acc[r][j] = vaddw_u16(acc[r][j], vpaddl_u8(vcnt_u8(veor_u8(va[r], vb))));
        }
    }

#if BNHW_NEON_A64
    if (Cn == 4) { /* four sums of a row at once: [sum acc0, sum acc1, sum acc2, sum acc3] */
        for (int r = 0; r < R; r++) {
            uint32x4_t s01 = vpaddq_u32(acc[r][0], acc[r][1]), s23 = vpaddq_u32(acc[r][2], acc[r][3]);
            vst1q_s32(c + r * ldc, vreinterpretq_s32_u32(vpaddq_u32(s01, s23)));
        }
        return;
    }
#endif
    for (int r = 0; r < R; r++)
        for (int j = 0; j < Cn; j++)
            c[r * ldc + j] = (int32_t)sum_u32x4(acc[r][j]);
}

void bnhw_bgemm_neon(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *b, int ldb,
                     int32_t *c, int ldc)
{
    if (K < 0)
        K = 0;
    size_t la = (size_t)lda, lb = (size_t)ldb, lc = (size_t)ldc;
#define TILE(R, Cn, i, j) bgemm_tile(R, Cn, K, a + (i) * la, la, b + (j) * lb, lb, c + (i) * lc + (j), lc)
    BNHW_FOR_TILES(M, N, MR, NR, TILE);
#undef TILE
}

/* bgemm_small: output channels in lanes.  A tile is R (<= MR) rows x V (<= 2) vectors of two channels
 * (two u64 lanes); each step broadcasts one word of a row against the vectors' words (k-major B),
 * byte counts added for up to BNHW_NEON_CHUNK steps, then widened u8 -> u16 -> u32 -> u64 into the
 * lanes' sums.  An odd last channel runs as a one-lane vector whose high lane is discarded. */
/* one word in both lanes: LD1R on AArch64; on ARMv7 a D load and a register move (GCC builds
 * vdupq_n_u64 of a loaded word through the stack there) */
BNHW_INLINE uint64x2_t broadcast_word(const bnhw_word *p)
{
#if defined(__aarch64__)
    return vld1q_dup_u64(p);
#else
    uint64x1_t w = vld1_u64(p);
    return vcombine_u64(w, w);
#endif
}

BNHW_INLINE void bgemm_small_tile(int R, int V, int K, const bnhw_word *a, size_t lda, const bnhw_word *bt,
                                  size_t ldbt, int odd, int32_t *c, size_t ldc)
{
    uint64x2_t acc[MR][2];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++)
            acc[r][v] = vdupq_n_u64(0);
    int k = 0;
    while (k < K) {
        int end = K - k > BNHW_NEON_CHUNK ? k + BNHW_NEON_CHUNK : K;
        uint8x16_t s8[MR][2];
        for (int r = 0; r < R; r++)
            for (int v = 0; v < V; v++)
                s8[r][v] = vdupq_n_u8(0);
        for (; k < end; k++) {
            const bnhw_word *bk = bt + (size_t)k * ldbt;
            uint8x16_t vb[2];
            for (int v = 0; v < V; v++)
                vb[v] = vreinterpretq_u8_u64(odd && v == V - 1 ? broadcast_word(bk + 2 * v) : vld1q_u64(bk + 2 * v));
            for (int r = 0; r < R; r++) {
                uint8x16_t va = vreinterpretq_u8_u64(broadcast_word(a + r * lda + k));
                for (int v = 0; v < V; v++)
                    s8[r][v] = vaddq_u8(s8[r][v], vcntq_u8(veorq_u8(va, vb[v])));
            }
        }
        for (int r = 0; r < R; r++)
            for (int v = 0; v < V; v++)
                acc[r][v] = vpadalq_u32(acc[r][v], vpaddlq_u16(vpaddlq_u8(s8[r][v])));
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) {
            uint32x2_t s = vmovn_u64(acc[r][v]);
            int32_t *cr = c + r * ldc + 2 * v;
            if (odd && v == V - 1)
                cr[0] = (int32_t)vget_lane_u32(s, 0);
            else
                vst1_s32(cr, vreinterpret_s32_u32(s));
        }
}

void bnhw_bgemm_small_neon(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *bt, int ldbt,
                           int32_t *c, int ldc)
{
    if (K < 0)
        K = 0;
    size_t la = (size_t)lda, lb = (size_t)ldbt, lc = (size_t)ldc;
    for (int j = 0; j < N; j += 4) {
        int n = N - j < 4 ? N - j : 4, odd = n & 1;
        const bnhw_word *b = bt + j;
        int32_t *cj = c + j;
        int i = 0;
#define ROWS(R)                                                                                        \
    do {                                                                                               \
        if (n > 2)                                                                                     \
            bgemm_small_tile(R, 2, K, a + i * la, la, b, lb, odd, cj + i * lc, lc);                    \
        else                                                                                           \
            bgemm_small_tile(R, 1, K, a + i * la, la, b, lb, odd, cj + i * lc, lc);                    \
    } while (0)
        for (; i + MR <= M; i += MR)
            ROWS(MR);
        for (; i < M; i++)
            ROWS(1);
#undef ROWS
    }
}

/* ------------------------------------------------------------------------------ gemm_s16 */

/* p[0 .. n-1] (1 <= n <= 3) in the low lanes, 0 in the others; no loop, no read past p[n-1] */
BNHW_INLINE int16x4_t load_s16_partial(const int16_t *p, int n)
{
    int16x4_t v = vdup_n_s16(0);
    v = vld1_lane_s16(p, v, 0);
    if (n > 1)
        v = vld1_lane_s16(p + 1, v, 1);
    if (n > 2)
        v = vld1_lane_s16(p + 2, v, 2);
    return v;
}

BNHW_INLINE void gemm_s16_tile(int R, int Cn, int K, const int16_t *a, size_t lda, const int16_t *b, size_t ldb,
                               int32_t *c, size_t ldc)
{
    const int16_t *ap[MR], *bp[NR];
    int32x4_t acc[MR][NR];
    for (int r = 0; r < R; r++)
        ap[r] = a + r * lda;
    for (int j = 0; j < Cn; j++)
        bp[j] = b + j * ldb;
    for (int r = 0; r < R; r++)
        for (int j = 0; j < Cn; j++)
            acc[r][j] = vdupq_n_s32(0);
    for (int steps = K / 8; steps > 0; steps--) {
        int16x8_t va[MR];
        for (int r = 0; r < R; r++) {
            va[r] = vld1q_s16(ap[r]);
            ap[r] += 8;
        }
        for (int j = 0; j < Cn; j++) {
            int16x8_t vb = vld1q_s16(bp[j]);
            bp[j] += 8;
            for (int r = 0; r < R; r++) {
                acc[r][j] = vmlal_s16(acc[r][j], vget_low_s16(va[r]), vget_low_s16(vb));
#if BNHW_NEON_A64
                acc[r][j] = vmlal_high_s16(acc[r][j], va[r], vb);
#else
                acc[r][j] = vmlal_s16(acc[r][j], vget_high_s16(va[r]), vget_high_s16(vb));
#endif
            }
        }
    }
    int rest = K % 8;
    if (rest >= 4) {
        int16x4_t va[MR];
        for (int r = 0; r < R; r++) {
            va[r] = vld1_s16(ap[r]);
            ap[r] += 4;
        }
        for (int j = 0; j < Cn; j++) {
            int16x4_t vb = vld1_s16(bp[j]);
            bp[j] += 4;
            for (int r = 0; r < R; r++)
                acc[r][j] = vmlal_s16(acc[r][j], va[r], vb);
        }
        rest -= 4;
    }
    if (rest > 0) { /* the last 1..3 values, zero-padded to 4 lanes */
        int16x4_t va[MR];
        for (int r = 0; r < R; r++)
            va[r] = load_s16_partial(ap[r], rest);
        for (int j = 0; j < Cn; j++) {
            int16x4_t vb = load_s16_partial(bp[j], rest);
            for (int r = 0; r < R; r++)
                acc[r][j] = vmlal_s16(acc[r][j], va[r], vb);
        }
    }
    /* lane sums with wrap-around: exact because the true sum fits int32 */
    for (int r = 0; r < R; r++)
        for (int j = 0; j < Cn; j++)
            c[r * ldc + j] = (int32_t)sum_u32x4(vreinterpretq_u32_s32(acc[r][j]));
}

void bnhw_gemm_s16_neon(int M, int N, int K, const int16_t *a, int lda, const int16_t *b, int ldb,
                        int32_t *c, int ldc)
{
    if (K < 0)
        K = 0;
    size_t la = (size_t)lda, lb = (size_t)ldb, lc = (size_t)ldc;
#define TILE(R, Cn, i, j) gemm_s16_tile(R, Cn, K, a + (i) * la, la, b + (j) * lb, lb, c + (i) * lc + (j), lc)
    BNHW_FOR_TILES(M, N, MR, NR, TILE);
#undef TILE
}

#else /* no NEON: an empty unit is not ISO C */
typedef int bnhw_kernels_neon_unused;
#endif
