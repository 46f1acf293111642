/* bnhw CPU kernels: the contract every implementation (reference, portable, NEON) meets.
 *
 * Packed bipolar data (Larq Compute Engine / daBNN convention): a +-1 value is
 * one bit, 1 = -1 (the sign bit), 0 = +1.  Channel c of a group is bit c % 64 of
 * word c / 64 of that group; a group's bits past its channel count are 0.  A
 * packed pixel is `groups` runs of `wpg = bnhw_words(C / groups)` 64-bit words.
 * On a little-endian machine the bytes of a one-group pixel whose channel count
 * is a multiple of 64 are exactly LCE's int32 bitpacked layout.
 *
 * Every kernel exists as `_ref` (plain C99, the specification), `_portable`
 * (plain C written so that compilers vectorise it / use popcnt; the x86-64
 * path) and, when compiled for ARM with NEON (ARMv7-A or AArch64), `_neon`.
 * `bnhw_kernel_set(name)` returns the table of one implementation; every
 * optimised kernel is tested bit-exact against `_ref`.
 */
#ifndef BNHW_KERNELS_H
#define BNHW_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint64_t bnhw_word;
#define BNHW_WORD_BITS 64
static inline int bnhw_words(int bits) { return (bits + BNHW_WORD_BITS - 1) / BNHW_WORD_BITS; }

/* pack: x int32 [n][C] (row stride C) -> out [n][groups][wpg] words, wpg = bnhw_words(C / groups).
 * Element c of row p is -1 (bit 1) iff x[p][c] < thr[c]; thr == NULL means thr[c] = 0.
 * Unused bits of every group's last word are 0.  C % groups == 0. */
typedef void (*bnhw_pack_fn)(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out);

/* bgemm: c[i * ldc + j] = popcount(a_i XOR b_j) over K words, where a_i = a + i * lda and
 * b_j = b + j * ldb (word strides).  M, N >= 0; K >= 0; the count fits int32. */
typedef void (*bnhw_bgemm_fn)(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *b, int ldb,
                              int32_t *c, int ldc);

/* gemm_s16: c[i * ldc + j] = sum_k a[i * lda + k] * b[j * ldb + k], int32 arithmetic.
 * The caller guarantees |a| * |b| * 2 < 2^31 for every pair and that every partial sum fits int32
 * (so implementations may add adjacent products in int32, as pmaddwd / vmlal do). */
typedef void (*bnhw_gemm_s16_fn)(int M, int N, int K, const int16_t *a, int lda, const int16_t *b, int ldb,
                                 int32_t *c, int ldc);

typedef struct {
    const char *name;          /* "ref" | "portable" | "neon" */
    bnhw_pack_fn pack;
    bnhw_bgemm_fn bgemm;
    bnhw_gemm_s16_fn gemm_s16;
} bnhw_kernels;

void bnhw_pack_ref(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out);
void bnhw_bgemm_ref(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *b, int ldb,
                    int32_t *c, int ldc);
void bnhw_gemm_s16_ref(int M, int N, int K, const int16_t *a, int lda, const int16_t *b, int ldb,
                       int32_t *c, int ldc);

void bnhw_pack_portable(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out);
void bnhw_bgemm_portable(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *b, int ldb,
                         int32_t *c, int ldc);
void bnhw_gemm_s16_portable(int M, int N, int K, const int16_t *a, int lda, const int16_t *b, int ldb,
                            int32_t *c, int ldc);

#if defined(__ARM_NEON) || defined(__ARM_NEON__)
#define BNHW_HAVE_NEON 1
void bnhw_pack_neon(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out);
void bnhw_bgemm_neon(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *b, int ldb,
                     int32_t *c, int ldc);
void bnhw_gemm_s16_neon(int M, int N, int K, const int16_t *a, int lda, const int16_t *b, int ldb,
                        int32_t *c, int ldc);
#else
#define BNHW_HAVE_NEON 0
#endif

/* The table of one implementation: "ref", "portable", "neon" (NULL when not compiled in), or "opt"
 * (the best compiled in: "neon" on ARM with NEON, else "portable"). */
const bnhw_kernels *bnhw_kernel_set(const char *name);

/* names of the compiled-in sets, comma separated, e.g. "ref,portable,neon" */
const char *bnhw_kernel_sets(void);

#ifdef __cplusplus
}
#endif
#endif
