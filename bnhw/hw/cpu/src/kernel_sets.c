/* The kernel-set table of bnhw_kernels.h, chosen at run time: every set compiled in for this
 * architecture, each handed out only when the CPU has the features it needs (CPUID on x86-64,
 * AT_HWCAP on ARM Linux), and "auto" (alias "opt") = the last usable set in table order. */
#include <stdio.h>
#include <string.h>

#include "bnhw_kernels.h"

#if BNHW_HAVE_NEON && defined(__linux__)
#include <sys/auxv.h>
#endif

typedef struct {
    bnhw_kernels k;
    const char *needs;         /* the features it needs, space separated ("" for none) */
} set_entry;

static const set_entry table[] = {
    {{"ref", bnhw_pack_ref, bnhw_bgemm_ref, bnhw_gemm_s16_ref, bnhw_bgemm_small_ref}, ""},
#if defined(__POPCNT__)
    {{"portable", bnhw_pack_portable, bnhw_bgemm_portable, bnhw_gemm_s16_portable, bnhw_bgemm_small_portable}, "popcnt"},
#else
    {{"portable", bnhw_pack_portable, bnhw_bgemm_portable, bnhw_gemm_s16_portable, bnhw_bgemm_small_portable}, ""},
#endif
#if BNHW_HAVE_X86
    {{"avx2", bnhw_pack_avx2, bnhw_bgemm_avx2, bnhw_gemm_s16_avx2, bnhw_bgemm_small_avx2}, "popcnt avx2"},
    {{"avx512bw", bnhw_pack_avx512bw, bnhw_bgemm_avx512bw, bnhw_gemm_s16_avx512bw, bnhw_bgemm_small_avx512bw}, "popcnt avx512f avx512bw"},
    {{"avx512", bnhw_pack_avx512bw, bnhw_bgemm_avx512, bnhw_gemm_s16_avx512bw, bnhw_bgemm_small_avx512},
     "popcnt avx512f avx512bw avx512vpopcntdq"},
#endif
#if BNHW_HAVE_NEON
    {{"neon", bnhw_pack_neon, bnhw_bgemm_neon, bnhw_gemm_s16_neon, bnhw_bgemm_small_neon}, "neon"},
#endif
};
#define N_SETS ((int)(sizeof table / sizeof table[0]))

/* every feature name a set of this architecture may need, and whether this CPU has it */
#if BNHW_HAVE_X86 || defined(__POPCNT__)
static const char *const feature_names[] = {"popcnt", "avx2", "avx512f", "avx512bw", "avx512vpopcntdq"};
#define FEATURE_LIST "popcnt avx2 avx512f avx512bw avx512vpopcntdq"
#elif BNHW_HAVE_NEON
static const char *const feature_names[] = {"neon"};
#define FEATURE_LIST "neon"
#else
static const char *const feature_names[] = {""};
#define FEATURE_LIST "(no optional features)"
#endif
#define N_FEATURES ((int)(sizeof feature_names / sizeof feature_names[0]))

static int has_feature(const char *f)
{
    if (!*f) return 0;
#if BNHW_HAVE_X86
    __builtin_cpu_init();
    if (!strcmp(f, "popcnt")) return __builtin_cpu_supports("popcnt") != 0;
    if (!strcmp(f, "avx2")) return __builtin_cpu_supports("avx2") != 0;
    if (!strcmp(f, "avx512f")) return __builtin_cpu_supports("avx512f") != 0;
    if (!strcmp(f, "avx512bw")) return __builtin_cpu_supports("avx512bw") != 0;
    if (!strcmp(f, "avx512vpopcntdq")) return __builtin_cpu_supports("avx512vpopcntdq") != 0;
#endif
#if BNHW_HAVE_NEON
    if (!strcmp(f, "neon")) {
#if defined(__linux__) && defined(__aarch64__)
        return (getauxval(AT_HWCAP) & (1UL << 1)) != 0;     /* HWCAP_ASIMD */
#elif defined(__linux__)
        return (getauxval(AT_HWCAP) & (1UL << 12)) != 0;    /* HWCAP_NEON */
#else
        return 1;                                           /* compiled for NEON: the target has it */
#endif
    }
#endif
    (void)f;
    return 0;
}

static int usable(const set_entry *e)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", e->needs);
    for (char *p = buf; *p;) {
        char *end = strchr(p, ' ');
        if (end) *end = 0;
        if (*p && !has_feature(p)) return 0;
        if (!end) break;
        p = end + 1;
    }
    return 1;
}

static const set_entry *find(const char *name)
{
    for (int i = 0; i < N_SETS; i++)
        if (!strcmp(table[i].k.name, name)) return &table[i];
    return NULL;
}

const bnhw_kernels *bnhw_kernel_set(const char *name)
{
    if (!name)
        return NULL;
    if (!strcmp(name, "auto") || !strcmp(name, "opt")) {
        for (int i = N_SETS - 1; i >= 0; i--)
            if (usable(&table[i])) return &table[i].k;
        return NULL;
    }
    const set_entry *e = find(name);
    return e && usable(e) ? &e->k : NULL;
}

static const char *join(char *buf, size_t size, int only_usable)
{
    buf[0] = 0;
    for (int i = 0; i < N_SETS; i++)
        if (!only_usable || usable(&table[i])) {
            size_t n = strlen(buf);
            snprintf(buf + n, size - n, "%s%s", n ? "," : "", table[i].k.name);
        }
    return buf;
}

const char *bnhw_kernel_sets(void)
{
    static char buf[128];
    return join(buf, sizeof buf, 0);
}

const char *bnhw_kernel_sets_usable(void)
{
    static char buf[128];
    return join(buf, sizeof buf, 1);
}

const char *bnhw_cpu_features(void)
{
    static char buf[128];
    buf[0] = 0;
    for (int i = 0; i < N_FEATURES; i++)
        if (has_feature(feature_names[i])) {
            size_t n = strlen(buf);
            snprintf(buf + n, sizeof buf - n, "%s%s", n ? " " : "", feature_names[i]);
        }
    if (!buf[0]) snprintf(buf, sizeof buf, "none of %s", FEATURE_LIST);
    return buf;
}

const char *bnhw_kernel_set_why(const char *name)
{
    static char buf[512];
    static const char *const known[] = {"ref", "portable", "avx2", "avx512bw", "avx512", "neon", "auto", "opt"};
    if (bnhw_kernel_set(name))
        return NULL;
    if (!name)
        name = "(null)";
    const set_entry *e = find(name);
    if (e) {
        snprintf(buf, sizeof buf, "kernel set %s needs %s; this CPU has %s (usable: %s)", name, e->needs,
                 bnhw_cpu_features(), bnhw_kernel_sets_usable());
        return buf;
    }
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(name, known[i])) {
            snprintf(buf, sizeof buf, "kernel set %s is not compiled in for this architecture (compiled: %s; "
                     "usable on this CPU: %s)", name, bnhw_kernel_sets(), bnhw_kernel_sets_usable());
            return buf;
        }
    snprintf(buf, sizeof buf, "unknown kernel set %s: choose auto, %s", name, bnhw_kernel_sets());
    return buf;
}
