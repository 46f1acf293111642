/* The machine's XOR-popcount peak, the benchmark's roofline for the binary GEMM: an L1-resident
 * loop in which every loaded word meets eight words held in registers (or spilled to the stack,
 * which only adds loads), popcount(a XOR r_j) added into eight independent counters.  Loads are
 * not the limit, so this is the rate at which the core retires XOR + POPCNT + ADD on its integer
 * ALUs: the best a scalar-popcount binary GEMM can do.  On x86-64 the same loop with vector
 * popcounts (AVX2 / AVX-512BW nibble lookups, AVX-512 VPOPCNTDQ) follows below: each is called only
 * when the CPU has its features (bnhw.hw.cpu.runtime.xorpop_peak checks the usable kernel sets).  Whatever the compiler makes of this loop at
 * the library's flags (popcnt on x86-64 with -mpopcnt) is the peak the kernels are compared to. */
#include "bnhw_kernels.h"

#if defined(__GNUC__) || defined(__clang__)
#define POPCNT64(x) ((uint64_t)__builtin_popcountll(x))
#define BARRIER() __asm__ volatile("" ::: "memory")
#else
#define BARRIER() ((void)0)
static uint64_t POPCNT64(bnhw_word x)
{
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
    return (x * 0x0101010101010101ULL) >> 56;
}
#endif

/* binary MACs done: n * 8 * 64 * reps; returns the total count so the work cannot be dropped */
int64_t bnhw_xorpop_peak(const bnhw_word *a, int n, int reps, const bnhw_word *r)
{
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
    bnhw_word r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3], r4 = r[4], r5 = r[5], r6 = r[6], r7 = r[7];
    for (int k = 0; k < reps; k++) {
        for (int i = 0; i < n; i++) {
            bnhw_word w = a[i];
            s0 += POPCNT64(w ^ r0); s1 += POPCNT64(w ^ r1); s2 += POPCNT64(w ^ r2); s3 += POPCNT64(w ^ r3);
            s4 += POPCNT64(w ^ r4); s5 += POPCNT64(w ^ r5); s6 += POPCNT64(w ^ r6); s7 += POPCNT64(w ^ r7);
        }
        BARRIER();   /* one pass per repetition */
    }
    return (int64_t)(s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7);
}

#if BNHW_HAVE_X86
#include <immintrin.h>

/* The vector XOR-popcount peaks, the same loop shape (every loaded vector of a meets eight
 * register-held vectors): n words (a multiple of 8), binary MACs done n * 8 * 64 * reps.
 * avx2: vpshufb nibble lookups into byte counters, widened by vpsadbw every 31 vectors;
 * avx512bw: the same on 512 bits; avx512: vpopcntq.  Each returns the total count. */
#define PEAK_LUT8(T, V, lut, low, x) \
    T##_add_epi8(T##_shuffle_epi8(lut, T##_and_##V(x, low)), T##_shuffle_epi8(lut, T##_and_##V(T##_srli_epi16(x, 4), low)))

__attribute__((target("avx2"))) int64_t bnhw_xorpop_peak_avx2(const bnhw_word *a, int n, int reps, const bnhw_word *r)
{
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1,
                                         2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
    __m256i rv[8], s64 = zero;
    for (int j = 0; j < 8; j++) rv[j] = _mm256_set1_epi64x((long long)r[j]);
    for (int k = 0; k < reps; k++) {
        for (int i0 = 0; i0 < n; i0 += 4 * 31) {
            __m256i s8[8];
            for (int j = 0; j < 8; j++) s8[j] = zero;
            int end = n - i0 < 4 * 31 ? n : i0 + 4 * 31;
            for (int i = i0; i < end; i += 4) {
                __m256i w = _mm256_loadu_si256((const __m256i *)(a + i));
                for (int j = 0; j < 8; j++)
                    s8[j] = _mm256_add_epi8(s8[j], PEAK_LUT8(_mm256, si256, lut, low, _mm256_xor_si256(w, rv[j])));
            }
            for (int j = 0; j < 8; j++) s64 = _mm256_add_epi64(s64, _mm256_sad_epu8(s8[j], zero));
        }
        BARRIER();
    }
    return _mm256_extract_epi64(s64, 0) + _mm256_extract_epi64(s64, 1) + _mm256_extract_epi64(s64, 2) +
           _mm256_extract_epi64(s64, 3);
}

__attribute__((target("avx512f,avx512bw"))) int64_t bnhw_xorpop_peak_avx512bw(const bnhw_word *a, int n, int reps,
                                                                             const bnhw_word *r)
{
    const __m512i lut = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4));
    const __m512i low = _mm512_set1_epi8(0x0f), zero = _mm512_setzero_si512();
    __m512i rv[8], s64 = zero;
    for (int j = 0; j < 8; j++) rv[j] = _mm512_set1_epi64((long long)r[j]);
    for (int k = 0; k < reps; k++) {
        for (int i0 = 0; i0 < n; i0 += 8 * 31) {
            __m512i s8[8];
            for (int j = 0; j < 8; j++) s8[j] = zero;
            int end = n - i0 < 8 * 31 ? n : i0 + 8 * 31;
            for (int i = i0; i < end; i += 8) {
                __m512i w = _mm512_loadu_si512((const void *)(a + i));
                for (int j = 0; j < 8; j++)
                    s8[j] = _mm512_add_epi8(s8[j], PEAK_LUT8(_mm512, si512, lut, low, _mm512_xor_si512(w, rv[j])));
            }
            for (int j = 0; j < 8; j++) s64 = _mm512_add_epi64(s64, _mm512_sad_epu8(s8[j], zero));
        }
        BARRIER();
    }
    return _mm512_reduce_add_epi64(s64);
}

__attribute__((target("avx512f,avx512vpopcntdq"))) int64_t bnhw_xorpop_peak_avx512(const bnhw_word *a, int n, int reps,
                                                                                  const bnhw_word *r)
{
    __m512i rv[8], s[8];
    for (int j = 0; j < 8; j++) rv[j] = _mm512_set1_epi64((long long)r[j]), s[j] = _mm512_setzero_si512();
    for (int k = 0; k < reps; k++) {
        for (int i = 0; i < n; i += 8) {
            __m512i w = _mm512_loadu_si512((const void *)(a + i));
            for (int j = 0; j < 8; j++) s[j] = _mm512_add_epi64(s[j], _mm512_popcnt_epi64(_mm512_xor_si512(w, rv[j])));
        }
        BARRIER();
    }
    __m512i t = s[0];
    for (int j = 1; j < 8; j++) t = _mm512_add_epi64(t, s[j]);
    return _mm512_reduce_add_epi64(t);
}
#endif
