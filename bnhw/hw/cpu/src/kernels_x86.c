/* x86-64 vector kernels: AVX2, AVX-512BW and AVX-512 with VPOPCNTDQ, bit-exact with kernels_ref.c.
 *
 * Every function carries its own target attribute, so this file is compiled with the library's
 * ordinary (baseline x86-64) flags and the same binary runs on any x86-64 CPU: kernel_sets.c only
 * hands out a set after CPUID (__builtin_cpu_supports) says the CPU has its features.  On other
 * architectures (and compilers without target attributes) the file is empty.
 *
 *   avx2      bgemm: XOR, nibble-lookup popcount (vpshufb) into byte counters, widened by vpsadbw
 *             every 31 steps (below 12 words a scalar popcnt tile); gemm_s16: vpmaddwd; pack:
 *             vpcmpgtd + vmovmskps, 8 channels a step.
 *   avx512bw  the same on 512-bit vectors (no VPOPCNTDQ: Skylake-X, Cascade Lake); remainders by
 *             masked loads.
 *   avx512    bgemm with vpopcntq (AVX512_VPOPCNTDQ: Ice Lake, Zen 4): XOR + popcount + add per 8
 *             words; gemm_s16 and pack as avx512bw.
 * The tile shapes (MR x NR outputs per pass over K) keep every accumulator in a register.
 */
#include "bnhw_kernels.h"
#include "bnhw_tiling.h"

#if BNHW_HAVE_X86

#include <immintrin.h>

#define T_AVX2 __attribute__((target("avx2,popcnt")))
#define T_BW __attribute__((target("avx2,avx512f,avx512bw,popcnt")))
#define T_VPOP __attribute__((target("avx2,avx512f,avx512bw,avx512vpopcntdq,popcnt")))
#define INL static inline __attribute__((always_inline))

/* ------------------------------------------------------------------------------ AVX2 */

#define A2_MR 2
#define A2_NR 4

/* popcount of every byte of v: two 16-entry lookups (low and high nibble) */
INL T_AVX2 __m256i popcnt8_avx2(__m256i v)
{
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1,
                                         2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256i lo = _mm256_and_si256(v, low), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

INL T_AVX2 uint64_t hsum64_avx2(__m256i v)
{
    __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return (uint64_t)_mm_cvtsi128_si64(s) + (uint64_t)_mm_extract_epi64(s, 1);
}

/* the lane sums of four vectors of 4 x 64 bits, as 4 x 32 bits (each sum < 2^31): one store per tile row */
INL T_AVX2 __m128i hsum4x64_avx2(__m256i v0, __m256i v1, __m256i v2, __m256i v3)
{
    __m256i t0 = _mm256_add_epi64(_mm256_unpacklo_epi64(v0, v1), _mm256_unpackhi_epi64(v0, v1));
    __m256i t1 = _mm256_add_epi64(_mm256_unpacklo_epi64(v2, v3), _mm256_unpackhi_epi64(v2, v3));
    __m256i u = _mm256_add_epi64(_mm256_permute2x128_si256(t0, t1, 0x20), _mm256_permute2x128_si256(t0, t1, 0x31));
    return _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(u, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
}

/* the same for four vectors of 8 x 32 bits */
INL T_AVX2 __m128i hsum4x32_avx2(__m256i v0, __m256i v1, __m256i v2, __m256i v3)
{
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* words [0, cnt) of p, cnt < 4, the rest 0 (vpmaskmovq reads nothing past them) */
INL T_AVX2 __m256i load_words_avx2(const bnhw_word *p, int cnt)
{
    __m256i m = _mm256_cmpgt_epi64(_mm256_set1_epi64x(cnt), _mm256_setr_epi64x(0, 1, 2, 3));
    return _mm256_maskload_epi64((const long long *)p, m);
}

/* R x Cn outputs (R <= A2_MR, Cn <= A2_NR, constants after inlining).  Byte counters gain at most 8
 * a step, so they are widened to 64 bits (vpsadbw against 0) every 31 steps of 4 words; the last
 * K % 4 words by masked loads. */
INL T_AVX2 void bgemm_tile_avx2(int R, int Cn, int K, const bnhw_word *a, size_t lda, const bnhw_word *b,
                                size_t ldb, int32_t *c, size_t ldc)
{
    __m256i s64[A2_MR][A2_NR], s8[A2_MR][A2_NR];
    const __m256i zero = _mm256_setzero_si256();
    for (int r = 0; r < R; r++)
        for (int j = 0; j < Cn; j++)
            s64[r][j] = zero;
    int k = 0;
    while (k < K) {
        int end = K - k > 31 * 4 ? k + 31 * 4 : K;
        for (int r = 0; r < R; r++)
            for (int j = 0; j < Cn; j++)
                s8[r][j] = zero;
        for (; k + 4 <= end; k += 4) {
            __m256i va[A2_MR];
            for (int r = 0; r < R; r++)
                va[r] = _mm256_loadu_si256((const __m256i *)(a + r * lda + k));
            for (int j = 0; j < Cn; j++) {
                __m256i vb = _mm256_loadu_si256((const __m256i *)(b + j * ldb + k));
                for (int r = 0; r < R; r++)
                    s8[r][j] = _mm256_add_epi8(s8[r][j], popcnt8_avx2(_mm256_xor_si256(va[r], vb)));
            }
        }
        if (k < end) {
            __m256i va[A2_MR];
            for (int r = 0; r < R; r++)
                va[r] = load_words_avx2(a + r * lda + k, end - k);
            for (int j = 0; j < Cn; j++) {
                __m256i vb = load_words_avx2(b + j * ldb + k, end - k);
                for (int r = 0; r < R; r++)
                    s8[r][j] = _mm256_add_epi8(s8[r][j], popcnt8_avx2(_mm256_xor_si256(va[r], vb)));
            }
            k = end;
        }
        for (int r = 0; r < R; r++)
            for (int j = 0; j < Cn; j++)
                s64[r][j] = _mm256_add_epi64(s64[r][j], _mm256_sad_epu8(s8[r][j], zero));
    }
    for (int r = 0; r < R; r++) {
        if (Cn == 4) {
            _mm_storeu_si128((__m128i *)(c + r * ldc), hsum4x64_avx2(s64[r][0], s64[r][1], s64[r][2], s64[r][3]));
            continue;
        }
        for (int j = 0; j < Cn; j++)
            c[r * ldc + j] = (int32_t)hsum64_avx2(s64[r][j]);
    }
}

/* Below SCALAR_K words a dot product is too short for the lookup popcount to pay for its reductions
 * (measured on Zen 4: avx2 and avx512bw lose to scalar popcnt up to K = 9 .. 11 words, win from 12),
 * so the avx2 and avx512bw bgemms take a scalar popcnt tile there (4 x 2 outputs, as portable's). */
#define SCALAR_K 12
#define S_MR 4
#define S_NR 2

INL T_AVX2 void bgemm_tile_scalar(int R, int Cn, int K, const bnhw_word *a, size_t lda, const bnhw_word *b,
                                  size_t ldb, int32_t *c, size_t ldc)
{
    uint64_t s[S_MR][S_NR];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < Cn; j++)
            s[r][j] = 0;
    for (int k = 0; k < K; k++) {
        bnhw_word va[S_MR];
        for (int r = 0; r < R; r++)
            va[r] = a[r * lda + k];
        for (int j = 0; j < Cn; j++) {
            bnhw_word vb = b[j * ldb + k];
            for (int r = 0; r < R; r++)
                s[r][j] += (uint64_t)_mm_popcnt_u64(va[r] ^ vb);
        }
    }
    for (int r = 0; r < R; r++)
        for (int j = 0; j < Cn; j++)
            c[r * ldc + j] = (int32_t)s[r][j];
}

static T_AVX2 void bgemm_scalar(int M, int N, int K, const bnhw_word *a, size_t la, const bnhw_word *b, size_t lb,
                                int32_t *c, size_t lc)
{
#define TILE(R, Cn, i, j) bgemm_tile_scalar(R, Cn, K, a + (i) * la, la, b + (j) * lb, lb, c + (i) * lc + (j), lc)
    BNHW_FOR_TILES(M, N, S_MR, S_NR, TILE);
#undef TILE
}

T_AVX2 void bnhw_bgemm_avx2(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *b, int ldb,
                            int32_t *c, int ldc)
{
    if (K < 0)
        K = 0;
    size_t la = (size_t)lda, lb = (size_t)ldb, lc = (size_t)ldc;
    if (K < SCALAR_K) {
        bgemm_scalar(M, N, K, a, la, b, lb, c, lc);
        return;
    }
#define TILE(R, Cn, i, j) bgemm_tile_avx2(R, Cn, K, a + (i) * la, la, b + (j) * lb, lb, c + (i) * lc + (j), lc)
    BNHW_FOR_TILES(M, N, A2_MR, A2_NR, TILE);
#undef TILE
}

/* bgemm_small, AVX2: four output channels per vector (64-bit lanes).  A tile is R (<= 2) rows x V
 * (<= 2) vectors; each step broadcasts one word of a row against the vectors' words (k-major B), byte
 * counts (nibble lookups) added for up to 31 steps, then vpsadbw sums each lane's bytes: the lane's
 * count, no horizontal sum.  The last vector's missing channels by masked loads (never read). */
#define A2S_MR 2

INL T_AVX2 __m256i lane_mask_avx2(int cnt)
{
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(cnt), _mm256_setr_epi64x(0, 1, 2, 3));
}

/* the four 64-bit lanes of v (each < 2^31) as int32 to c[0, cnt) */
INL T_AVX2 void store_lanes_avx2(int32_t *c, __m256i v, int cnt)
{
    __m128i s = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
    if (cnt == 4)
        _mm_storeu_si128((__m128i *)c, s);
    else
        _mm_maskstore_epi32(c, _mm_cmpgt_epi32(_mm_set1_epi32(cnt), _mm_setr_epi32(0, 1, 2, 3)), s);
}

INL T_AVX2 void bgemm_small_tile_avx2(int R, int V, int K, const bnhw_word *a, size_t lda, const bnhw_word *bt,
                                      size_t ldbt, int last, int32_t *c, size_t ldc)
{
    __m256i s64[A2S_MR][2], s8[A2S_MR][2];
    const __m256i zero = _mm256_setzero_si256(), mlast = lane_mask_avx2(last);
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++)
            s64[r][v] = zero;
    int k = 0;
    while (k < K) {
        int end = K - k > 31 ? k + 31 : K;
        for (int r = 0; r < R; r++)
            for (int v = 0; v < V; v++)
                s8[r][v] = zero;
        for (; k < end; k++) {
            const bnhw_word *bk = bt + (size_t)k * ldbt;
            __m256i vb[2];
            for (int v = 0; v < V; v++)
                vb[v] = v == V - 1 && last < 4 ? _mm256_maskload_epi64((const long long *)(bk + 4 * v), mlast)
                                               : _mm256_loadu_si256((const __m256i *)(bk + 4 * v));
            for (int r = 0; r < R; r++) {
                __m256i va = _mm256_set1_epi64x((long long)a[r * lda + k]);
                for (int v = 0; v < V; v++)
                    s8[r][v] = _mm256_add_epi8(s8[r][v], popcnt8_avx2(_mm256_xor_si256(va, vb[v])));
            }
        }
        for (int r = 0; r < R; r++)
            for (int v = 0; v < V; v++)
                s64[r][v] = _mm256_add_epi64(s64[r][v], _mm256_sad_epu8(s8[r][v], zero));
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++)
            store_lanes_avx2(c + r * ldc + 4 * v, s64[r][v], v == V - 1 ? last : 4);
}

T_AVX2 void bnhw_bgemm_small_avx2(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *bt, int ldbt,
                                  int32_t *c, int ldc)
{
    if (K < 0)
        K = 0;
    size_t la = (size_t)lda, lb = (size_t)ldbt, lc = (size_t)ldc;
    for (int j = 0; j < N; j += 8) {
        int n = N - j < 8 ? N - j : 8, last = n > 4 ? n - 4 : n;
        int i = 0;
#define ROWS(R)                                                                                              \
    do {                                                                                                     \
        if (n > 4)                                                                                           \
            bgemm_small_tile_avx2(R, 2, K, a + i * la, la, bt + j, lb, last, c + i * lc + j, lc);            \
        else                                                                                                 \
            bgemm_small_tile_avx2(R, 1, K, a + i * la, la, bt + j, lb, last, c + i * lc + j, lc);            \
    } while (0)
        for (; i + A2S_MR <= M; i += A2S_MR)
            ROWS(A2S_MR);
        for (; i < M; i++)
            ROWS(1);
#undef ROWS
    }
}

INL T_AVX2 uint32_t hsum32_avx2(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return (uint32_t)_mm_cvtsi128_si32(s);
}

/* int32 lanes wrap (vpaddd), the scalar tail sums in uint32: the contract makes the true sum an int32,
 * so the result is exact whatever the order */
INL T_AVX2 void gemm_s16_tile_avx2(int R, int Cn, int K, const int16_t *a, size_t lda, const int16_t *b,
                                   size_t ldb, int32_t *c, size_t ldc)
{
    __m256i s[A2_MR][A2_NR];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < Cn; j++)
            s[r][j] = _mm256_setzero_si256();
    int K16 = K & ~15;
    for (int k = 0; k < K16; k += 16) {
        __m256i va[A2_MR];
        for (int r = 0; r < R; r++)
            va[r] = _mm256_loadu_si256((const __m256i *)(a + r * lda + k));
        for (int j = 0; j < Cn; j++) {
            __m256i vb = _mm256_loadu_si256((const __m256i *)(b + j * ldb + k));
            for (int r = 0; r < R; r++)
                s[r][j] = _mm256_add_epi32(s[r][j], _mm256_madd_epi16(va[r], vb));
        }
    }
    for (int r = 0; r < R; r++) {
        uint32_t t[A2_NR];
        if (Cn == 4)
            _mm_storeu_si128((__m128i *)t, hsum4x32_avx2(s[r][0], s[r][1], s[r][2], s[r][3]));
        else
            for (int j = 0; j < Cn; j++)
                t[j] = hsum32_avx2(s[r][j]);
        for (int j = 0; j < Cn; j++) {
            for (int q = K16; q < K; q++)
                t[j] += (uint32_t)((int32_t)a[r * lda + q] * b[j * ldb + q]);
            c[r * ldc + j] = (int32_t)t[j];
        }
    }
}

T_AVX2 void bnhw_gemm_s16_avx2(int M, int N, int K, const int16_t *a, int lda, const int16_t *b, int ldb,
                               int32_t *c, int ldc)
{
    if (K < 0)
        K = 0;
    size_t la = (size_t)lda, lb = (size_t)ldb, lc = (size_t)ldc;
#define TILE(R, Cn, i, j) gemm_s16_tile_avx2(R, Cn, K, a + (i) * la, la, b + (j) * lb, lb, c + (i) * lc + (j), lc)
    BNHW_FOR_TILES(M, N, A2_MR, A2_NR, TILE);
#undef TILE
}

/* bits [0, cnt) of one word: bit i = x[i] < t[i] (t == NULL: x[i] < 0, the sign bit, which vmovmskps
 * reads directly); the partial tail word element by element */
INL T_AVX2 bnhw_word pack_word_avx2(const int32_t *x, const int32_t *t, int cnt)
{
    bnhw_word w = 0;
    int i = 0;
    for (; i + 8 <= cnt; i += 8) {
        __m256i vx = _mm256_loadu_si256((const __m256i *)(x + i));
        __m256i lt = t ? _mm256_cmpgt_epi32(_mm256_loadu_si256((const __m256i *)(t + i)), vx) : vx;
        w |= (bnhw_word)(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(lt)) << i;
    }
    for (; i < cnt; i++)
        w |= (bnhw_word)(t ? x[i] < t[i] : x[i] < 0) << i;
    return w;
}

INL T_AVX2 void pack_rows_avx2(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out)
{
#define PACK_FULL(xw, tw) pack_word_avx2(xw, tw, BNHW_WORD_BITS)
    BNHW_FOR_PACK_WORDS(x, n, C, groups, thr, out, PACK_FULL, pack_word_avx2);
#undef PACK_FULL
}

/* Small groups (at most SMALL_CG channels, one word): a pixel is too short for whole vectors, so the
 * pixels are compared as one stream of elements -- 16 a compare against the thresholds repeated with
 * period C (a multiple of 16 long, so a vector never wraps) -- into a bit stream, from which each
 * pixel's group takes its cg bits at bit p * C + g * cg by one unaligned 64-bit read and a shift. */
#define SMALL_CG 56
#define SMALL_C 128                              /* C <= 128: the period L <= 16 C fits one block */
#define STREAM_ELEMS 2048

/* the thresholds (0 when NULL) repeated to L = the least multiple of C and 16 elements */
INL int repeat_thresholds(const int32_t *thr, int C, int32_t *rep)
{
    int L = C;
    while (L % 16) L += C;
    for (int i = 0; i < L; i++) rep[i] = thr ? thr[i % C] : 0;
    return L;
}

/* bits [b, b + cnt) of the little-endian bit stream s (cnt <= 57) */
INL bnhw_word stream_bits(const unsigned char *s, size_t b, int cnt)
{
    uint64_t w;
    __builtin_memcpy(&w, s + b / 8, 8);
    return (w >> (b % 8)) & (((bnhw_word)1 << cnt) - 1);
}

/* AVX2: 8 a compare (vpcmpgtd + vmovmskps) */
INL T_AVX2 void pack_small_avx2(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out)
{
    int32_t rep[16 * SMALL_C + 16];
    uint8_t bits[STREAM_ELEMS / 8 + 16];
    int L = repeat_thresholds(thr, C, rep), cg = C / groups;
    int block = STREAM_ELEMS / L * L / C;
    for (int p0 = 0; p0 < n; p0 += block) {
        int np = n - p0 < block ? n - p0 : block, ne = np * C, e = 0, j = 0;
        const int32_t *xb = x + (size_t)p0 * C;
        for (; e + 8 <= ne; e += 8, j = j + 8 == L ? 0 : j + 8) {
            __m256i vx = _mm256_loadu_si256((const __m256i *)(xb + e));
            __m256i lt = _mm256_cmpgt_epi32(_mm256_loadu_si256((const __m256i *)(rep + j)), vx);
            bits[e / 8] = (uint8_t)_mm256_movemask_ps(_mm256_castsi256_ps(lt));
        }
        if (e < ne) {
            unsigned b = 0;
            for (int i = 0; e + i < ne; i++) b |= (unsigned)(xb[e + i] < rep[j + i]) << i;
            bits[e / 8] = (uint8_t)b;
            e += 8;
        }
        for (int i = e / 8; i < e / 8 + 8; i++) bits[i] = 0;
        bnhw_word *o = out + (size_t)p0 * groups;
        for (int q = 0; q < np * groups; q++) o[q] = stream_bits(bits, (size_t)q * cg, cg);
    }
}

T_AVX2 void bnhw_pack_avx2(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out)
{
    if (n <= 0 || C <= 0 || groups <= 0)
        return;
    if (C / groups <= SMALL_CG && C <= SMALL_C) {
        pack_small_avx2(x, n, C, groups, thr, out);
        return;
    }
    if (thr)
        pack_rows_avx2(x, n, C, groups, thr, out);
    else
        pack_rows_avx2(x, n, C, groups, NULL, out);
}

/* --------------------------------------------------------------------------- AVX-512 */

#define Z_MR 4
#define Z_NR 4

/* 512 -> 256 bits: the sum of the two halves (64- or 32-bit lanes) */
#define HALVES64(v) _mm256_add_epi64(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1))
#define HALVES32(v) _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1))

/* the outputs of one tile row from its Cn 64-bit-lane accumulators (one store when Cn == 4) */
#define STORE_ROW64(s, Cn, crow)                                                                        \
    do {                                                                                                \
        if ((Cn) == 4)                                                                                  \
            _mm_storeu_si128((__m128i *)(crow), hsum4x64_avx2(HALVES64((s)[0]), HALVES64((s)[1]),        \
                                                              HALVES64((s)[2]), HALVES64((s)[3])));     \
        else                                                                                            \
            for (int j_ = 0; j_ < (Cn); j_++) (crow)[j_] = (int32_t)_mm512_reduce_add_epi64((s)[j_]);    \
    } while (0)

/* words [k, k + cnt) of row p, cnt <= 8: a masked load reads nothing past them */
#define LOADW(p, k, cnt) _mm512_maskz_loadu_epi64((__mmask8)((1u << (cnt)) - 1u), (p) + (k))

/* AVX-512BW: nibble lookups on 64 bytes, byte counters widened every 31 steps of 8 words */
INL T_BW __m512i popcnt8_bw(__m512i v)
{
    const __m512i lut = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4));
    const __m512i low = _mm512_set1_epi8(0x0f);
    __m512i lo = _mm512_and_si512(v, low), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
    return _mm512_add_epi8(_mm512_shuffle_epi8(lut, lo), _mm512_shuffle_epi8(lut, hi));
}

INL T_BW void bgemm_tile_bw(int R, int Cn, int K, const bnhw_word *a, size_t lda, const bnhw_word *b, size_t ldb,
                            int32_t *c, size_t ldc)
{
    __m512i s64[Z_MR][Z_NR], s8[Z_MR][Z_NR];
    const __m512i zero = _mm512_setzero_si512();
    for (int r = 0; r < R; r++)
        for (int j = 0; j < Cn; j++)
            s64[r][j] = zero;
    int k = 0;
    while (k < K) {
        int end = K - k > 31 * 8 ? k + 31 * 8 : K;
        for (int r = 0; r < R; r++)
            for (int j = 0; j < Cn; j++)
                s8[r][j] = zero;
        for (; k < end; k += 8) {
            int cnt = end - k < 8 ? end - k : 8;
            __m512i va[Z_MR];
            for (int r = 0; r < R; r++)
                va[r] = LOADW(a + r * lda, k, cnt);
            for (int j = 0; j < Cn; j++) {
                __m512i vb = LOADW(b + j * ldb, k, cnt);
                for (int r = 0; r < R; r++)
                    s8[r][j] = _mm512_add_epi8(s8[r][j], popcnt8_bw(_mm512_xor_si512(va[r], vb)));
            }
        }
        for (int r = 0; r < R; r++)
            for (int j = 0; j < Cn; j++)
                s64[r][j] = _mm512_add_epi64(s64[r][j], _mm512_sad_epu8(s8[r][j], zero));
    }
    for (int r = 0; r < R; r++)
        STORE_ROW64(s64[r], Cn, c + r * ldc);
}

T_BW void bnhw_bgemm_avx512bw(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *b, int ldb,
                              int32_t *c, int ldc)
{
    if (K < 0)
        K = 0;
    size_t la = (size_t)lda, lb = (size_t)ldb, lc = (size_t)ldc;
    if (K < SCALAR_K) {
        bgemm_scalar(M, N, K, a, la, b, lb, c, lc);
        return;
    }
#define TILE(R, Cn, i, j) bgemm_tile_bw(R, Cn, K, a + (i) * la, la, b + (j) * lb, lb, c + (i) * lc + (j), lc)
    BNHW_FOR_TILES(M, N, Z_MR, Z_NR, TILE);
#undef TILE
}

/* VPOPCNTDQ: one popcount per 64-bit lane, summed in 64-bit lanes (no widening needed) */
INL T_VPOP void bgemm_tile_vpop(int R, int Cn, int K, const bnhw_word *a, size_t lda, const bnhw_word *b,
                                size_t ldb, int32_t *c, size_t ldc)
{
    __m512i s[Z_MR][Z_NR];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < Cn; j++)
            s[r][j] = _mm512_setzero_si512();
    int K8 = K & ~7;
    for (int k = 0; k < K8; k += 8) {
        __m512i va[Z_MR];
        for (int r = 0; r < R; r++)
            va[r] = _mm512_loadu_si512((const void *)(a + r * lda + k));
        for (int j = 0; j < Cn; j++) {
            __m512i vb = _mm512_loadu_si512((const void *)(b + j * ldb + k));
            for (int r = 0; r < R; r++)
                s[r][j] = _mm512_add_epi64(s[r][j], _mm512_popcnt_epi64(_mm512_xor_si512(va[r], vb)));
        }
    }
    if (K8 < K) {
        __m512i va[Z_MR];
        for (int r = 0; r < R; r++)
            va[r] = LOADW(a + r * lda, K8, K - K8);
        for (int j = 0; j < Cn; j++) {
            __m512i vb = LOADW(b + j * ldb, K8, K - K8);
            for (int r = 0; r < R; r++)
                s[r][j] = _mm512_add_epi64(s[r][j], _mm512_popcnt_epi64(_mm512_xor_si512(va[r], vb)));
        }
    }
    for (int r = 0; r < R; r++)
        STORE_ROW64(s[r], Cn, c + r * ldc);
}

T_VPOP void bnhw_bgemm_avx512(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *b, int ldb,
                              int32_t *c, int ldc)
{
    if (K < 0)
        K = 0;
    size_t la = (size_t)lda, lb = (size_t)ldb, lc = (size_t)ldc;
#define TILE(R, Cn, i, j) bgemm_tile_vpop(R, Cn, K, a + (i) * la, la, b + (j) * lb, lb, c + (i) * lc + (j), lc)
    BNHW_FOR_TILES(M, N, Z_MR, Z_NR, TILE);
#undef TILE
}

/* bgemm_small, AVX-512: eight output channels per vector (64-bit lanes), R (<= 4) rows x V (<= 2)
 * vectors a tile; each step broadcasts one word of a row against the vectors' words (k-major B, the
 * last vector's missing channels masked off: never read).  VPOPCNTDQ adds each lane's count; the
 * AVX512BW form adds nibble-lookup byte counts for up to 31 steps and sums them by vpsadbw.  vpmovqd
 * stores the lanes as int32 under the column mask. */
#define ZS_MR 4

INL T_BW __mmask8 lanes8(int cnt) { return (__mmask8)((1u << cnt) - 1u); }

INL T_BW void bgemm_small_tile_bw(int R, int V, int K, const bnhw_word *a, size_t lda, const bnhw_word *bt,
                                  size_t ldbt, int last, int32_t *c, size_t ldc)
{
    __m512i s64[ZS_MR][2], s8[ZS_MR][2];
    const __m512i zero = _mm512_setzero_si512();
    const __mmask8 ml = lanes8(last);
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++)
            s64[r][v] = zero;
    int k = 0;
    while (k < K) {
        int end = K - k > 31 ? k + 31 : K;
        for (int r = 0; r < R; r++)
            for (int v = 0; v < V; v++)
                s8[r][v] = zero;
        for (; k < end; k++) {
            const bnhw_word *bk = bt + (size_t)k * ldbt;
            __m512i vb[2];
            for (int v = 0; v < V; v++)
                vb[v] = _mm512_maskz_loadu_epi64(v == V - 1 ? ml : (__mmask8)0xff, bk + 8 * v);
            for (int r = 0; r < R; r++) {
                __m512i va = _mm512_set1_epi64((long long)a[r * lda + k]);
                for (int v = 0; v < V; v++)
                    s8[r][v] = _mm512_add_epi8(s8[r][v], popcnt8_bw(_mm512_xor_si512(va, vb[v])));
            }
        }
        for (int r = 0; r < R; r++)
            for (int v = 0; v < V; v++)
                s64[r][v] = _mm512_add_epi64(s64[r][v], _mm512_sad_epu8(s8[r][v], zero));
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++)
            _mm512_mask_cvtepi64_storeu_epi32(c + r * ldc + 8 * v, v == V - 1 ? ml : (__mmask8)0xff, s64[r][v]);
}

INL T_VPOP void bgemm_small_tile_vpop(int R, int V, int K, const bnhw_word *a, size_t lda, const bnhw_word *bt,
                                      size_t ldbt, int last, int32_t *c, size_t ldc)
{
    __m512i s[ZS_MR][2];
    const __mmask8 ml = lanes8(last);
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++)
            s[r][v] = _mm512_setzero_si512();
    for (int k = 0; k < K; k++) {
        const bnhw_word *bk = bt + (size_t)k * ldbt;
        __m512i vb[2];
        for (int v = 0; v < V; v++)
            vb[v] = _mm512_maskz_loadu_epi64(v == V - 1 ? ml : (__mmask8)0xff, bk + 8 * v);
        for (int r = 0; r < R; r++) {
            __m512i va = _mm512_set1_epi64((long long)a[r * lda + k]);
            for (int v = 0; v < V; v++)
                s[r][v] = _mm512_add_epi64(s[r][v], _mm512_popcnt_epi64(_mm512_xor_si512(va, vb[v])));
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++)
            _mm512_mask_cvtepi64_storeu_epi32(c + r * ldc + 8 * v, v == V - 1 ? ml : (__mmask8)0xff, s[r][v]);
}

/* columns in blocks of 16 (two vectors; the last block one or two), rows ZS_MR at a time */
#define BGEMM_SMALL_512(TILEFN)                                                                              \
    do {                                                                                                     \
        if (K < 0)                                                                                           \
            K = 0;                                                                                           \
        size_t la = (size_t)lda, lb = (size_t)ldbt, lc = (size_t)ldc;                                        \
        for (int j = 0; j < N; j += 16) {                                                                    \
            int n = N - j < 16 ? N - j : 16, last = n > 8 ? n - 8 : n, i = 0;                               \
            for (; i + ZS_MR <= M; i += ZS_MR) {                                                             \
                if (n > 8) TILEFN(ZS_MR, 2, K, a + i * la, la, bt + j, lb, last, c + i * lc + j, lc);        \
                else TILEFN(ZS_MR, 1, K, a + i * la, la, bt + j, lb, last, c + i * lc + j, lc);              \
            }                                                                                                \
            for (; i < M; i++) {                                                                             \
                if (n > 8) TILEFN(1, 2, K, a + i * la, la, bt + j, lb, last, c + i * lc + j, lc);            \
                else TILEFN(1, 1, K, a + i * la, la, bt + j, lb, last, c + i * lc + j, lc);                  \
            }                                                                                                \
        }                                                                                                    \
    } while (0)

T_BW void bnhw_bgemm_small_avx512bw(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *bt, int ldbt,
                                    int32_t *c, int ldc)
{
    BGEMM_SMALL_512(bgemm_small_tile_bw);
}

T_VPOP void bnhw_bgemm_small_avx512(int M, int N, int K, const bnhw_word *a, int lda, const bnhw_word *bt, int ldbt,
                                    int32_t *c, int ldc)
{
    BGEMM_SMALL_512(bgemm_small_tile_vpop);
}

/* vpmaddwd on 32 int16; the remainder by a masked load (zeros add nothing) */
INL T_BW void gemm_s16_tile_bw(int R, int Cn, int K, const int16_t *a, size_t lda, const int16_t *b, size_t ldb,
                               int32_t *c, size_t ldc)
{
    __m512i s[Z_MR][Z_NR];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < Cn; j++)
            s[r][j] = _mm512_setzero_si512();
    for (int k = 0; k < K; k += 32) {
        int cnt = K - k < 32 ? K - k : 32;
        __mmask32 m = cnt == 32 ? ~(__mmask32)0 : (((__mmask32)1 << cnt) - 1);
        __m512i va[Z_MR];
        for (int r = 0; r < R; r++)
            va[r] = _mm512_maskz_loadu_epi16(m, a + r * lda + k);
        for (int j = 0; j < Cn; j++) {
            __m512i vb = _mm512_maskz_loadu_epi16(m, b + j * ldb + k);
            for (int r = 0; r < R; r++)
                s[r][j] = _mm512_add_epi32(s[r][j], _mm512_madd_epi16(va[r], vb));
        }
    }
    for (int r = 0; r < R; r++) {
        if (Cn == 4) {
            _mm_storeu_si128((__m128i *)(c + r * ldc), hsum4x32_avx2(HALVES32(s[r][0]), HALVES32(s[r][1]),
                                                                      HALVES32(s[r][2]), HALVES32(s[r][3])));
            continue;
        }
        for (int j = 0; j < Cn; j++)
            c[r * ldc + j] = _mm512_reduce_add_epi32(s[r][j]);
    }
}

T_BW void bnhw_gemm_s16_avx512bw(int M, int N, int K, const int16_t *a, int lda, const int16_t *b, int ldb,
                                 int32_t *c, int ldc)
{
    if (K < 0)
        K = 0;
    size_t la = (size_t)lda, lb = (size_t)ldb, lc = (size_t)ldc;
#define TILE(R, Cn, i, j) gemm_s16_tile_bw(R, Cn, K, a + (i) * la, la, b + (j) * lb, lb, c + (i) * lc + (j), lc)
    BNHW_FOR_TILES(M, N, Z_MR, Z_NR, TILE);
#undef TILE
}

/* 16 channels a compare (vpcmpd into a mask register); the tail by masked loads and a masked compare */
INL T_BW bnhw_word pack_word_bw(const int32_t *x, const int32_t *t, int cnt)
{
    bnhw_word w = 0;
    for (int i = 0; i < cnt; i += 16) {
        int n = cnt - i < 16 ? cnt - i : 16;
        __mmask16 m = (__mmask16)(n == 16 ? 0xffffu : (1u << n) - 1u);
        __m512i vx = _mm512_maskz_loadu_epi32(m, x + i);
        __m512i vt = t ? _mm512_maskz_loadu_epi32(m, t + i) : _mm512_setzero_si512();
        w |= (bnhw_word)_mm512_mask_cmplt_epi32_mask(m, vx, vt) << i;
    }
    return w;
}

INL T_BW void pack_rows_bw(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out)
{
#define PACK_FULL(xw, tw) pack_word_bw(xw, tw, BNHW_WORD_BITS)
    BNHW_FOR_PACK_WORDS(x, n, C, groups, thr, out, PACK_FULL, pack_word_bw);
#undef PACK_FULL
}

INL T_BW void pack_small_bw(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out)
{
    int32_t rep[16 * SMALL_C + 16];              /* L <= 16 C */
    uint16_t bits[STREAM_ELEMS / 16 + 8];        /* + 8: the last 64-bit read stays inside */
    int L = repeat_thresholds(thr, C, rep), cg = C / groups;
    int block = STREAM_ELEMS / L * L / C;        /* pixels a block: whole periods of the thresholds */
    for (int p0 = 0; p0 < n; p0 += block) {
        int np = n - p0 < block ? n - p0 : block, ne = np * C;
        const int32_t *xb = x + (size_t)p0 * C;
        for (int e = 0, j = 0; e < ne; e += 16, j = j + 16 == L ? 0 : j + 16) {
            int cnt = ne - e < 16 ? ne - e : 16;
            __mmask16 m = (__mmask16)(cnt == 16 ? 0xffffu : (1u << cnt) - 1u);
            __m512i vx = _mm512_maskz_loadu_epi32(m, xb + e);
            bits[e / 16] = (uint16_t)_mm512_mask_cmplt_epi32_mask(m, vx, _mm512_loadu_si512((const void *)(rep + j)));
        }
        for (int i = (ne + 15) / 16; i < (ne + 15) / 16 + 4; i++) bits[i] = 0;
        bnhw_word *o = out + (size_t)p0 * groups;
        for (int q = 0; q < np * groups; q++) o[q] = stream_bits((const unsigned char *)bits, (size_t)q * cg, cg);
    }
}

T_BW void bnhw_pack_avx512bw(const int32_t *x, int n, int C, int groups, const int32_t *thr, bnhw_word *out)
{
    if (n <= 0 || C <= 0 || groups <= 0)
        return;
    if (C / groups <= SMALL_CG && C <= SMALL_C) {
        pack_small_bw(x, n, C, groups, thr, out);
        return;
    }
    if (thr)
        pack_rows_bw(x, n, C, groups, thr, out);
    else
        pack_rows_bw(x, n, C, groups, NULL, out);
}

#endif /* BNHW_HAVE_X86 */
