/* bgemm_count: run one binary GEMM of the given size with one kernel set, for counting its executed
 * instructions under QEMU (bnhw.hw.cpu.insn_count).  Usage: bgemm_count SET M N K [small]
 * ("small": the set's bgemm_small, B k-major with ldbt = N, instead of bgemm)
 * Operands are pseudo-random words (the count does not depend on them); prints the checksum of c so
 * the call cannot be optimised away. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnhw_kernels.h"

int main(int argc, char **argv)
{
    int small = argc == 6 && strcmp(argv[5], "small") == 0;
    if (argc != 5 && !small) { fprintf(stderr, "usage: bgemm_count SET M N K [small]\n"); return 2; }
    const bnhw_kernels *k = bnhw_kernel_set(argv[1]);
    if (!k) { fprintf(stderr, "%s\n", bnhw_kernel_set_why(argv[1])); return 2; }
    int M = atoi(argv[2]), N = atoi(argv[3]), K = atoi(argv[4]);
    if (M < 0 || N < 0 || K < 0) { fprintf(stderr, "negative size\n"); return 2; }
    bnhw_word *a = malloc(sizeof(bnhw_word) * ((size_t)M * K + 1)), *b = malloc(sizeof(bnhw_word) * ((size_t)N * K + 1));
    int32_t *c = malloc(sizeof(int32_t) * ((size_t)M * N + 1));
    if (!a || !b || !c) { fprintf(stderr, "out of memory\n"); return 2; }
    uint64_t s = 88172645463325252u;
    for (size_t i = 0; i < (size_t)M * K; i++) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; a[i] = s; }
    for (size_t i = 0; i < (size_t)N * K; i++) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; b[i] = s; }
    if (small)
        k->bgemm_small(M, N, K, a, K, b, N, c, N);
    else
        k->bgemm(M, N, K, a, K, b, K, c, N);
    int64_t sum = 0;
    for (size_t i = 0; i < (size_t)M * N; i++) sum += c[i];
    printf("%s%s %d %d %d %lld\n", k->name, small ? " small" : "", M, N, K, (long long)sum);
    free(a); free(b); free(c);
    return 0;
}
