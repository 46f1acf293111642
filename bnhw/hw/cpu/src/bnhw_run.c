/* bnhw-run: the standalone CPU runtime (no Python), for the board or QEMU.
 *
 *   bnhw-run MODEL INPUT OUTPUT [--kernels SET] [--threads N] [--repeat N] [--tensors FILE]
 *
 * SET: auto (the default: the best set this CPU runs; alias opt), ref, portable, avx2, avx512bw, avx512
 * (x86-64) or neon (ARM); without --kernels the environment variable BNHW_KERNELS names it.  A set
 * the CPU lacks is refused with one line naming what the CPU has.  --threads N (default 0: all online
 * cores) runs each convolution on N threads; the outputs do not depend on N.
 *
 * INPUT is N images of int32 little-endian HWC integers (the network's input quantiser, as
 * `bnhw export-cpu` writes them); OUTPUT receives N outputs of int32.  --tensors writes, per image,
 * every tensor of the model in order (int32, packed tensors unpacked to +-1).  --repeat runs each
 * image N times and prints, per op, the median wall time over the repeats of the first image.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnhw_runtime.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void usage(void)
{
    fprintf(stderr, "usage: bnhw-run MODEL INPUT OUTPUT [--kernels auto|ref|portable|avx2|avx512bw|avx512|neon] "
                    "[--threads N] [--repeat N] [--tensors FILE]\n");
}

int main(int argc, char **argv)
{
    if (argc < 4) { usage(); return 2; }
    const char *kernels = getenv("BNHW_KERNELS"), *tensors_path = NULL;
    if (!kernels || !*kernels) kernels = "auto";
    int repeat = 1, threads = 0;
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--kernels") && i + 1 < argc) kernels = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            char *end;
            long t = strtol(argv[i + 1], &end, 10);
            if (*end || end == argv[i + 1] || t < 0 || t > 256) {
                fprintf(stderr, "error: --threads takes 0 (all cores) to 256, got %s\n", argv[i + 1]);
                return 2;
            }
            threads = (int)t;
            i++;
        }
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tensors") && i + 1 < argc) tensors_path = argv[++i];
        else { usage(); return 2; }
    }
    if (repeat < 1) repeat = 1;
    bnhw_model *m = bnhw_model_load(argv[1]);
    if (!m) { fprintf(stderr, "error: %s: %s\n", argv[1], bnhw_last_error()); return 1; }
    if (bnhw_model_set_kernels(m, kernels)) { fprintf(stderr, "error: %s\n", bnhw_last_error()); return 2; }
    if (bnhw_model_set_threads(m, threads)) { fprintf(stderr, "error: %s\n", bnhw_last_error()); return 2; }
    int64_t nin = bnhw_model_input_size(m), nout = bnhw_model_output_size(m);
    FILE *fi = fopen(argv[2], "rb");
    if (!fi) { fprintf(stderr, "error: %s: cannot open\n", argv[2]); return 1; }
    fseek(fi, 0, SEEK_END);
    long bytes = ftell(fi);
    fseek(fi, 0, SEEK_SET);
    if (bytes <= 0 || bytes % (long)(nin * 4)) {
        fprintf(stderr, "error: %s: %ld bytes is not a whole number of %lld-element int32 inputs\n", argv[2], bytes,
                (long long)nin);
        return 1;
    }
    long n = bytes / (long)(nin * 4);
    int32_t *in = malloc((size_t)bytes), *out = malloc((size_t)(n * nout * 4));
    if (!in || !out || fread(in, 1, (size_t)bytes, fi) != (size_t)bytes) { fprintf(stderr, "error: read\n"); return 1; }
    fclose(fi);
    FILE *ft = tensors_path ? fopen(tensors_path, "wb") : NULL;
    if (tensors_path && !ft) { fprintf(stderr, "error: %s: cannot write\n", tensors_path); return 1; }
    int nops = bnhw_model_n_ops(m);
    double *times = calloc((size_t)nops * repeat + 1, sizeof(double)), *total = calloc((size_t)repeat, sizeof(double));
    for (long i = 0; i < n; i++) {
        for (int r = 0; r < (i == 0 ? repeat : 1); r++) {
            if (bnhw_model_run(m, in + i * nin, out + i * nout)) {
                fprintf(stderr, "error: image %ld: %s\n", i, bnhw_last_error());
                return 1;
            }
            if (i == 0)
                for (int j = 0; j < nops; j++) {
                    times[(size_t)j * repeat + r] = bnhw_model_op_seconds(m, j);
                    total[r] += bnhw_model_op_seconds(m, j);
                }
        }
        if (ft)
            for (int t = 0; t < bnhw_model_n_tensors(m); t++) {
                int64_t sz = bnhw_model_tensor_size(m, t);
                int32_t *buf = malloc((size_t)sz * 4);
                bnhw_model_tensor(m, t, buf);
                fwrite(buf, 4, (size_t)sz, ft);
                free(buf);
            }
    }
    FILE *fo = fopen(argv[3], "wb");
    if (!fo || fwrite(out, 4, (size_t)(n * nout), fo) != (size_t)(n * nout)) {
        fprintf(stderr, "error: %s: cannot write\n", argv[3]);
        return 1;
    }
    fclose(fo);
    if (ft) fclose(ft);
    printf("kernels %s images %ld threads %d\n", bnhw_model_kernels(m), n, bnhw_model_threads(m));
    if (repeat > 1) {
        for (int j = 0; j < nops; j++) {
            qsort(times + (size_t)j * repeat, (size_t)repeat, sizeof(double), cmp_double);
            printf("op %d %s %.9f\n", j, bnhw_model_op_name(m, j), times[(size_t)j * repeat + repeat / 2]);
        }
        qsort(total, (size_t)repeat, sizeof(double), cmp_double);
        printf("total %.9f\n", total[repeat / 2]);
    }
    bnhw_model_free(m);
    free(in); free(out); free(times); free(total);
    return 0;
}
