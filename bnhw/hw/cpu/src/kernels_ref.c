/* Reference kernels: the plain specification of bnhw_kernels.h, bit by bit. */
#include <string.h>

#include "bnhw_kernels.h"

void bnhw_pack_ref(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out)
{
    int cg = C / groups, wpg = bnhw_words(cg);
    for (int p = 0; p < n; p++) {
        bnhw_word *o = out + (size_t)p * groups * wpg;
        memset(o, 0, sizeof(bnhw_word) * (size_t)groups * wpg);
        for (int c = 0; c < C; c++) {
            int32_t t = thr ? thr[c] : 0;
            if (x[(size_t)p * C + c] < t) {
                int g = c / cg, i = c % cg;
                o[g * wpg + i / BNHW_WORD_BITS] |= (bnhw_word)1 << (i % BNHW_WORD_BITS);
            }
        }
    }
}

static int popcount_ref(bnhw_word w)
{
    int n = 0;
    for (int i = 0; i < BNHW_WORD_BITS; i++)
        n += (int)((w >> i) & 1u);
    return n;
}

void bnhw_bgemm_ref(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *b, int ldb,
                    int32_t *c, int ldc)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            int32_t s = 0;
            for (int k = 0; k < K; k++)
                s += popcount_ref(a[(size_t)i * lda + k] ^ b[(size_t)j * ldb + k]);
            c[(size_t)i * ldc + j] = s;
        }
}

void bnhw_gemm_s16_ref(int M, int N, int K, const int16_t *a, int lda, const int16_t *b, int ldb,
                       int32_t *c, int ldc)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            int64_t s = 0;
            for (int k = 0; k < K; k++)
                s += (int64_t)a[(size_t)i * lda + k] * b[(size_t)j * ldb + k];
            c[(size_t)i * ldc + j] = (int32_t)s;
        }
}

void bnhw_bgemm_small_ref(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *bt, int ldbt,
                          int32_t *c, int ldc)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            int32_t s = 0;
            for (int k = 0; k < K; k++)
                s += popcount_ref(a[(size_t)i * lda + k] ^ bt[(size_t)k * ldbt + j]);
            c[(size_t)i * ldc + j] = s;
        }
}
