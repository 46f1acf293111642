/* The machine's XOR-popcount peak, for the benchmark's roofline: popcount(a XOR b) over an
 * L1-resident stream with four independent accumulators and nothing else (no im2col, no epilogue,
 * no output writes).  Whatever the compiler makes of this loop at the library's flags (popcnt on
 * x86-64 with -mpopcnt, vcnt on NEON) is the peak the kernels are compared against. */
#include "bnhw_kernels.h"

#if defined(__GNUC__) || defined(__clang__)
#define POPCNT64(x) __builtin_popcountll(x)
#define BARRIER() __asm__ volatile("" ::: "memory")
#else
#define BARRIER() ((void)0)
static int POPCNT64(bnhw_word x)
{
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
    return (int)((x * 0x0101010101010101ULL) >> 56);
}
#endif

/* n a multiple of 4; returns the total count so the work cannot be optimised away */
int64_t bnhw_xorpop_stream(const bnhw_word *a, const bnhw_word *b, int n, int reps)
{
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int r = 0; r < reps; r++) {
        for (int i = 0; i + 3 < n; i += 4) {
            s0 += (uint64_t)POPCNT64(a[i] ^ b[i]);
            s1 += (uint64_t)POPCNT64(a[i + 1] ^ b[i + 1]);
            s2 += (uint64_t)POPCNT64(a[i + 2] ^ b[i + 2]);
            s3 += (uint64_t)POPCNT64(a[i + 3] ^ b[i + 3]);
        }
        BARRIER();   /* one pass per repetition: no hoisting across repetitions */
    }
    return (int64_t)(s0 + s1 + s2 + s3);
}
