/* bnhw CPU runtime: executes a whole network from one model file (the hardware IR lowered by
 * bnhw.hw.cpu.program: tensors, ops, weights) with the kernels of bnhw_kernels.h.  No Python.
 *
 * Tensors are HWC.  Integer tensors are int32; bipolar tensors are bit-packed (bnhw_kernels.h).
 * The input and output of bnhw_model_run are int32 HWC arrays (a packed output is unpacked to +-1).
 */
#ifndef BNHW_RUNTIME_H
#define BNHW_RUNTIME_H

#include <stdint.h>

#include "bnhw_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bnhw_model bnhw_model;

/* Load a model file; NULL on failure (bnhw_last_error() says why). */
bnhw_model *bnhw_model_load(const char *path);
/* The same from a buffer in memory (copied). */
bnhw_model *bnhw_model_load_buffer(const void *data, uint64_t size);
void bnhw_model_free(bnhw_model *m);
const char *bnhw_last_error(void);

/* Select the kernel set ("auto" (the default, alias "opt"), "ref", "portable", "avx2", "avx512bw", "avx512",
 * "neon"); 0 on success, -1 (bnhw_last_error() names the set and what the CPU has) when the set is
 * unknown, not compiled for this architecture or beyond this CPU. */
int bnhw_model_set_kernels(bnhw_model *m, const char *name);
const char *bnhw_model_kernels(const bnhw_model *m);

/* Threads a run uses: n >= 1, or 0 = all online cores (bnhw_default_threads(), the default at load);
 * 0 on success.  Convolutions are split over chunks of output pixels (and, when there are fewer
 * chunks than threads, slices of output channels), thresholds / pools / shortcut adds / RPReLU over
 * ranges of pixels, on a persistent pool of threads; ops with little work run on one thread.  Every
 * thread count gives the same outputs, bit for bit. */
int bnhw_model_set_threads(bnhw_model *m, int n);
int bnhw_model_threads(const bnhw_model *m);
int bnhw_default_threads(void);
/* The least work (bgemm words, int16 MACs / 8, or elements) an op must have to be split over threads;
 * < 0 restores the default (65536).  0 splits every op: for tests of the split itself. */
void bnhw_model_set_split_threshold(bnhw_model *m, double work);

/* Fused epilogues (on by default): the ops right after a convolution that work pixel by pixel (shortcut
 * add / requantiser, RPReLU, thresholding / sign-packing, gathers, unpacking, pools of earlier tensors)
 * run in the conv's pass, chunk by chunk of output pixels; their per-op time is then 0 and the conv's
 * includes theirs.  Off runs every op on its own; the outputs are the same, bit for bit.
 * bnhw_model_n_fused: how many ops run fused (0 when off); bnhw_model_op_fused: whether op i does. */
void bnhw_model_set_fusion(bnhw_model *m, int on);
int bnhw_model_n_fused(const bnhw_model *m);
int bnhw_model_op_fused(const bnhw_model *m, int i);   /* 1: op i runs in its conv's pass */

/* Element counts of the input / output arrays. */
int64_t bnhw_model_input_size(const bnhw_model *m);
int64_t bnhw_model_output_size(const bnhw_model *m);

/* Run one image; 0 on success.  Per-op wall times of this run: bnhw_model_op_seconds. */
int bnhw_model_run(bnhw_model *m, const int32_t *input, int32_t *output);

int bnhw_model_n_ops(const bnhw_model *m);
const char *bnhw_model_op_name(const bnhw_model *m, int i);
double bnhw_model_op_seconds(const bnhw_model *m, int i);

int bnhw_model_n_tensors(const bnhw_model *m);
const char *bnhw_model_tensor_name(const bnhw_model *m, int i);
int64_t bnhw_model_tensor_size(const bnhw_model *m, int i);     /* elements (H * W * C) */
/* Copy tensor i of the last run into out (int32, HWC; packed tensors unpacked to +-1); 0 on success. */
int bnhw_model_tensor(const bnhw_model *m, int i, int32_t *out);

#ifdef __cplusplus
}
#endif
#endif
