/* Fuzz driver of the .bnhwcpu loader (tests/test_cpu_runtime.py builds it with the runtime sources and
 * -fsanitize=address,undefined).
 *
 *     model_fuzz SEED COUNT MODEL...
 *
 * COUNT mutants of the given model files (a fixed splitmix64 sequence from SEED): bit flips, 32-bit
 * fields set to boundary values (0, 1, -1, INT32_MIN / MAX, 2^16, 2^31, off by one), truncation,
 * inserted / deleted bytes, copied 4-byte runs.  Each mutant is loaded from memory; a rejected one must
 * come with a message (bnhw_last_error non-empty), an accepted one (a mutation the format cannot tell,
 * e.g. a weight bit) is run on a zero input (threads 1 or 2), which must return (an error needs a
 * message too).  Any memory error or undefined behaviour ends the program through the sanitizers.
 * Prints "mutants N rejected R accepted A ran B" and exits 0, or names the mutant and exits 1.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnhw_runtime.h"

static uint64_t state;

static uint64_t rng(void)
{
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static size_t below(size_t n) { return n ? (size_t)(rng() % n) : 0; }

static unsigned char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(len > 0 ? (size_t)len : 1);
    if (!b || len < 0 || fread(b, 1, (size_t)len, f) != (size_t)len) { fclose(f); free(b); return NULL; }
    fclose(f);
    *n = (size_t)len;
    return b;
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* one mutant of src (n bytes) into dst (capacity n + 64); returns its length */
static size_t mutate(const unsigned char *src, size_t n, unsigned char *dst, const char **how)
{
    static const uint32_t interesting[] = {0, 1, 2, 3, 0xffffffffu, 0x7fffffffu, 0x80000000u, 0x10000u, 0xffffu,
                                           64, 65, 1000000, 1000001, 0x40000000u, 0x7ffffffeu};
    memcpy(dst, src, n);
    size_t len = n;
    int rounds = 1 + (int)below(3);
    *how = "";
    for (int r = 0; r < rounds; r++) {
        /* the structure (header, tables, attributes) is near the front of a small model, so favour it */
        size_t span = len < 8 ? len : (below(2) ? len : (len < 512 ? len : 512));
        switch (below(6)) {
        case 0: {                                   /* flip 1..8 bits */
            int k = 1 + (int)below(8);
            for (int i = 0; i < k && len; i++) dst[below(span)] ^= (unsigned char)(1u << below(8));
            *how = "bit flips";
            break;
        }
        case 1:                                     /* a 32-bit field set to a boundary value */
        case 2: {
            if (len < 4) break;
            size_t off = below(span >= 4 ? span - 3 : 1) & ~(size_t)3;
            uint32_t v = interesting[below(sizeof interesting / sizeof interesting[0])];
            if (below(4) == 0) v = get32(dst + off) + (below(2) ? 1u : 0xffffffffu);
            put32(dst + off, v);
            *how = "32-bit field";
            break;
        }
        case 3:                                     /* truncated */
            len = below(len + 1);
            *how = "truncated";
            break;
        case 4: {                                   /* bytes inserted or deleted (the layout shifts) */
            size_t off = below(len + 1), k = 1 + below(8);
            if (below(2) && len + k <= n + 64) {
                memmove(dst + off + k, dst + off, len - off);
                for (size_t i = 0; i < k; i++) dst[off + i] = (unsigned char)rng();
                len += k;
                *how = "inserted bytes";
            } else if (off + k <= len) {
                memmove(dst + off, dst + off + k, len - off - k);
                len -= k;
                *how = "deleted bytes";
            }
            break;
        }
        default: {                                  /* a 4-byte run copied over another */
            if (len < 8) break;
            size_t a = below(span - 3), b = below(len - 3);
            memmove(dst + a, dst + b, 4);
            *how = "copied run";
            break;
        }
        }
    }
    return len;
}

int main(int argc, char **argv)
{
    if (argc < 4) { fprintf(stderr, "usage: model_fuzz SEED COUNT MODEL...\n"); return 2; }
    state = strtoull(argv[1], NULL, 0) * 0x2545F4914F6CDD1DULL + 7;
    long count = atol(argv[2]);
    int nfiles = argc - 3;
    unsigned char *files[64];
    size_t sizes[64];
    if (nfiles > 64) nfiles = 64;
    for (int i = 0; i < nfiles; i++) {
        files[i] = read_file(argv[3 + i], &sizes[i]);
        if (!files[i]) { fprintf(stderr, "error: %s: cannot read\n", argv[3 + i]); return 2; }
        bnhw_model *m = bnhw_model_load_buffer(files[i], sizes[i]);
        if (!m) { fprintf(stderr, "error: %s: the unmutated model does not load: %s\n", argv[3 + i], bnhw_last_error()); return 2; }
        bnhw_model_free(m);
    }
    long rejected = 0, accepted = 0, ran = 0;
    for (long s = 0; s < count; s++) {
        int f = (int)below((size_t)nfiles);
        unsigned char *buf = malloc(sizes[f] + 64);
        const char *how;
        size_t len = mutate(files[f], sizes[f], buf, &how);
        /* the loader copies the buffer; an exactly sized heap copy lets ASan see any read past the end */
        unsigned char *exact = malloc(len ? len : 1);
        memcpy(exact, buf, len);
        free(buf);
        bnhw_model *m = bnhw_model_load_buffer(exact, len);
        free(exact);
        if (!m) {
            if (!bnhw_last_error()[0]) {
                printf("FAIL: mutant %ld (%s of %s) rejected without a message\n", s, how, argv[3 + f]);
                return 1;
            }
            rejected++;
            continue;
        }
        accepted++;
        int64_t nin = bnhw_model_input_size(m), nout = bnhw_model_output_size(m);
        if (nin > 0 && nout > 0 && nin <= (1 << 22) && nout <= (1 << 22)) {
            int32_t *in = calloc((size_t)nin, sizeof *in), *out = calloc((size_t)nout, sizeof *out);
            bnhw_model_set_threads(m, 1 + (int)(s % 2));
            if (in && out) {
                if (bnhw_model_run(m, in, out) != 0 && !bnhw_last_error()[0]) {
                    printf("FAIL: mutant %ld (%s of %s) failed to run without a message\n", s, how, argv[3 + f]);
                    return 1;
                }
                ran++;
            }
            free(in);
            free(out);
        }
        bnhw_model_free(m);
    }
    for (int i = 0; i < nfiles; i++) free(files[i]);
    printf("mutants %ld rejected %ld accepted %ld ran %ld\n", count, rejected, accepted, ran);
    return 0;
}
