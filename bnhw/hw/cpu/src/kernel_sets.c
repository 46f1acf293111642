/* The kernel-set table of bnhw_kernels.h: "ref", "portable", "neon" (ARM with NEON) and "opt". */
#include <string.h>

#include "bnhw_kernels.h"

static const bnhw_kernels set_ref = {"ref", bnhw_pack_ref, bnhw_bgemm_ref, bnhw_gemm_s16_ref};
static const bnhw_kernels set_portable = {"portable", bnhw_pack_portable, bnhw_bgemm_portable,
                                          bnhw_gemm_s16_portable};
#if BNHW_HAVE_NEON
static const bnhw_kernels set_neon = {"neon", bnhw_pack_neon, bnhw_bgemm_neon, bnhw_gemm_s16_neon};
#endif

const bnhw_kernels *bnhw_kernel_set(const char *name)
{
    if (!name)
        return NULL;
    if (strcmp(name, "ref") == 0)
        return &set_ref;
    if (strcmp(name, "portable") == 0)
        return &set_portable;
#if BNHW_HAVE_NEON
    if (strcmp(name, "neon") == 0 || strcmp(name, "opt") == 0)
        return &set_neon;
#else
    if (strcmp(name, "opt") == 0)
        return &set_portable;
#endif
    return NULL;
}

const char *bnhw_kernel_sets(void)
{
#if BNHW_HAVE_NEON
    return "ref,portable,neon";
#else
    return "ref,portable";
#endif
}
