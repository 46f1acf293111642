/* Standalone bit-exactness test of every compiled-in kernel set against the reference kernels.
 *
 *     kernel_test [seed [count]]        (defaults: seed 1, count 400)
 *
 * Build it with the kernel sources (kernels_ref.c, kernels_portable.c, kernels_x86.c, kernels_neon.c,
 * kernel_sets.c); it needs nothing but libc.  For each kernel, `count` shapes are generated from the
 * seed (a fixed list of edge cases first, then random ones): M, N not multiples of any tile, K = 0,
 * 1, odd, around the 31-step byte-accumulator limits (62, 124, 248 words) and beyond the 16-bit limit
 * (K > 8192 words with nearly all bits different), strides larger than the rows with garbage in the padding, odd channel
 * counts, groups of 1, 3, 12, 65, 127, ... channels, thresholds NULL and not, extreme int32 inputs
 * for pack and extreme int16 values allowed by the gemm_s16 contract.  The output buffers are
 * pre-filled with a pattern and compared whole, so writes outside the result are caught too; pack's
 * unused bits must be 0.  bgemm_small (B k-major) is checked against bgemm_ref on the same matrices,
 * the reference bgemm_small included.  Prints one line per set and kernel ("neon bgemm 400 shapes ok"), and on
 * the first difference a line naming the set, kernel, shape and index, exiting with status 1.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnhw_kernels.h"

#define MAX_SETS 8

static uint64_t rng_state;

static uint64_t rng(void) /* splitmix64 */
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static int rnd(int lo, int hi) /* uniform in [lo, hi] */
{
    return lo + (int)(rng() % (uint64_t)(hi - lo + 1));
}

static int chance(int percent)
{
    return rnd(0, 99) < percent;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "kernel_test: out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}

static const bnhw_kernels *sets[MAX_SETS];
static int nsets;

/* every compiled-in set the CPU runs (a set it lacks is named on a "skip" line with the reason) */
static void collect_sets(void)
{
    char names[128], usable[128];
    snprintf(names, sizeof names, "%s", bnhw_kernel_sets());
    snprintf(usable, sizeof usable, ",%s,", bnhw_kernel_sets_usable());
    const char *last = NULL;
    for (char *tok = strtok(names, ","); tok; tok = strtok(NULL, ",")) {
        char key[64];
        snprintf(key, sizeof key, ",%s,", tok);
        const bnhw_kernels *k = bnhw_kernel_set(tok);
        if (!strstr(usable, key)) {
            if (k || !bnhw_kernel_set_why(tok)) {
                printf("MISMATCH: kernel set %s is not usable but bnhw_kernel_set() gives it\n", tok);
                exit(1);
            }
            printf("skip %s: %s\n", tok, bnhw_kernel_set_why(tok));
            continue;
        }
        if (!k || strcmp(k->name, tok) != 0 || bnhw_kernel_set_why(tok)) {
            printf("MISMATCH: kernel set %s listed by bnhw_kernel_sets_usable() but bnhw_kernel_set() gives %s\n",
                   tok, k ? k->name : "NULL");
            exit(1);
        }
        last = k->name;
        if (strcmp(tok, "ref") != 0 && nsets < MAX_SETS)
            sets[nsets++] = k;
    }
    const bnhw_kernels *opt = bnhw_kernel_set("opt"), *aut = bnhw_kernel_set("auto");
    if (!opt || opt != aut || !last || strcmp(opt->name, last) != 0 || bnhw_kernel_set("nonesuch") != NULL ||
        bnhw_kernel_set(NULL) || !bnhw_kernel_set_why("nonesuch")) {
        printf("MISMATCH: kernel set table: auto is %s, opt is %s (want %s), unknown names must give NULL\n",
               aut ? aut->name : "NULL", opt ? opt->name : "NULL", last ? last : "NULL");
        exit(1);
    }
}

/* ---------------------------------------------------------------------------------- pack */

static const int group_channels[] = {1, 2, 3, 5, 12, 31, 32, 33, 63, 64, 65, 96, 127, 128, 129, 191, 192, 200, 256, 300};
#define N_GROUP_CHANNELS ((int)(sizeof group_channels / sizeof group_channels[0]))

static int32_t extreme_i32(void)
{
    static const int32_t v[] = {INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX};
    return v[rnd(0, 6)];
}

static int32_t random_i32(void)
{
    return (int32_t)(uint32_t)rng();
}

static void test_pack(int count)
{
    int ok[MAX_SETS] = {0};
    for (int s = 0; s < count; s++) {
        int n, groups, cg, use_thr, mode;
        /* fixed edge cases first: n = 0, one channel, a word exactly, one past, odd groups */
        static const int fixed[][4] = {{0, 1, 64, 0}, {1, 1, 1, 0},   {1, 1, 64, 1},  {2, 1, 65, 0},
                                       {3, 3, 12, 1}, {2, 2, 127, 0}, {1, 4, 3, 1},   {2, 1, 128, 1},
                                       {1, 5, 65, 1}, {3, 2, 129, 0}, {1, 7, 127, 1}, {1, 1, 0, 1}};
        if (s < (int)(sizeof fixed / sizeof fixed[0])) {
            n = fixed[s][0], groups = fixed[s][1], cg = fixed[s][2], use_thr = fixed[s][3];
            mode = s % 4;
        } else {
            n = chance(80) ? rnd(0, 4) : rnd(5, 700);   /* many pixels: the small-group stream's blocks */
            groups = chance(50) ? 1 : rnd(1, 8);
            cg = chance(70) ? group_channels[rnd(0, N_GROUP_CHANNELS - 1)] : rnd(1, 300);
            use_thr = chance(60);
            mode = rnd(0, 3);
        }
        int C = groups * cg, wpg = bnhw_words(cg);
        size_t nx = (size_t)n * C, nw = (size_t)n * groups * wpg + 2; /* + 2 guard words */
        int32_t *x = xmalloc(nx * sizeof *x), *thr = use_thr ? xmalloc((size_t)C * sizeof *thr) : NULL;
        for (int c = 0; use_thr && c < C; c++)
            thr[c] = mode == 2 ? extreme_i32() : mode == 3 ? random_i32() : rnd(-100, 100);
        for (size_t i = 0; i < nx; i++) {
            int32_t t = thr ? thr[i % (size_t)(C ? C : 1)] : 0;
            switch (mode) {
            case 0: x[i] = random_i32(); break;
            case 1: x[i] = t + rnd(-1, 1) * (t > INT32_MIN && t < INT32_MAX); break; /* at the threshold */
            case 2: x[i] = extreme_i32(); break;
            default: x[i] = chance(50) ? extreme_i32() : (int32_t)rnd(-3, 3); break;
            }
        }
        bnhw_word *want = xmalloc(nw * sizeof *want), *got = xmalloc(nw * sizeof *got);
        for (size_t i = 0; i < nw; i++)
            want[i] = 0xA5A5A5A5A5A5A5A5ULL ^ i;
        bnhw_pack_ref(x, n, C, groups, thr, want);
        for (int k = 0; k < nsets; k++) {
            for (size_t i = 0; i < nw; i++)
                got[i] = 0xA5A5A5A5A5A5A5A5ULL ^ i;
            sets[k]->pack(x, n, C, groups, thr, got);
            for (size_t i = 0; i < nw; i++)
                if (got[i] != want[i]) {
                    printf("MISMATCH: %s pack shape #%d n=%d C=%d groups=%d thr=%s: word %zu (pixel %zu, group %zu, "
                           "word %zu) got %016llx want %016llx\n",
                           sets[k]->name, s, n, C, groups, thr ? "yes" : "NULL", i, i / ((size_t)groups * wpg),
                           (i / wpg) % groups, i % wpg, (unsigned long long)got[i], (unsigned long long)want[i]);
                    exit(1);
                }
            /* the bits past a group's channel count are 0 (in every set, the reference included) */
            if (cg % BNHW_WORD_BITS)
                for (size_t pg = 0; pg < (size_t)n * groups; pg++) {
                    bnhw_word last = got[pg * wpg + wpg - 1];
                    if (last >> (cg % BNHW_WORD_BITS)) {
                        printf("MISMATCH: %s pack shape #%d n=%d C=%d groups=%d: unused bits set in word %zu: "
                               "%016llx\n",
                               sets[k]->name, s, n, C, groups, pg * wpg + wpg - 1, (unsigned long long)last);
                        exit(1);
                    }
                }
            ok[k]++;
        }
        free(x);
        free(thr);
        free(want);
        free(got);
    }
    for (int k = 0; k < nsets; k++)
        printf("%s pack %d shapes ok\n", sets[k]->name, ok[k]);
}

/* --------------------------------------------------------------------------------- bgemm */

static void test_bgemm(int count)
{
    int ok[MAX_SETS] = {0};
    for (int s = 0; s < count; s++) {
        int M, N, K, dense;
        /* edge cases: empty, K = 0 / 1 / odd, the 31-step byte limit (62 words) and around it, and
         * two beyond the 16-bit limit (a u16 lane of an accumulator never widened overflows after
         * 4096 steps of nearly-all-different bits: 8192 words) */
        static const int fixed[][4] = {{0, 5, 3, 0},    {5, 0, 3, 0},    {3, 3, 0, 0},    {1, 1, 1, 1},
                                       {7, 9, 1, 1},    {5, 6, 61, 1},   {5, 6, 62, 1},   {5, 6, 63, 1},
                                       {6, 5, 64, 1},   {5, 7, 65, 1},   {3, 5, 124, 1},  {4, 5, 125, 1},
                                       {3, 5, 8193, 1}, {5, 6, 8256, 1}, {1, 9, 3, 0},    {9, 1, 17, 0},
                                       {5, 6, 123, 1},  {6, 9, 247, 1},  {9, 6, 248, 1},  {7, 5, 249, 1},
                                       {5, 9, 497, 1},  {4, 4, 8, 2},    {4, 4, 7, 2},    {5, 5, 15, 0}};
        if (s < (int)(sizeof fixed / sizeof fixed[0])) {
            M = fixed[s][0], N = fixed[s][1], K = fixed[s][2], dense = fixed[s][3];
        } else {
            M = chance(5) ? 0 : rnd(1, 17);
            N = chance(5) ? 0 : rnd(1, 17);
            int kind = rnd(0, 99);
            K = kind < 15 ? rnd(0, 3) : kind < 75 ? rnd(4, 70) : kind < 97 ? rnd(58, 200) : rnd(2000, 2100);
            dense = rnd(0, 2);
        }
        int lda = K + (chance(50) ? 0 : rnd(1, 3)), ldb = K + (chance(50) ? 0 : rnd(1, 3));
        int ldc = N + (chance(50) ? 0 : rnd(1, 3));
        size_t na = M ? (size_t)(M - 1) * lda + K : 0, nb = N ? (size_t)(N - 1) * ldb + K : 0;
        size_t nc = (size_t)M * ldc;
        bnhw_word *a = xmalloc(na * sizeof *a), *b = xmalloc(nb * sizeof *b);
        /* dense 1: every a row = base, every b row = NOT base, so every bit differs (count 64 K);
         * dense 2: the same with sparse random flips; 0: random bits (padding always random) */
        bnhw_word *base = xmalloc((size_t)K * sizeof *base);
        for (int k = 0; k < K; k++)
            base[k] = rng();
        for (size_t i = 0; i < na; i++) {
            int k = (int)(i % (size_t)lda);
            a[i] = dense && k < K ? base[k] ^ (dense == 2 && chance(10) ? rng() & rng() : 0) : rng();
        }
        for (size_t i = 0; i < nb; i++) {
            int k = (int)(i % (size_t)ldb);
            b[i] = dense && k < K ? ~base[k] ^ (dense == 2 && chance(10) ? rng() & rng() : 0) : rng();
        }
        free(base);
        int32_t *want = xmalloc(nc * sizeof *want), *got = xmalloc(nc * sizeof *got);
        for (size_t i = 0; i < nc; i++)
            want[i] = (int32_t)(0x5A5A0000u ^ (uint32_t)i);
        bnhw_bgemm_ref(M, N, K, a, lda, b, ldb, want, ldc);
        for (int k = 0; k < nsets; k++) {
            for (size_t i = 0; i < nc; i++)
                got[i] = (int32_t)(0x5A5A0000u ^ (uint32_t)i);
            sets[k]->bgemm(M, N, K, a, lda, b, ldb, got, ldc);
            for (size_t i = 0; i < nc; i++)
                if (got[i] != want[i]) {
                    printf("MISMATCH: %s bgemm shape #%d M=%d N=%d K=%d lda=%d ldb=%d ldc=%d: c[%zu][%zu] (index %zu) "
                           "got %ld want %ld\n",
                           sets[k]->name, s, M, N, K, lda, ldb, ldc, i / (size_t)ldc, i % (size_t)ldc, i,
                           (long)got[i], (long)want[i]);
                    exit(1);
                }
            ok[k]++;
        }
        free(a);
        free(b);
        free(want);
        free(got);
    }
    for (int k = 0; k < nsets; k++)
        printf("%s bgemm %d shapes ok\n", sets[k]->name, ok[k]);
}

/* --------------------------------------------------------------------------- bgemm_small */

/* bgemm_small (B k-major) against bgemm_ref on the same matrices: mostly the shallow depths it is
 * for (K = 0 .. 40 words), the 31-step byte-accumulator limits (31, 32, 62, 63), deep dense rows
 * (every bit different: count 64 K), and N around every vector width (1 .. 40 columns: blocks of 2, 4,
 * 8 and 16 lanes with every tail) with ldbt > N holding garbage. */
static void test_bgemm_small(int count)
{
    int ok[MAX_SETS + 1] = {0};
    const bnhw_kernels *ref = bnhw_kernel_set("ref");
    for (int s = 0; s < count; s++) {
        int M, N, K, dense;
        static const int fixed[][4] = {{0, 5, 3, 0},  {5, 0, 3, 0},   {3, 3, 0, 0},   {1, 1, 1, 1},  {7, 9, 1, 1},
                                       {5, 6, 9, 0},  {4, 12, 9, 1},  {9, 24, 18, 2}, {5, 17, 31, 1}, {6, 16, 32, 1},
                                       {5, 3, 62, 1}, {3, 33, 63, 1}, {2, 7, 2000, 1}, {8, 48, 2, 0}, {1, 1, 9, 1}};
        if (s < (int)(sizeof fixed / sizeof fixed[0])) {
            M = fixed[s][0], N = fixed[s][1], K = fixed[s][2], dense = fixed[s][3];
        } else {
            M = chance(5) ? 0 : rnd(1, 17);
            N = chance(5) ? 0 : chance(70) ? rnd(1, 17) : rnd(18, 40);
            int kind = rnd(0, 99);
            K = kind < 20 ? rnd(0, 3) : kind < 85 ? rnd(4, 40) : kind < 98 ? rnd(58, 130) : rnd(2000, 2100);
            dense = rnd(0, 2);
        }
        int lda = K + (chance(50) ? 0 : rnd(1, 3)), ldbt = N + (chance(50) ? 0 : rnd(1, 5));
        int ldc = N + (chance(50) ? 0 : rnd(1, 3));
        size_t na = M ? (size_t)(M - 1) * lda + K : 0, nb = (size_t)N * K, nbt = K ? (size_t)(K - 1) * ldbt + N : 0;
        size_t nc = (size_t)M * ldc;
        bnhw_word *a = xmalloc(na * sizeof *a), *b = xmalloc(nb * sizeof *b), *bt = xmalloc(nbt * sizeof *bt);
        bnhw_word *base = xmalloc((size_t)K * sizeof *base);
        for (int k = 0; k < K; k++)
            base[k] = rng();
        for (size_t i = 0; i < na; i++) {
            int k = (int)(i % (size_t)lda);
            a[i] = dense && k < K ? base[k] ^ (dense == 2 && chance(10) ? rng() & rng() : 0) : rng();
        }
        for (size_t i = 0; i < nbt; i++)
            bt[i] = rng();                                                  /* padding stays garbage */
        for (int j = 0; j < N; j++)
            for (int k = 0; k < K; k++) {
                bnhw_word w = dense ? ~base[k] ^ (dense == 2 && chance(10) ? rng() & rng() : 0) : rng();
                b[(size_t)j * K + k] = w;
                bt[(size_t)k * ldbt + j] = w;
            }
        free(base);
        int32_t *want = xmalloc(nc * sizeof *want), *got = xmalloc(nc * sizeof *got);
        for (size_t i = 0; i < nc; i++)
            want[i] = (int32_t)(0x5A5A0000u ^ (uint32_t)i);
        bnhw_bgemm_ref(M, N, K, a, lda, b, K, want, ldc);
        /* the reference bgemm_small too, then every set */
        for (int k = 0; k <= nsets; k++) {
            const bnhw_kernels *set = k < nsets ? sets[k] : ref;
            for (size_t i = 0; i < nc; i++)
                got[i] = (int32_t)(0x5A5A0000u ^ (uint32_t)i);
            set->bgemm_small(M, N, K, a, lda, bt, ldbt, got, ldc);
            for (size_t i = 0; i < nc; i++)
                if (got[i] != want[i]) {
                    printf("MISMATCH: %s bgemm_small shape #%d M=%d N=%d K=%d lda=%d ldbt=%d ldc=%d: c[%zu][%zu] "
                           "(index %zu) got %ld want %ld\n",
                           set->name, s, M, N, K, lda, ldbt, ldc, i / (size_t)ldc, i % (size_t)ldc, i, (long)got[i],
                           (long)want[i]);
                    exit(1);
                }
            ok[k]++;
        }
        free(a);
        free(b);
        free(bt);
        free(want);
        free(got);
    }
    for (int k = 0; k <= nsets; k++)
        printf("%s bgemm_small %d shapes ok\n", k < nsets ? sets[k]->name : "ref", ok[k]);
}

/* ------------------------------------------------------------------------------ gemm_s16 */

/* fill `n` rows of `K` values (stride ld, padding garbage) in one of the contract's regimes:
 *   role 0: |v| <= bound;  role 1: full int16 (extremes likely);  role 2: each row's |v| sums to
 *   < 65536 with |v| <= 32767 (so with a role-1 partner every pair's |a| |b| 2 < 2^31 and every
 *   partial sum, in any order, fits int32) */
static void fill_s16(int16_t *v, int n, int K, int ld, int role, int bound)
{
    for (int r = 0; r < n; r++) {
        int16_t *row = v + (size_t)r * ld;
        int budget = 65535;
        int off = rnd(0, K > 0 ? K - 1 : 0); /* where the L1 budget starts to be spent */
        for (int i = 0; i < ld && (r < n - 1 || i < K); i++) {
            int x, k = i < K ? (i + off) % K : i;
            if (k >= K)
                x = rnd(-32768, 32767); /* padding */
            else if (role == 0)
                x = rnd(-bound, bound);
            else if (role == 1)
                x = chance(40) ? (chance(50) ? -32768 : 32767) : rnd(-32768, 32767);
            else {
                int lim = budget < 32767 ? budget : 32767;
                x = chance(25) ? (chance(50) ? -lim : lim) : rnd(-lim, lim) / (chance(50) ? 1 : 64);
                budget -= x < 0 ? -x : x;
            }
            row[k] = (int16_t)x;
        }
    }
}

static void test_gemm_s16(int count)
{
    int ok[MAX_SETS] = {0};
    for (int s = 0; s < count; s++) {
        int M, N, K, regime;
        static const int fixed[][4] = {{0, 3, 5, 0},   {3, 0, 5, 0}, {4, 4, 0, 0},   {1, 1, 1, 1},
                                       {5, 7, 2, 1},   {9, 5, 7, 2}, {5, 9, 16, 3},  {3, 3, 4000, 0},
                                       {7, 6, 1001, 2}, {2, 5, 33, 3}};
        if (s < (int)(sizeof fixed / sizeof fixed[0])) {
            M = fixed[s][0], N = fixed[s][1], K = fixed[s][2], regime = fixed[s][3];
        } else {
            M = chance(5) ? 0 : rnd(1, 17);
            N = chance(5) ? 0 : rnd(1, 17);
            int kind = rnd(0, 99);
            K = kind < 15 ? rnd(0, 3) : kind < 85 ? rnd(4, 80) : kind < 98 ? rnd(81, 600) : rnd(2000, 4000);
            regime = rnd(0, 3);
        }
        int lda = K + (chance(50) ? 0 : rnd(1, 9)), ldb = K + (chance(50) ? 0 : rnd(1, 9));
        int ldc = N + (chance(50) ? 0 : rnd(1, 3));
        size_t na = M ? (size_t)(M - 1) * lda + K : 0, nb = N ? (size_t)(N - 1) * ldb + K : 0;
        size_t nc = (size_t)M * ldc;
        int16_t *a = xmalloc(na * sizeof *a), *b = xmalloc(nb * sizeof *b);
        /* regime 0: both |v| <= bound with K bound^2 < 2^31; 1: K <= 2 full range (a extreme, b
         * without -32768); 2: a full range, b L1-bounded rows; 3: the reverse */
        int kk = K > 2 ? K : 2, bound = 32767;
        while ((int64_t)bound * bound * kk >= INT64_C(2147483647))
            bound = bound * 9 / 10;
        if (regime == 1 && K > 2)
            regime = 0;
        switch (regime) {
        case 0: fill_s16(a, M, K, lda, 0, bound), fill_s16(b, N, K, ldb, 0, bound); break;
        case 1: fill_s16(a, M, K, lda, 1, 0), fill_s16(b, N, K, ldb, 0, 32767); break;
        case 2: fill_s16(a, M, K, lda, 1, 0), fill_s16(b, N, K, ldb, 2, 0); break;
        default: fill_s16(a, M, K, lda, 2, 0), fill_s16(b, N, K, ldb, 1, 0); break;
        }
        int32_t *want = xmalloc(nc * sizeof *want), *got = xmalloc(nc * sizeof *got);
        for (size_t i = 0; i < nc; i++)
            want[i] = (int32_t)(0x5A5A0000u ^ (uint32_t)i);
        bnhw_gemm_s16_ref(M, N, K, a, lda, b, ldb, want, ldc);
        for (int k = 0; k < nsets; k++) {
            for (size_t i = 0; i < nc; i++)
                got[i] = (int32_t)(0x5A5A0000u ^ (uint32_t)i);
            sets[k]->gemm_s16(M, N, K, a, lda, b, ldb, got, ldc);
            for (size_t i = 0; i < nc; i++)
                if (got[i] != want[i]) {
                    printf("MISMATCH: %s gemm_s16 shape #%d M=%d N=%d K=%d lda=%d ldb=%d ldc=%d: c[%zu][%zu] "
                           "(index %zu) got %ld want %ld\n",
                           sets[k]->name, s, M, N, K, lda, ldb, ldc, i / (size_t)ldc, i % (size_t)ldc, i,
                           (long)got[i], (long)want[i]);
                    exit(1);
                }
            ok[k]++;
        }
        free(a);
        free(b);
        free(want);
        free(got);
    }
    for (int k = 0; k < nsets; k++)
        printf("%s gemm_s16 %d shapes ok\n", sets[k]->name, ok[k]);
}

int main(int argc, char **argv)
{
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : 1;
    int count = argc > 2 ? atoi(argv[2]) : 400;
    if (count < 0)
        count = 0;
    printf("kernel sets: %s (seed %llu, %d shapes per kernel; CPU: %s)\n", bnhw_kernel_sets_usable(),
           (unsigned long long)seed, count, bnhw_cpu_features());
    collect_sets();
    rng_state = seed * 0x2545F4914F6CDD1DULL + 1;
    test_pack(count);
    rng_state = seed * 0x2545F4914F6CDD1DULL + 2;
    test_bgemm(count);
    rng_state = seed * 0x2545F4914F6CDD1DULL + 3;
    test_gemm_s16(count);
    rng_state = seed * 0x2545F4914F6CDD1DULL + 4;
    test_bgemm_small(count);
    fflush(stdout);
    return 0;
}
