/* bnhw CPU kernels: the contract every implementation (reference, portable, AVX2, AVX-512, NEON) meets.
 *
 * Packed bipolar data (Larq Compute Engine / daBNN convention): a +-1 value is
 * one bit, 1 = -1 (the sign bit), 0 = +1.  Channel c of a group is bit c % 64 of
 * word c / 64 of that group; a group's bits past its channel count are 0.  A
 * packed pixel is `groups` runs of `wpg = bnhw_words(C / groups)` 64-bit words.
 * On a little-endian machine the bytes of a one-group pixel whose channel count
 * is a multiple of 64 are exactly LCE's int32 bitpacked layout.
 *
 * Every kernel exists as `_ref` (plain C99, the specification) and `_portable`
 * (plain C written so that compilers vectorise it / use popcnt); on x86-64
 * (GCC / Clang) as `_avx2`, `_avx512bw` and `_avx512` (kernels_x86.c: every
 * function has its own target attribute, so one build runs on any x86-64 CPU),
 * and, when compiled for ARM with NEON (ARMv7-A or AArch64), `_neon`.
 *
 * Kernel sets (bnhw_kernel_set) are chosen at run time: a set is handed out only
 * when the CPU has what it needs (CPUID via __builtin_cpu_supports on x86-64,
 * getauxval(AT_HWCAP) on ARM Linux), so asking for a set never ends in an
 * illegal instruction.  The sets:
 *   ref       the reference kernels
 *   portable  plain C (on x86-64 built with -mpopcnt, then it needs popcnt)
 *   avx2      AVX2 + popcnt: vpshufb nibble-lookup popcount, vpmaddwd, vmovmskps
 *   avx512bw  AVX-512F/BW without VPOPCNTDQ: the same lookups on 512-bit vectors
 *   avx512    AVX-512F/BW + VPOPCNTDQ: vpopcntq for bgemm, pack / gemm_s16 as avx512bw
 *   neon      ARMv7 NEON / AArch64 ASIMD
 *   auto      (alias "opt") the best set this CPU runs: avx512 > avx512bw > avx2 >
 *             portable on x86-64, neon > portable on ARM
 * Every optimised kernel is tested bit-exact against `_ref` (kernel_test.c).
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
static inline int bnhw_words(int bits) { return bits / BNHW_WORD_BITS + (bits % BNHW_WORD_BITS != 0); }

/* pack: x int32 [n][C] (row stride C) -> out [n][groups][wpg] words, wpg = bnhw_words(C / groups).
 * Element c of row p is -1 (bit 1) iff x[p][c] < thr[c]; thr == NULL means thr[c] = 0.
 * Unused bits of every group's last word are 0.  C % groups == 0. */
typedef void (*bnhw_pack_fn)(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out);

/* bgemm: c[i * ldc + j] = popcount(a_i XOR b_j) over K words, where a_i = a + i * lda and
 * b_j = b + j * ldb (word strides).  M, N >= 0; K >= 0; the count fits int32. */
typedef void (*bnhw_bgemm_fn)(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *b, int ldb,
                              int32_t *c, int ldc);

/* bgemm_small: the counts of bgemm, c[i * ldc + j] = popcount(a_i XOR b_j) over K words, with B stored
 * k-major: word k of b_j is bt[k * ldbt + j] (ldbt >= N).  The kernel of the shallow convolutions (a
 * group 1-2 words deep, K = taps x 1-2 words, a few dozen output channels): the vector sets put output
 * channels in lanes -- one broadcast word of a_i against a vector of channels' words -- so no
 * horizontal sum is needed, where bgemm's vectors run along K.  Same signature as bgemm. */

/* gemm_s16: c[i * ldc + j] = sum_k a[i * lda + k] * b[j * ldb + k], int32 arithmetic.
 * The caller guarantees |a| * |b| * 2 < 2^31 for every pair and that every partial sum fits int32
 * (so implementations may add adjacent products in int32, as pmaddwd / vmlal do). */
typedef void (*bnhw_gemm_s16_fn)(int M, int N, int K, const int16_t *a, int lda, const int16_t *b, int ldb,
                                 int32_t *c, int ldc);

typedef struct {
    const char *name;          /* "ref" | "portable" | "avx2" | "avx512bw" | "avx512" | "neon" */
    bnhw_pack_fn pack;
    bnhw_bgemm_fn bgemm;
    bnhw_gemm_s16_fn gemm_s16;
    bnhw_bgemm_fn bgemm_small;  /* B k-major (see above) */
} bnhw_kernels;

void bnhw_pack_ref(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out);
void bnhw_bgemm_ref(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *b, int ldb,
                    int32_t *c, int ldc);
void bnhw_gemm_s16_ref(int M, int N, int K, const int16_t *a, int lda, const int16_t *b, int ldb,
                       int32_t *c, int ldc);
void bnhw_bgemm_small_ref(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *bt, int ldbt,
                          int32_t *c, int ldc);

void bnhw_pack_portable(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out);
void bnhw_bgemm_portable(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *b, int ldb,
                         int32_t *c, int ldc);
void bnhw_gemm_s16_portable(int M, int N, int K, const int16_t *a, int lda, const int16_t *b, int ldb,
                            int32_t *c, int ldc);
void bnhw_bgemm_small_portable(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *bt, int ldbt,
                               int32_t *c, int ldc);

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define BNHW_HAVE_X86 1
void bnhw_pack_avx2(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out);
void bnhw_bgemm_avx2(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *b, int ldb,
                     int32_t *c, int ldc);
void bnhw_gemm_s16_avx2(int M, int N, int K, const int16_t *a, int lda, const int16_t *b, int ldb,
                        int32_t *c, int ldc);
void bnhw_bgemm_small_avx2(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *bt, int ldbt,
                           int32_t *c, int ldc);
void bnhw_pack_avx512bw(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out);
void bnhw_bgemm_avx512bw(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *b, int ldb,
                         int32_t *c, int ldc);
void bnhw_gemm_s16_avx512bw(int M, int N, int K, const int16_t *a, int lda, const int16_t *b, int ldb,
                            int32_t *c, int ldc);
void bnhw_bgemm_small_avx512bw(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *bt, int ldbt,
                               int32_t *c, int ldc);
void bnhw_bgemm_avx512(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *b, int ldb,
                       int32_t *c, int ldc);
void bnhw_bgemm_small_avx512(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *bt, int ldbt,
                             int32_t *c, int ldc);
#else
#define BNHW_HAVE_X86 0
#endif

#if defined(__ARM_NEON) || defined(__ARM_NEON__)
#define BNHW_HAVE_NEON 1
void bnhw_pack_neon(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out);
void bnhw_bgemm_neon(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *b, int ldb,
                     int32_t *c, int ldc);
void bnhw_gemm_s16_neon(int M, int N, int K, const int16_t *a, int lda, const int16_t *b, int ldb,
                        int32_t *c, int ldc);
void bnhw_bgemm_small_neon(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *bt, int ldbt,
                           int32_t *c, int ldc);
#else
#define BNHW_HAVE_NEON 0
#endif

/* The table of one set by name, or "auto" / "opt" (the best this CPU runs); NULL when the name is
 * unknown, the set is not compiled in for this architecture, or this CPU lacks what it needs
 * (bnhw_kernel_set_why says which). */
const bnhw_kernels *bnhw_kernel_set(const char *name);

/* NULL when bnhw_kernel_set(name) gives a table, else a one-line reason naming the set and what the
 * CPU has, e.g. "kernel set avx512 needs avx512f avx512bw avx512vpopcntdq; this CPU has popcnt avx2
 * (usable: ref,portable,avx2)" */
const char *bnhw_kernel_set_why(const char *name);

/* names of the compiled-in sets, comma separated, e.g. "ref,portable,avx2,avx512bw,avx512" */
const char *bnhw_kernel_sets(void);

/* the compiled-in sets this CPU runs, in the same order (the last one is what "auto" picks) */
const char *bnhw_kernel_sets_usable(void);

/* the CPU features the set choice looks at that this CPU has, space separated (e.g. "popcnt avx2") */
const char *bnhw_cpu_features(void);

#ifdef __cplusplus
}
#endif
#endif
