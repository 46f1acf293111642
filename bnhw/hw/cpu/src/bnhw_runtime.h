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

/* Select the kernel implementation ("ref", "portable", "neon", "opt"); 0 on success. */
int bnhw_model_set_kernels(bnhw_model *m, const char *name);
const char *bnhw_model_kernels(const bnhw_model *m);

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
