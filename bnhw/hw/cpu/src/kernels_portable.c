/* Portable kernels: plain C99 written so that compilers keep the data in registers, use the
 * popcount instruction (x86-64 -mpopcnt, AArch64 cnt) and vectorise the int16 dot products
 * (x86-64 -mavx2: vpmaddwd).  Bit-exact with kernels_ref.c (the specification).
 *
 * bgemm is register-blocked: an MR x NR tile of the output is computed by one pass over K, so
 * every loaded word of A is reused NR times and every word of B MR times.  gemm_s16 uses the
 * same tiling with int32 accumulation; pack builds each 64-bit word without a per-bit branch.
 */
#include "bnhw_kernels.h"
#include "bnhw_tiling.h"

#if defined(__GNUC__) || defined(__clang__)
#define BNHW_INLINE static inline __attribute__((always_inline))
#define BNHW_POPCOUNT(w) __builtin_popcountll((unsigned long long)(w))
#else
#define BNHW_INLINE static inline
/* SWAR popcount for compilers without the builtin (branch-free, 12 operations). */
static inline int bnhw_popcount_swar(bnhw_word w)
{
    w = w - ((w >> 1) & 0x5555555555555555ULL);
    w = (w & 0x3333333333333333ULL) + ((w >> 2) & 0x3333333333333333ULL);
    w = (w + (w >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
    return (int)((w * 0x0101010101010101ULL) >> 56);
}
#define BNHW_POPCOUNT(w) bnhw_popcount_swar(w)
#endif

/* output tile of bgemm / gemm_s16: MR rows x NR columns (4 x 2 measured fastest on x86-64 with
 * popcnt: 8 accumulators, each loaded word of B reused 4 times; 2 x 4, 2 x 2, 3 x 4 and 4 x 4 are
 * within 10 %) */
#ifndef BNHW_PORTABLE_MR
#define BNHW_PORTABLE_MR 4
#endif
#ifndef BNHW_PORTABLE_NR
#define BNHW_PORTABLE_NR 2
#endif
#define MR BNHW_PORTABLE_MR
#define NR BNHW_PORTABLE_NR

/* ---------------------------------------------------------------------------------- pack */

/* 8 bytes of value 0 / 1 (m[i] is bit i) -> one byte: the multiply moves byte i's bit to bit
 * 56 + i without carries (all other partial products land on distinct bits).  The word is built
 * arithmetically, so the result does not depend on the byte order; GCC merges it into one load. */
BNHW_INLINE bnhw_word gather8(const uint8_t *m)
{
    bnhw_word v = (bnhw_word)m[0] | (bnhw_word)m[1] << 8 | (bnhw_word)m[2] << 16 | (bnhw_word)m[3] << 24 |
                  (bnhw_word)m[4] << 32 | (bnhw_word)m[5] << 40 | (bnhw_word)m[6] << 48 | (bnhw_word)m[7] << 56;
    return (v * 0x0102040810204080ULL) >> 56;
}

/* bits [0, cnt) of one word, cnt <= 64: bit b = x[b] < t[b] (t == NULL: x[b] < 0); bits past cnt
 * are 0.  The compares vectorise (a byte per channel), then 8 multiplies collect the bits. */
BNHW_INLINE bnhw_word pack_word(const int32_t *x, const int32_t *t, int cnt)
{
    uint8_t m[BNHW_WORD_BITS];
    if (t) {
        for (int b = 0; b < cnt; b++)
            m[b] = (uint8_t)(x[b] < t[b]);
    } else {
        for (int b = 0; b < cnt; b++)
            m[b] = (uint8_t)((uint32_t)x[b] >> 31);
    }
    for (int b = cnt; b < BNHW_WORD_BITS; b++)
        m[b] = 0;
    bnhw_word w = 0;
    for (int q = 0; q < BNHW_WORD_BITS / 8; q++)
        w |= gather8(m + 8 * q) << (8 * q);
    return w;
}

/* thr == NULL is a constant after inlining, so each variant has no test of it in its loops */
BNHW_INLINE void pack_rows(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out)
{
#define PACK_FULL(xw, tw) pack_word(xw, tw, BNHW_WORD_BITS)   /* a constant count: unrolled, vectorised */
    BNHW_FOR_PACK_WORDS(x, n, C, groups, thr, out, PACK_FULL, pack_word);
#undef PACK_FULL
}

void bnhw_pack_portable(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out)
{
    if (n <= 0 || C <= 0 || groups <= 0)
        return;
    if (thr)
        pack_rows(x, n, C, groups, thr, out);
    else
        pack_rows(x, n, C, groups, NULL, out);
}

/* --------------------------------------------------------------------------------- bgemm */

/* c[r][j] for R <= MR rows and Cn <= NR columns; R and Cn are constants after inlining, so the
 * loops unroll and the accumulators live in registers.  Word k of column j is b[j * bj + k * bk]:
 * (ldb, 1) for bgemm, (1, ldbt) for bgemm_small's k-major B. */
BNHW_INLINE void bgemm_tile(int R, int Cn, int K, const bnhw_word *a, size_t lda, const bnhw_word *b, size_t bj,
                            size_t bk, int32_t *c, size_t ldc)
{
    const bnhw_word *ap[MR], *bp[NR];
    uint32_t s[MR][NR];
    for (int r = 0; r < R; r++)
        ap[r] = a + r * lda;
    for (int j = 0; j < Cn; j++)
        bp[j] = b + j * bj;
    for (int r = 0; r < R; r++)
        for (int j = 0; j < Cn; j++)
            s[r][j] = 0;
    for (int k = 0; k < K; k++) {
        bnhw_word va[MR];
        for (int r = 0; r < R; r++)
            va[r] = ap[r][k];
        for (int j = 0; j < Cn; j++) {
            bnhw_word vb = bp[j][k * bk];
            for (int r = 0; r < R; r++)
                s[r][j] += (uint32_t)BNHW_POPCOUNT(va[r] ^ vb);
        }
    }
    for (int r = 0; r < R; r++)
        for (int j = 0; j < Cn; j++)
            c[r * ldc + j] = (int32_t)s[r][j];
}

void bnhw_bgemm_portable(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *b, int ldb,
                         int32_t *c, int ldc)
{
    if (K < 0)
        K = 0;
    size_t la = (size_t)lda, lb = (size_t)ldb, lc = (size_t)ldc;
#define TILE(R, Cn, i, j) bgemm_tile(R, Cn, K, a + (i) * la, la, b + (j) * lb, lb, 1, c + (i) * lc + (j), lc)
    BNHW_FOR_TILES(M, N, MR, NR, TILE);
#undef TILE
}

/* the same tiles reading B k-major (scalar popcount gains nothing from the layout; the set has the
 * kernel so every set runs the runtime's shallow-conv path) */
void bnhw_bgemm_small_portable(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *bt, int ldbt,
                               int32_t *c, int ldc)
{
    if (K < 0)
        K = 0;
    size_t la = (size_t)lda, lb = (size_t)ldbt, lc = (size_t)ldc;
#define TILE(R, Cn, i, j) bgemm_tile(R, Cn, K, a + (i) * la, la, bt + (j), 1, lb, c + (i) * lc + (j), lc)
    BNHW_FOR_TILES(M, N, MR, NR, TILE);
#undef TILE
}

/* ------------------------------------------------------------------------------ gemm_s16 */

/* The MR x NR sums of a tile are separate reductions over one k loop, which GCC -O3 -mavx2
 * vectorises into vpmaddwd + vpaddd (each loaded vector of A and B reused NR / MR times).  The
 * int32 products are summed in uint32: wrap-around, so no signed-overflow undefined behaviour in
 * any summation order; the contract guarantees the true sum fits int32, so the result is exact. */
BNHW_INLINE void gemm_s16_tile(int R, int Cn, int K, const int16_t *a, size_t lda, const int16_t *b, size_t ldb,
                               int32_t *c, size_t ldc)
{
    const int16_t *ap[MR], *bp[NR];
    uint32_t s[MR][NR];
    for (int r = 0; r < R; r++)
        ap[r] = a + r * lda;
    for (int j = 0; j < Cn; j++)
        bp[j] = b + j * ldb;
    for (int r = 0; r < R; r++)
        for (int j = 0; j < Cn; j++)
            s[r][j] = 0;
    for (int k = 0; k < K; k++)
        for (int r = 0; r < R; r++)
            for (int j = 0; j < Cn; j++)
                s[r][j] += (uint32_t)((int32_t)ap[r][k] * bp[j][k]);
    for (int r = 0; r < R; r++)
        for (int j = 0; j < Cn; j++)
            c[r * ldc + j] = (int32_t)s[r][j];
}

void bnhw_gemm_s16_portable(int M, int N, int K, const int16_t *a, int lda, const int16_t *b, int ldb,
                            int32_t *c, int ldc)
{
    if (K < 0)
        K = 0;
    size_t la = (size_t)lda, lb = (size_t)ldb, lc = (size_t)ldc;
#define TILE(R, Cn, i, j) gemm_s16_tile(R, Cn, K, a + (i) * la, la, b + (j) * lb, lb, c + (i) * lc + (j), lc)
    BNHW_FOR_TILES(M, N, MR, NR, TILE);
#undef TILE
}
