/* The machine's XOR-popcount peak, the benchmark's roofline for the binary GEMM: an L1-resident
 * loop in which every loaded word meets eight words held in registers (or spilled to the stack,
 * which only adds loads), popcount(a XOR r_j) added into eight independent counters.  Loads are
 * not the limit, so this is the rate at which the core retires XOR + POPCNT + ADD on its integer
 * ALUs: the best a scalar-popcount binary GEMM can do (a vector popcount, e.g. an AVX2 nibble
 * lookup, is a different path and could exceed it).  Whatever the compiler makes of this loop at
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
