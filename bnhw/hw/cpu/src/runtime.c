/* bnhw CPU runtime: model file loader and op interpreter (see bnhw_runtime.h, and the file format and
 * op semantics in bnhw/hw/cpu/program.py; the semantics are those of bnhw.hw.ir.HwGraph.execute). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bnhw_runtime.h"

/* The runtime's own loops (im2col, epilogues, elementwise ops) as two clones on x86-64 -- AVX2 and
 * baseline -- the loader picking one by CPUID (GCC's target_clones, an ifunc), so the one build still
 * runs on any x86-64 CPU while an AVX2 machine gets the vectorised loops -mavx2 used to give.  Not
 * under ThreadSanitizer, whose run-time is not ready when the ifunc resolvers run. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__AVX2__) && defined(__linux__) && \
    !defined(__SANITIZE_THREAD__)
#define VEC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VEC_CLONES
#endif

#define ATTRS 20
#define MAX_PARAMS 4
enum { OP_BCONV = 1, OP_ICONV, OP_THRESH, OP_MAXPOOL, OP_AVGPOOLSUM, OP_GAP, OP_GATHER, OP_ADDREQUANT,
       OP_RPRELU, OP_LABELSELECT, OP_UNPACK, OP_CONCAT, OP_WPOOL };
enum { A_H, A_W, A_C, A_HO, A_WO, A_COUT, A_K, A_STRIDE, A_PAD, A_DIL, A_GROUPS, A_OUT_MODE, A_OUT_GROUPS,
       A_NTHR, A_OUT_BIAS, A_OUT_SCALE, A_PAD_VALUE, A_USE_S16, A_LO, A_HI };
#define A_SHIFT 3
#define A_SSHIFT 4
#define A_FRAC 3
enum { OUT_ACC = 0, OUT_PACKED = 1, OUT_MULTI = 2 };
enum { DT_I16 = 1, DT_I32 = 2, DT_I64 = 3, DT_U64 = 4 };

typedef struct {
    int H, W, C, packed, groups, wpp;    /* wpp: words per pixel (packed) */
    char *name;
    void *data;
} tensor_t;

typedef struct {
    int dtype;
    uint32_t count;
    const void *data;
} param_t;

typedef struct {
    int opcode, n_in, in[2], out;
    int32_t a[ATTRS];
    char *name;
    int n_params;
    param_t p[MAX_PARAMS];
    double seconds;
    /* ADDREQUANT / RPRELU whose parameters fit int32 (lanes32 at load): the per-channel parameters
     * repeated over `lanes` elements (a multiple of C and of 16), so the int32 loop runs over
     * contiguous elements without a channel index; a zero-padded BCONV: its weight popcounts tap-major
     * (see ew_plan) */
    int lanes32;
    int32_t *rep;
    int64_t pmax[3];            /* the largest |parameter| of each array */
    /* a BCONV whose groups are 1-2 words deep (SMALL_DEPTH): its weights k-major per group, [g][K][og],
     * for the kernels' bgemm_small (output channels in vector lanes); NULL otherwise */
    bnhw_word *wt;
    /* a conv: how many of the ops right after it run in its pass (fuse_plan), over each chunk of output
     * pixels as soon as the chunk's accumulators exist; a fused op: 1 (the loop skips it) */
    int nfuse, fused;
    int nruns;                  /* a GATHER: its index as runs of consecutive channels, (dst, src, len) in rep */
    int edge_sums;              /* a zero-padded BCONV: rep also holds its window rows' and columns' sums */
} op_t;

/* A persistent pool of threads - 1 workers (the calling thread is worker 0), started at the first
 * parallel op and kept until the thread count changes or the model is freed, so a layer pays a
 * hand-over, not a thread creation.  A job is `items` calls fn(ctx, item, thread).  Threads claim items
 * one at a time by a compare-and-swap on `claim` (the job's generation in the high 32 bits, the next
 * item in the low 32: a worker late from the last job cannot claim an item of the next one with the
 * last one's fn), so a worker the scheduler has not woken yet (a busy machine) holds nobody up: the
 * caller goes on claiming, and waits only for items already claimed.  Between jobs a worker spins on
 * the generation for up to POOL_SPIN_US (a network's layers follow each other within microseconds;
 * a futex wake-up costs more than the smaller layers), then sleeps on the condition variable; the
 * caller waits for the last claimed item the same way.  Every item writes its own outputs, so results
 * do not depend on who ran what. */
typedef void (*task_fn)(void *ctx, int item, int thread);

#define POOL_SPIN_US 200

typedef struct {
    int threads, started;
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    int quit;                   /* atomic */
    task_fn fn;                 /* atomic: the job, set before its generation is published */
    void *ctx;                  /* atomic */
    int items;                  /* atomic */
    uint64_t claim;             /* atomic: generation << 32 | next unclaimed item */
    int finished;               /* atomic: items of the current job finished */
    int sleepers;               /* atomic: workers asleep on `go` */
    int caller_waits;           /* under mu: the caller sleeps on `done` */
} pool_t;

typedef struct {
    pool_t *p;
    int id;
} worker_t;

#define MAX_THREADS 256
/* below this many word operations (bgemm words or int16 MACs / 8, elements times their probes) an op
 * runs on one thread: handing a job to the spinning pool costs about a microsecond, to a sleeping one a
 * futex wake-up (bnhw_model_set_split_threshold changes it, for tests) */
#define PAR_MIN_WORK (1L << 14)

struct bnhw_model {
    unsigned char *file;
    uint64_t size;
    int n_tensors, n_ops, input, output;
    tensor_t *t;
    op_t *ops;
    const bnhw_kernels *k;
    void *scratch;
    size_t scratch_bytes;
    int threads;               /* threads to run with (>= 1) */
    double split_min;          /* least work an op is split over threads for */
    void **tscratch;           /* per-thread scratch */
    size_t *tscratch_bytes;
    pool_t pool;
    worker_t *workers;
    int fuse;                  /* run the fused epilogues (1, the default) or every op on its own (0) */
    int64_t *tbound;           /* per tensor: a bound on |every value| any run can hold, -1 unknown (bounds_plan) */
};

static char g_error[512];

const char *bnhw_last_error(void) { return g_error; }

static void set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_error, sizeof g_error, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------------------------ loading */
typedef struct {
    const unsigned char *p;
    uint64_t off, size;
    int bad;
} reader_t;

static uint32_t rd_u32(reader_t *r)
{
    if (r->off + 4 > r->size) { r->bad = 1; return 0; }
    const unsigned char *b = r->p + r->off;
    r->off += 4;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void rd_align(reader_t *r, uint64_t a) { r->off = (r->off + a - 1) / a * a; }

static char *rd_name(reader_t *r)
{
    uint32_t n = rd_u32(r);
    if (r->bad || r->off + n > r->size) { r->bad = 1; return NULL; }
    char *s = malloc((size_t)n + 1);
    if (!s) { r->bad = 1; return NULL; }
    memcpy(s, r->p + r->off, n);
    s[n] = 0;
    r->off += n;
    rd_align(r, 4);
    return s;
}

static size_t tensor_bytes(const tensor_t *t)
{
    return t->packed ? (size_t)t->H * t->W * t->wpp * sizeof(bnhw_word) : (size_t)t->H * t->W * t->C * sizeof(int32_t);
}

static const size_t dt_size[] = {0, 2, 4, 8, 8};

static int check_op(const bnhw_model *m, const op_t *o);
static int ew_plan(op_t *o);
static void pool_stop(bnhw_model *m);
static void fuse_plan(bnhw_model *m);
static int bounds_plan(bnhw_model *m);

/* ------------------------------------------------------------------------------------------ threads */
static inline void cpu_relax(int i)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || (defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH >= 7)
    __asm__ __volatile__("yield");
#endif
    /* now and then give the core away: on a machine with fewer free cores than threads, the thread
     * this one waits for may be queued behind it */
    if ((i & 63) == 63) sched_yield();
}

static double now(void);

/* run items of generation gen until none is left unclaimed; returns after the last one it ran */
static void pool_claim(pool_t *p, uint32_t gen, task_fn fn, void *ctx, int items, int id)
{
    for (;;) {
        uint64_t c = __atomic_load_n(&p->claim, __ATOMIC_ACQUIRE);
        for (;;) {
            if ((uint32_t)(c >> 32) != gen || (int)(uint32_t)c >= items) return;
            if (__atomic_compare_exchange_n(&p->claim, &c, c + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) break;
        }
        fn(ctx, (int)(uint32_t)c, id);
        if (__atomic_add_fetch(&p->finished, 1, __ATOMIC_ACQ_REL) == items) {
            pthread_mutex_lock(&p->mu);
            if (p->caller_waits) pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static void *pool_worker(void *arg)
{
    worker_t *w = arg;
    pool_t *p = w->p;
    /* the generation is the high half of claim; it is bumped once per job */
    uint32_t seen = (uint32_t)(__atomic_load_n(&p->claim, __ATOMIC_ACQUIRE) >> 32);
    for (;;) {
        uint32_t gen = (uint32_t)(__atomic_load_n(&p->claim, __ATOMIC_ACQUIRE) >> 32);
        if (gen == seen && !__atomic_load_n(&p->quit, __ATOMIC_ACQUIRE)) {
            double t0 = now();
            for (int i = 0; gen == seen && !__atomic_load_n(&p->quit, __ATOMIC_ACQUIRE); i++) {
                cpu_relax(i);
                gen = (uint32_t)(__atomic_load_n(&p->claim, __ATOMIC_ACQUIRE) >> 32);
                if ((i & 63) == 63 && now() - t0 > 1e-6 * POOL_SPIN_US) break;
            }
            if (gen == seen && !__atomic_load_n(&p->quit, __ATOMIC_ACQUIRE)) {
                pthread_mutex_lock(&p->mu);
                __atomic_add_fetch(&p->sleepers, 1, __ATOMIC_SEQ_CST);
                for (;;) {
                    gen = (uint32_t)(__atomic_load_n(&p->claim, __ATOMIC_SEQ_CST) >> 32);
                    if (gen != seen || __atomic_load_n(&p->quit, __ATOMIC_SEQ_CST)) break;
                    pthread_cond_wait(&p->go, &p->mu);
                }
                __atomic_sub_fetch(&p->sleepers, 1, __ATOMIC_SEQ_CST);
                pthread_mutex_unlock(&p->mu);
            }
        }
        if (__atomic_load_n(&p->quit, __ATOMIC_ACQUIRE)) break;
        seen = gen;
        /* the job's fields were written before its generation was published (release); a worker this
         * late may read the next job's fields instead, but then claims nothing (the generation differs) */
        pool_claim(p, gen, __atomic_load_n(&p->fn, __ATOMIC_RELAXED), __atomic_load_n(&p->ctx, __ATOMIC_RELAXED),
                   __atomic_load_n(&p->items, __ATOMIC_RELAXED), w->id);
    }
    return NULL;
}

static void pool_stop(bnhw_model *m)
{
    pool_t *p = &m->pool;
    if (p->started) {
        pthread_mutex_lock(&p->mu);
        __atomic_store_n(&p->quit, 1, __ATOMIC_SEQ_CST);
        pthread_cond_broadcast(&p->go);
        pthread_mutex_unlock(&p->mu);
        for (int i = 0; i < p->threads - 1; i++) pthread_join(p->th[i], NULL);
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->go);
        pthread_cond_destroy(&p->done);
    }
    free(p->th);
    free(m->workers);
    memset(p, 0, sizeof *p);
    m->workers = NULL;
    if (m->tscratch)
        for (int i = 0; i < m->threads; i++) free(m->tscratch[i]);
    free(m->tscratch);
    free(m->tscratch_bytes);
    m->tscratch = NULL;
    m->tscratch_bytes = NULL;
}

/* the pool and per-thread scratch table for m->threads; 0 on success */
static int pool_start(bnhw_model *m)
{
    pool_t *p = &m->pool;
    if (!m->tscratch) {
        m->tscratch = calloc((size_t)m->threads, sizeof *m->tscratch);
        m->tscratch_bytes = calloc((size_t)m->threads, sizeof *m->tscratch_bytes);
        if (!m->tscratch || !m->tscratch_bytes) { set_error("out of memory"); return -1; }
    }
    if (p->started || m->threads == 1) return 0;
    p->threads = m->threads;
    p->th = calloc((size_t)p->threads, sizeof *p->th);
    m->workers = calloc((size_t)p->threads, sizeof *m->workers);
    if (!p->th || !m->workers) { set_error("out of memory"); return -1; }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    p->started = 1;
    for (int i = 0; i < p->threads - 1; i++) {
        m->workers[i] = (worker_t){p, i + 1};
        if (pthread_create(&p->th[i], NULL, pool_worker, &m->workers[i])) {
            p->threads = i + 1;            /* pool_stop joins the ones started */
            pool_stop(m);
            set_error("cannot start thread %d of %d", i + 2, m->threads);
            return -1;
        }
    }
    return 0;
}

/* fn(ctx, item, thread) for item in [0, items): on all the pool's threads when threads > 1, else on the
 * calling thread (thread 0) */
static void pool_run(bnhw_model *m, int items, int threads, task_fn fn, void *ctx)
{
    pool_t *p = &m->pool;
    if (threads <= 1 || items <= 1 || !p->started) {
        for (int i = 0; i < items; i++) fn(ctx, i, 0);
        return;
    }
    /* every item of the last job has finished: a worker still reading its fields claims nothing */
    __atomic_store_n(&p->fn, fn, __ATOMIC_RELAXED);
    __atomic_store_n(&p->ctx, ctx, __ATOMIC_RELAXED);
    __atomic_store_n(&p->items, items, __ATOMIC_RELAXED);
    __atomic_store_n(&p->finished, 0, __ATOMIC_RELAXED);
    uint32_t gen = (uint32_t)(__atomic_load_n(&p->claim, __ATOMIC_RELAXED) >> 32) + 1;
    __atomic_store_n(&p->claim, (uint64_t)gen << 32, __ATOMIC_SEQ_CST);     /* publish */
    if (__atomic_load_n(&p->sleepers, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->go);
        pthread_mutex_unlock(&p->mu);
    }
    pool_claim(p, gen, fn, ctx, items, 0);
    /* wait for the items other threads claimed: spin, then sleep */
    double t0 = now();
    for (int i = 0; __atomic_load_n(&p->finished, __ATOMIC_ACQUIRE) < items; i++) {
        cpu_relax(i);
        if ((i & 63) == 63 && now() - t0 > 1e-6 * POOL_SPIN_US) {
            pthread_mutex_lock(&p->mu);
            p->caller_waits = 1;
            while (__atomic_load_n(&p->finished, __ATOMIC_ACQUIRE) < items) pthread_cond_wait(&p->done, &p->mu);
            p->caller_waits = 0;
            pthread_mutex_unlock(&p->mu);
            break;
        }
    }
}

/* per-thread scratch of at least `bytes` for threads [0, n); 0 on success */
static int thread_scratch(bnhw_model *m, int n, size_t bytes)
{
    for (int t = 0; t < n; t++)
        if (bytes > m->tscratch_bytes[t]) {
            free(m->tscratch[t]);
            m->tscratch[t] = malloc(bytes);
            m->tscratch_bytes[t] = m->tscratch[t] ? bytes : 0;
            if (!m->tscratch[t]) { set_error("out of memory"); return -1; }
        }
    return 0;
}

int bnhw_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

int bnhw_model_set_threads(bnhw_model *m, int n)
{
    if (n < 0 || n > MAX_THREADS) { set_error("threads must be 0 (all cores) to %d, got %d", MAX_THREADS, n); return -1; }
    if (n == 0) n = bnhw_default_threads();
    if (n != m->threads) {
        pool_stop(m);
        m->threads = n;
    }
    return 0;
}

int bnhw_model_threads(const bnhw_model *m) { return m->threads; }

void bnhw_model_set_fusion(bnhw_model *m, int on) { m->fuse = on != 0; }

int bnhw_model_op_fused(const bnhw_model *m, int i) { return i >= 0 && i < m->n_ops && m->fuse && m->ops[i].fused; }

int bnhw_model_n_fused(const bnhw_model *m)
{
    int n = 0;
    for (int i = 0; i < m->n_ops; i++) n += m->ops[i].fused;
    return m->fuse ? n : 0;
}

void bnhw_model_set_split_threshold(bnhw_model *m, double work) { m->split_min = work < 0 ? (double)PAR_MIN_WORK : work; }

bnhw_model *bnhw_model_load_buffer(const void *data, uint64_t size)
{
    bnhw_model *m = calloc(1, sizeof *m);
    if (!m) { set_error("out of memory"); return NULL; }
    /* a private 8-byte aligned copy: parameters point into it */
    m->file = malloc(size ? size : 1);
    if (!m->file) { set_error("out of memory"); free(m); return NULL; }
    memcpy(m->file, data, size);
    m->size = size;
    reader_t r = {m->file, 0, size, 0};
    if (size < 40 || memcmp(m->file, "BNHWCPU\0", 8) != 0) { set_error("not a bnhw CPU model file"); goto fail; }
    r.off = 8;
    uint32_t version = rd_u32(&r);
    if (version != 1) { set_error("model file version %u, this runtime reads version 1", version); goto fail; }
    m->n_tensors = (int)rd_u32(&r);
    m->n_ops = (int)rd_u32(&r);
    m->input = (int)rd_u32(&r);
    m->output = (int)rd_u32(&r);
    r.off += 12;
    if (m->n_tensors <= 0 || m->n_tensors > 1000000 || m->n_ops < 0 || m->n_ops > 1000000 ||
        m->input < 0 || m->output < 0 || m->input >= m->n_tensors || m->output >= m->n_tensors) {
        set_error("corrupt model header");
        goto fail;
    }
    m->t = calloc((size_t)m->n_tensors, sizeof *m->t);
    m->ops = calloc((size_t)(m->n_ops ? m->n_ops : 1), sizeof *m->ops);
    if (!m->t || !m->ops) { set_error("out of memory"); goto fail; }
    for (int i = 0; i < m->n_tensors; i++) {
        tensor_t *t = &m->t[i];
        t->H = (int)rd_u32(&r); t->W = (int)rd_u32(&r); t->C = (int)rd_u32(&r);
        t->packed = (int)rd_u32(&r); t->groups = (int)rd_u32(&r);
        t->name = rd_name(&r);
        /* element counts stay below 2^31: the ops index with int and int64 arithmetic */
        if (r.bad || t->H <= 0 || t->W <= 0 || t->C <= 0 || t->groups <= 0 || t->C % t->groups ||
            (int64_t)t->H * t->W > INT32_MAX || (int64_t)t->H * t->W * t->C > INT32_MAX ||
            (t->packed != 0 && t->packed != 1)) {
            set_error("corrupt tensor %d", i); goto fail;
        }
        t->wpp = t->groups * bnhw_words(t->C / t->groups);
        t->data = calloc(1, tensor_bytes(t));
        if (!t->data) { set_error("out of memory for tensor %s", t->name); goto fail; }
    }
    for (int i = 0; i < m->n_ops; i++) {
        op_t *o = &m->ops[i];
        o->opcode = (int)rd_u32(&r); o->n_in = (int)rd_u32(&r);
        o->in[0] = (int)rd_u32(&r); o->in[1] = (int)rd_u32(&r); o->out = (int)rd_u32(&r);
        for (int j = 0; j < ATTRS; j++) o->a[j] = (int32_t)rd_u32(&r);
        o->name = rd_name(&r);
        o->n_params = (int)rd_u32(&r);
        if (r.bad || o->n_params < 0 || o->n_params > MAX_PARAMS) { set_error("corrupt op %d", i); goto fail; }
        for (int j = 0; j < o->n_params; j++) {
            o->p[j].dtype = (int)rd_u32(&r);
            o->p[j].count = rd_u32(&r);
            rd_align(&r, 8);
            if (o->p[j].dtype < DT_I16 || o->p[j].dtype > DT_U64) { r.bad = 1; break; }
            uint64_t bytes = (uint64_t)o->p[j].count * dt_size[o->p[j].dtype];
            if (r.off + bytes > size) { r.bad = 1; break; }
            o->p[j].data = m->file + r.off;
            r.off += bytes;
            rd_align(&r, 8);
        }
        if (r.bad) { set_error("corrupt parameters of op %s", o->name ? o->name : "?"); goto fail; }
        if (check_op(m, o)) goto fail;
        if (ew_plan(o)) { set_error("out of memory"); goto fail; }
    }
    fuse_plan(m);
    if (bounds_plan(m)) { set_error("out of memory"); goto fail; }
    m->fuse = 1;
    m->k = bnhw_kernel_set("auto");
    m->threads = bnhw_default_threads();
    m->split_min = (double)PAR_MIN_WORK;
    return m;
fail:
    bnhw_model_free(m);
    return NULL;
}

bnhw_model *bnhw_model_load(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) { set_error("%s: cannot open", path); return NULL; }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0) { fclose(f); set_error("%s: cannot read", path); return NULL; }
    void *buf = malloc((size_t)n + 1);
    if (!buf) { fclose(f); set_error("out of memory"); return NULL; }
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) { free(buf); set_error("%s: short read", path); return NULL; }
    bnhw_model *m = bnhw_model_load_buffer(buf, (uint64_t)n);
    free(buf);
    return m;
}

void bnhw_model_free(bnhw_model *m)
{
    if (!m) return;
    if (m->t)
        for (int i = 0; i < m->n_tensors; i++) { free(m->t[i].name); free(m->t[i].data); }
    if (m->ops)
        for (int i = 0; i < m->n_ops; i++) { free(m->ops[i].name); free(m->ops[i].rep); free(m->ops[i].wt); }
    pool_stop(m);
    free(m->t); free(m->ops); free(m->file); free(m->scratch); free(m->tbound);
    free(m);
}

int bnhw_model_set_kernels(bnhw_model *m, const char *name)
{
    const bnhw_kernels *k = bnhw_kernel_set(name);
    if (!k) { set_error("%s", bnhw_kernel_set_why(name)); return -1; }
    m->k = k;
    return 0;
}

const char *bnhw_model_kernels(const bnhw_model *m) { return m->k->name; }
int64_t bnhw_model_input_size(const bnhw_model *m) { const tensor_t *t = &m->t[m->input]; return (int64_t)t->H * t->W * t->C; }
int64_t bnhw_model_output_size(const bnhw_model *m) { const tensor_t *t = &m->t[m->output]; return (int64_t)t->H * t->W * t->C; }
int bnhw_model_n_ops(const bnhw_model *m) { return m->n_ops; }
const char *bnhw_model_op_name(const bnhw_model *m, int i) { return i >= 0 && i < m->n_ops ? m->ops[i].name : NULL; }
double bnhw_model_op_seconds(const bnhw_model *m, int i) { return i >= 0 && i < m->n_ops ? m->ops[i].seconds : -1.0; }
int bnhw_model_n_tensors(const bnhw_model *m) { return m->n_tensors; }
const char *bnhw_model_tensor_name(const bnhw_model *m, int i) { return i >= 0 && i < m->n_tensors ? m->t[i].name : NULL; }
int64_t bnhw_model_tensor_size(const bnhw_model *m, int i)
{
    return i >= 0 && i < m->n_tensors ? (int64_t)m->t[i].H * m->t[i].W * m->t[i].C : -1;
}

/* pixels [p0, p1) of packed t -> +-1 int32 (out is the whole tensor): bit i of a group's words is
 * channel i; 1 - 2 * bit, a loop the compiler vectorises */
VEC_CLONES static void unpack_range(const tensor_t *t, int32_t *out, int64_t p0, int64_t p1)
{
    int cg = t->C / t->groups, wpg = bnhw_words(cg);
    for (int64_t p = p0; p < p1; p++)
        for (int g = 0; g < t->groups; g++) {
            const bnhw_word *w = (const bnhw_word *)t->data + p * t->wpp + (size_t)g * wpg;
            int32_t *o = out + p * t->C + (size_t)g * cg;
            for (int i = 0; i < cg; i++)
                o[i] = 1 - 2 * (int32_t)(w[i / BNHW_WORD_BITS] >> (i % BNHW_WORD_BITS) & 1u);
        }
}

static void unpack_tensor(const tensor_t *t, int32_t *out) { unpack_range(t, out, 0, (int64_t)t->H * t->W); }

int bnhw_model_tensor(const bnhw_model *m, int i, int32_t *out)
{
    if (i < 0 || i >= m->n_tensors) { set_error("no tensor %d", i); return -1; }
    const tensor_t *t = &m->t[i];
    if (t->packed) unpack_tensor(t, out);
    else memcpy(out, t->data, tensor_bytes(t));
    return 0;
}

/* ------------------------------------------------------------------------------------------ checks */
static int need(const op_t *o, int ok, const char *what)
{
    if (!ok) set_error("op %s: %s", o->name ? o->name : "?", what);
    return !ok;
}

static int check_op(const bnhw_model *m, const op_t *o)
{
    const int32_t *a = o->a;
    if (need(o, o->n_in >= 1 && o->n_in <= 2, "bad input count")) return -1;
    for (int j = 0; j < o->n_in; j++)
        if (need(o, o->in[j] >= 0 && o->in[j] < m->n_tensors, "input tensor out of range")) return -1;
    if (need(o, o->out >= 0 && o->out < m->n_tensors, "output tensor out of range")) return -1;
    for (int j = 0; j < o->n_in; j++)
        if (need(o, o->in[j] != o->out, "output tensor is also an input")) return -1;
    const tensor_t *x = &m->t[o->in[0]], *y = &m->t[o->out];
    switch (o->opcode) {
    case OP_BCONV:
    case OP_ICONV: {
        /* window geometry small enough that no index computation overflows int */
        if (need(o, a[A_GROUPS] > 0 && a[A_K] > 0 && a[A_K] <= 255 && a[A_STRIDE] > 0 && a[A_DIL] > 0 &&
                        a[A_PAD] >= -65535 && a[A_PAD] <= 65535 && a[A_C] % a[A_GROUPS] == 0 && a[A_COUT] % a[A_GROUPS] == 0 &&
                        (int64_t)a[A_HO] * a[A_STRIDE] + (int64_t)a[A_K] * a[A_DIL] <= (1 << 30) &&
                        (int64_t)a[A_WO] * a[A_STRIDE] + (int64_t)a[A_K] * a[A_DIL] <= (1 << 30) &&
                        (int64_t)a[A_K] * a[A_K] * (a[A_C] / a[A_GROUPS]) <= (1 << 30) &&
                        a[A_NTHR] >= 0, "bad convolution attributes")) return -1;
        int groups = a[A_GROUPS], kk = a[A_K] * a[A_K];
        if (need(o, x->H == a[A_H] && x->W == a[A_W] && x->C == a[A_C] && y->H == a[A_HO] && y->W == a[A_WO] &&
                        y->C == a[A_COUT], "tensor shapes do not match the attributes")) return -1;
        if (need(o, o->n_params >= 2, "missing parameters")) return -1;
        int cg = a[A_C] / groups;
        if (o->opcode == OP_BCONV) {
            if (need(o, x->packed && x->groups == groups, "input is not packed in the conv's groups")) return -1;
            if (need(o, o->n_params == 3 && o->p[0].dtype == DT_U64 &&
                            o->p[0].count == (uint64_t)a[A_COUT] * kk * bnhw_words(cg) && o->p[1].dtype == DT_I32 &&
                            o->p[1].count == (uint64_t)a[A_COUT] * kk, "bad binary weights")) return -1;
        } else {
            if (need(o, !x->packed, "integer conv on a packed input")) return -1;
            if (need(o, o->p[0].dtype == (a[A_USE_S16] ? DT_I16 : DT_I32) &&
                            o->p[0].count == (uint64_t)a[A_COUT] * kk * cg, "bad integer weights")) return -1;
        }
        const param_t *thr = &o->p[o->n_params - 1];
        if (a[A_OUT_MODE] == OUT_ACC) { if (need(o, !y->packed, "accumulator output is packed")) return -1; }
        else if (need(o, thr->dtype == DT_I32 && thr->count == (uint64_t)a[A_COUT] * a[A_NTHR] &&
                             y->packed == (a[A_OUT_MODE] == OUT_PACKED), "bad thresholds")) return -1;
        return 0;
    }
    case OP_THRESH:
        return need(o, !x->packed && x->H == y->H && x->W == y->W && x->C == y->C && o->n_params == 1 &&
                           a[A_NTHR] >= 0 && o->p[0].dtype == DT_I32 && o->p[0].count == (uint64_t)x->C * a[A_NTHR] &&
                           y->packed == (a[A_OUT_MODE] == OUT_PACKED), "bad thresholding") ? -1 : 0;
    case OP_MAXPOOL:
        return need(o, a[A_K] > 0 && x->packed == y->packed && (!x->packed || x->groups == y->groups) &&
                           y->H == x->H / a[A_K] && y->W == x->W / a[A_K] && y->C == x->C, "bad max pool") ? -1 : 0;
    case OP_AVGPOOLSUM:
        return need(o, a[A_K] > 0 && !x->packed && !y->packed && y->H == x->H / a[A_K] && y->W == x->W / a[A_K] &&
                           y->C == x->C, "bad average pool") ? -1 : 0;
    case OP_GAP:
        return need(o, !x->packed && !y->packed && y->H == 1 && y->W == 1 && y->C == x->C, "bad global pool") ? -1 : 0;
    case OP_GATHER: {
        if (need(o, x->packed == y->packed && y->H == x->H && y->W == x->W && o->n_params == 1 &&
                        o->p[0].dtype == DT_I32 && o->p[0].count == (uint32_t)y->C, "bad gather")) return -1;
        const int32_t *idx = o->p[0].data;
        for (int c = 0; c < y->C; c++)
            if (need(o, idx[c] >= 0 && idx[c] < x->C, "gather index out of range")) return -1;
        return 0;
    }
    case OP_ADDREQUANT:
        if (o->n_in == 2) {
            const tensor_t *s = &m->t[o->in[1]];
            if (need(o, !s->packed && s->H == x->H && s->W == x->W && s->C == x->C, "bad shortcut")) return -1;
        }
        return need(o, !x->packed && !y->packed && y->H == x->H && y->W == x->W && y->C == x->C && o->n_params == 2 &&
                           a[A_SHIFT] >= -62 && a[A_SHIFT] <= 62 && a[A_SSHIFT] >= 0 && a[A_SSHIFT] <= 62 &&
                           o->p[0].dtype == DT_I64 && o->p[1].dtype == DT_I64 && o->p[0].count == (uint32_t)x->C &&
                           o->p[1].count == (uint32_t)x->C, "bad add-requantiser") ? -1 : 0;
    case OP_RPRELU:
        return need(o, !x->packed && !y->packed && y->H == x->H && y->W == x->W && y->C == x->C && o->n_params == 3 &&
                           a[A_FRAC] >= 0 && a[A_FRAC] <= 62 && o->p[0].count == (uint32_t)x->C && o->p[1].count == (uint32_t)x->C &&
                           o->p[2].count == (uint32_t)x->C && o->p[0].dtype == DT_I64 && o->p[1].dtype == DT_I64 &&
                           o->p[2].dtype == DT_I64, "bad RPReLU") ? -1 : 0;
    case OP_LABELSELECT:
        return need(o, !x->packed && !y->packed && y->H == 1 && y->W == 1 && y->C == 1, "bad label select") ? -1 : 0;
    case OP_UNPACK:
        return need(o, x->packed && !y->packed && x->H == y->H && x->W == y->W && x->C == y->C, "bad unpack") ? -1 : 0;
    case OP_CONCAT: {
        if (need(o, o->n_in == 2, "a concatenation has two inputs")) return -1;
        const tensor_t *x2 = &m->t[o->in[1]];
        return need(o, !x->packed && !x2->packed && !y->packed && x->H == y->H && x->W == y->W && x2->H == y->H &&
                           x2->W == y->W && x->C == a[A_C] && y->C == a[A_COUT] && x->C + x2->C == y->C,
                    "bad concatenation") ? -1 : 0;
    }
    case OP_WPOOL: {
        if (need(o, !x->packed && !y->packed && a[A_K] > 0 && a[A_K] <= 255 && a[A_STRIDE] > 0 &&
                           a[A_PAD] >= 0 && a[A_PAD] <= 255 && (a[A_OUT_MODE] == 0 || a[A_OUT_MODE] == 1) &&
                           x->H == a[A_H] && x->W == a[A_W] && x->C == a[A_C] && y->C == x->C &&
                           y->H == a[A_HO] && y->W == a[A_WO] &&
                           (int64_t)(a[A_HO] - 1) * a[A_STRIDE] + a[A_K] <= (int64_t)x->H + 2 * a[A_PAD] &&
                           (int64_t)(a[A_WO] - 1) * a[A_STRIDE] + a[A_K] <= (int64_t)x->W + 2 * a[A_PAD] &&
                           o->n_params == 1 && o->p[0].dtype == DT_I32 &&
                           o->p[0].count == (a[A_OUT_MODE] ? (uint64_t)a[A_HO] * a[A_WO] : 0),
                    "bad window pool")) return -1;
        const int32_t *cnt = o->p[0].data;
        for (uint64_t i = 0; i < o->p[0].count; i++)
            if (need(o, cnt[i] > 0, "window pool divisor not positive")) return -1;
        return 0;
    }
    default:
        set_error("op %s: unknown opcode %d", o->name ? o->name : "?", o->opcode);
        return -1;
    }
}

/* ------------------------------------------------------------------------------------------ helpers */
static void *scratch(bnhw_model *m, size_t bytes)
{
    if (bytes > m->scratch_bytes) {
        free(m->scratch);
        m->scratch = malloc(bytes);
        m->scratch_bytes = m->scratch ? bytes : 0;
    }
    return m->scratch;
}

/* floor(num / 2^s) and round-half-even of num / 2^s, num / den (den > 0) */
static int64_t floor_div(int64_t num, int64_t den)
{
    int64_t q = num / den;
    if ((num % den != 0) && ((num < 0) != (den < 0))) q -= 1;
    return q;
}

static int64_t rhe_div(int64_t num, int64_t den)
{
    int64_t q = floor_div(num, den), r = num - q * den, twice = 2 * r;
    return q + ((twice > den) || (twice == den && (q & 1)));
}

/* two's-complement wrapping int64 arithmetic: a valid model never wraps (bnhw.hw.cpu.program checks
 * every bound below 2^62), a corrupt one gets garbage values instead of undefined behaviour */
static int64_t wmul(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }
static int64_t wadd(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }

/* round_half_even(num / 2^shift) with shifts only (no division): floor by an arithmetic shift written
 * portably (right shifts of non-negative values only), then the remainder decides */
static int64_t rhe_shift(int64_t num, int shift)
{
    if (shift <= 0) return wmul(num, (int64_t)1 << -shift);
    int64_t q = num >= 0 ? (int64_t)((uint64_t)num >> shift) : ~(int64_t)((uint64_t)~num >> shift);
    int64_t d = (int64_t)1 << shift, r = num - q * d, twice = 2 * r;
    return q + ((twice > d) || (twice == d && (q & 1)));
}

static int32_t clip(int64_t v, int32_t lo, int32_t hi) { return (int32_t)(v < lo ? lo : v > hi ? hi : v); }

/* number of thresholds t[0..n) (sorted) with t <= v */
static int count_le(const int32_t *t, int n, int32_t v)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (t[mid] <= v) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* ---- fused epilogues
 * The ops right after a convolution that work output pixel by output pixel -- the shortcut add /
 * requantiser, RPReLU, thresholding / sign-packing of the next layer's input, gathers, unpacking --
 * and pools reading a tensor made before the conv run in the conv's own pass: each chunk of output
 * pixels goes through the whole chain while its rows are in L1 / L2, on the thread that computed it,
 * instead of one full-tensor pass (and one wake-up of the threads) per op.  Every op still writes its
 * own output rows, with the same row function as unfused, so the values are those of the op-by-op
 * run, bit for bit, whatever the chunking or thread count. */
typedef void (*rows_fn)(bnhw_model *m, const op_t *o, int p0, int p1);
static rows_fn rows_fn_of(int opcode);

/* the ops fused after conv o over its output pixels [p0, p1) */
static void fused_rows(bnhw_model *m, const op_t *o, int p0, int p1)
{
    if (m->fuse)
        for (int q = 1; q <= o->nfuse; q++) rows_fn_of(o[q].opcode)(m, &o[q], p0, p1);
}

/* the conv epilogue: rows x Cout int32 accumulators -> output rows [p0, p0 + rows) */
VEC_CLONES static void activation_rows(const bnhw_model *m, const op_t *o, const int32_t *acc, int p0, int rows)
{
    const int32_t *a = o->a;
    const tensor_t *y = &m->t[o->out];
    int C = a[A_COUT];
    const int32_t *thr = o->p[o->n_params - 1].data;
    if (a[A_OUT_MODE] == OUT_ACC) {
        memcpy((int32_t *)y->data + (size_t)p0 * C, acc, sizeof(int32_t) * (size_t)rows * C);
    } else if (a[A_OUT_MODE] == OUT_PACKED) {
        m->k->pack(acc, rows, C, y->groups, thr, (bnhw_word *)y->data + (size_t)p0 * y->wpp);
    } else {
        int n = a[A_NTHR];
        int32_t *out = (int32_t *)y->data + (size_t)p0 * C;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < C; c++)
                out[r * C + c] = (int32_t)((int64_t)a[A_OUT_SCALE] * count_le(thr + (size_t)c * n, n, acc[r * C + c]) +
                                           a[A_OUT_BIAS]);
    }
}

/* output pixels per chunk: the im2col block, the popcounts and the accumulators of one chunk
 * (row_bytes each) stay within about 64 KiB, a size that fits the L2 of every targeted core */
static int chunk_rows(size_t row_bytes, int pixels)
{
    size_t r = (64u << 10) / (row_bytes ? row_bytes : 1);
    if (r < 4) r = 4;
    if (r > 1024) r = 1024;
    return (int)r < pixels ? (int)r : pixels;
}

/* ------------------------------------------------------------------------------------------ ops */
/* How a conv's work is split: chunks of R output pixels (whose im2col block, popcounts and
 * accumulators stay in L2), each optionally cut into S slices of output channels (when there are
 * fewer chunks than threads: few pixels, e.g. a fully connected layer); items = chunks * S.  The
 * thread count decides only the split, never a result. */
typedef struct {
    int R, chunks, S, slice, threads;
} split_t;

static split_t conv_split(const bnhw_model *m, size_t row_bytes, int pixels, int Cout, double work)
{
    split_t s;
    s.R = chunk_rows(row_bytes, pixels);
    s.threads = work >= m->split_min ? m->threads : 1;
    if (s.threads > 1) {
        /* a multiple of the thread count of (near) equal chunks: 7 chunks on 2 threads would be 4:3 */
        int chunks = (pixels + s.R - 1) / s.R;
        chunks = (chunks + s.threads - 1) / s.threads * s.threads;
        s.R = (pixels + chunks - 1) / chunks;
    }
    if (s.R < 1) s.R = 1;
    s.chunks = (pixels + s.R - 1) / s.R;
    s.S = 1;
    if (s.threads > 1 && s.chunks < s.threads) {
        s.S = (s.threads + s.chunks - 1) / s.chunks;
        if (s.S > Cout / 8) s.S = Cout / 8 > 1 ? Cout / 8 : 1;   /* at least 8 channels a slice */
    }
    s.slice = (Cout + s.S - 1) / s.S;
    return s;
}

typedef struct {
    bnhw_model *m;
    const op_t *o;
    split_t sp;
    int32_t *shared;           /* S > 1: the popcounts / accumulators of every chunk (2 * pixels * Cout) */
    /* a tap-row conv (tap_rows): its input with the padding written around it (pad > 0; else the input
     * itself), Wp pixels a row; NULL for the im2col path */
    const bnhw_word *padded;
    int Hp, Wp;
} conv_job;

/* A binary conv runs by tap rows, without im2col, when its groups are 1-2 words deep (bgemm_small) and it
 * has no dilation.  Its input is laid out as one plane per group with the padding written around it
 * ([g][Hp][Wp][wpg]; a one-group conv without padding reads its input in place): window row ky of the
 * output pixels along an image row is then k * wpg contiguous words of a plane row, one pixel (stride *
 * wpg words) apart, so bgemm_small reads it where it lies (lda = stride * wpg), and the k row sums add up
 * to what one call on the im2col block gives, bit for bit (padded taps read the pad words, as im2col
 * would copy them).  It pays k - 1 extra passes over the item's popcounts (Cout a pixel) where im2col
 * copies k * k * wpg words a pixel, and k bgemm_small calls a row run per group: so only up to
 * TAP_ROWS_COUT channels a group and from TAP_ROWS_WO output pixels a row, and when the planes are a copy,
 * only at stride 1 (a strided conv would copy stride^2 input pixels an output pixel).  Measured on
 * nasbnn-cifar-smallest (AVX-512, one thread): its 32x32 6- and 12-channel convs 0.013 / 0.015 ms by
 * im2col, 0.011 / 0.012 by tap rows, the 16x16x24 two-group conv 0.0078 -> 0.0064; but the strided and
 * 8x8 grouped convs slower (0.0065 -> 0.0086, 0.0031 -> 0.0037 ms), and CNV-W1A1 (64-128 channels)
 * 0.107 -> 0.117 ms. */
#define TAP_ROWS_COUT 32
/* groups at most this many words deep run the shallow-conv GEMM (bgemm_small) */
#define SMALL_DEPTH 2
#define TAP_ROWS_WO 16

static int tap_rows(const op_t *o)
{
    const int32_t *a = o->a;
    int in_place = a[A_GROUPS] == 1 && a[A_PAD] == 0;
    return o->wt && a[A_DIL] == 1 && a[A_K] > 1 && a[A_COUT] / a[A_GROUPS] <= TAP_ROWS_COUT && a[A_WO] >= TAP_ROWS_WO &&
           (in_place || a[A_STRIDE] == 1);
}

/* one padded pixel's words, every group (wpg words of cg channels each): a pad value 0 (zero padding: its
 * taps are taken out of the count later) or +1 is bits 0, -1 the group's cg bits set */
static void pad_pixel(bnhw_word *dst, int wpp, int wpg, int cg, int pv)
{
    for (int w = 0; w < wpp; w++) {
        int bits = cg - (w % wpg) * BNHW_WORD_BITS;
        dst[w] = pv >= 0 ? 0 : bits >= BNHW_WORD_BITS ? ~(bnhw_word)0 : (((bnhw_word)1 << bits) - 1);
    }
}

/* One binary conv item: chunk p0 = chunk * R (rows pixels), output channels [c0, c1). */
VEC_CLONES static void bconv_item(void *arg, int item, int thread)
{
    conv_job *j = arg;
    bnhw_model *m = j->m;
    const op_t *o = j->o;
    const int32_t *a = o->a;
    const tensor_t *x = &m->t[o->in[0]];
    int k = a[A_K], kk = k * k, groups = a[A_GROUPS], cg = a[A_C] / groups, og = a[A_COUT] / groups;
    int wpg = bnhw_words(cg), Cout = a[A_COUT], Wo = a[A_WO], pixels = a[A_HO] * a[A_WO];
    int stride = a[A_STRIDE], pad = a[A_PAD], dil = a[A_DIL], H = a[A_H], W = a[A_W];
    const bnhw_word *wts = o->p[0].data;
    const int32_t *wpop = o->p[1].data;
    const bnhw_word *in = x->data;
    int direct = (k == 1 && stride == 1 && pad == 0) || j->padded;
    int K = kk * wpg, R = j->sp.R;
    int chunk = item / j->sp.S, c0 = (item % j->sp.S) * j->sp.slice, c1 = c0 + j->sp.slice;
    if (c1 > Cout) c1 = Cout;
    int p0 = chunk * R, rows = pixels - p0 < R ? pixels - p0 : R;
    if (c0 >= c1 || rows <= 0) return;
    size_t col_words = direct ? 0 : (size_t)R * K * groups;
    /* thread scratch: im2col block (every group), a padded pixel's words, then (S == 1) popcounts,
     * accumulators */
    bnhw_word *col = m->tscratch[thread];
    bnhw_word *padw = col + col_words;
    int32_t *pc, *acc;
    int direct_out = !j->shared && a[A_OUT_MODE] == OUT_ACC;
    if (j->shared) {
        pc = j->shared + (size_t)p0 * Cout;
        acc = j->shared + (size_t)pixels * Cout + (size_t)p0 * Cout;
    } else if (direct_out) {
        /* accumulator output: the popcounts go straight into the output rows and become accumulators
         * in place (element by element, so the conversion below may read and write the same array) */
        pc = acc = (int32_t *)m->t[o->out].data + (size_t)p0 * Cout;
    } else {
        pc = (int32_t *)(padw + x->wpp);
        acc = pc + (size_t)R * Cout;
    }
    /* tap rows: the sums of rows ky > 0 before they are added (after the accumulators; see op_bconv) */
    int32_t *part = (int32_t *)(padw + x->wpp) + (size_t)2 * R * Cout;
    /* a padded tap holds 0 (zero padding: it is taken out of the count below), +1 (bits 0) or -1 (the
     * group's cg bits set): a +-1 tap is an ordinary input bit and needs no correction.  padw: one
     * padded pixel, every group */
    int pv = a[A_PAD_VALUE], zero_pad = pad && pv == 0;
    pad_pixel(padw, x->wpp, wpg, cg, pv);
    int gA = c0 / og, gB = (c1 - 1) / og, ng = gB - gA + 1;    /* the groups this item's channels touch */
    if (!direct) {
        /* im2col of the chunk, group-major (col + gi * R * K: group gA + gi's rows), in one pass over
         * the window taps for every group */
        int oy = p0 / Wo, ox = p0 % Wo;
        for (int r = 0; r < rows; r++) {
            bnhw_word *dst = col + (size_t)r * K;
            int y0 = oy * stride - pad, x0 = ox * stride - pad;
            /* one group, no dilation, the window inside the row: a window row is k adjacent pixels,
             * k * wpg contiguous words */
            int row_copy = groups == 1 && dil == 1 && x0 >= 0 && x0 + k <= W;
            for (int ky = 0; ky < k; ky++) {
                int iy = y0 + ky * dil;
                if (row_copy && iy >= 0 && iy < H) {
                    const bnhw_word *src = in + ((size_t)iy * W + x0) * x->wpp;
                    if (k * wpg == 3) {         /* the 3x3 one-word case, unrolled */
                        dst[0] = src[0], dst[1] = src[1], dst[2] = src[2];
                    } else {
                        for (int w = 0; w < k * wpg; w++) dst[w] = src[w];
                    }
                    dst += k * wpg;
                    continue;
                }
                for (int kx = 0; kx < k; kx++, dst += wpg) {
                    int ix = x0 + kx * dil;
                    const bnhw_word *src = (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                               ? padw : in + ((size_t)iy * W + ix) * x->wpp;
                    src += (size_t)gA * wpg;
                    if (wpg == 1)
                        for (int gi = 0; gi < ng; gi++) dst[(size_t)gi * R * K] = src[gi];
                    else
                        for (int gi = 0; gi < ng; gi++)
                            for (int w = 0; w < wpg; w++) dst[(size_t)gi * R * K + w] = src[gi * wpg + w];
                }
            }
            if (++ox == Wo) { ox = 0; oy++; }
        }
    }
    if (j->padded) {
        /* output pixels by image-row runs: window row ky of a run, in group g's plane, is k * wpg words a
         * pixel, lda = stride * wpg; the rows ky > 0 are added into row 0's popcounts */
        int oy = p0 / Wo, ox = p0 % Wo, KR = k * wpg;
        size_t plane = (size_t)j->Hp * j->Wp * wpg;
        for (int r = 0; r < rows;) {
            int len = Wo - ox < rows - r ? Wo - ox : rows - r;
            for (int ky = 0; ky < k; ky++) {
                int32_t *dst = ky ? part : pc + (size_t)r * Cout;
                for (int g = gA; g <= gB; g++) {
                    int g0 = g * og > c0 ? g * og : c0, g1 = (g + 1) * og < c1 ? (g + 1) * og : c1;
                    const bnhw_word *A = j->padded + g * plane + ((size_t)(oy * stride + ky) * j->Wp + (size_t)ox * stride) * wpg;
                    m->k->bgemm_small(len, g1 - g0, KR, A, stride * wpg, o->wt + ((size_t)g * K + (size_t)ky * KR) * og + (g0 - g * og),
                                      og, dst + g0, Cout);
                }
                if (!ky) continue;
                uint32_t *d = (uint32_t *)pc + (size_t)r * Cout;
                const uint32_t *q = (const uint32_t *)part;
                if (c0 == 0 && c1 == Cout)
                    for (size_t e = 0; e < (size_t)len * Cout; e++) d[e] += q[e];
                else
                    for (int i = 0; i < len; i++)
                        for (int c = c0; c < c1; c++) d[(size_t)i * Cout + c] += q[(size_t)i * Cout + c];
            }
            r += len;
            ox = 0;
            oy++;
        }
    }
    for (int g = gA; g <= gB && !j->padded; g++) {
        int g0 = g * og > c0 ? g * og : c0, g1 = (g + 1) * og < c1 ? (g + 1) * og : c1;   /* this group's columns */
        if (g0 >= g1) continue;
        const bnhw_word *A;
        int lda;
        if (direct) {
            A = in + (size_t)p0 * x->wpp + g * wpg;
            lda = x->wpp;
        } else {
            A = col + (size_t)(g - gA) * R * K;
            lda = K;
        }
        if (o->wt)      /* shallow groups: channels in lanes, B k-major from the group's block */
            m->k->bgemm_small(rows, g1 - g0, K, A, lda, o->wt + (size_t)g * K * og + (g0 - g * og), og, pc + g0, Cout);
        else
            m->k->bgemm(rows, g1 - g0, K, A, lda, wts + (size_t)g0 * K, K, pc + g0, Cout);
    }
    /* popcounts -> accumulators: acc = n_valid * cg - 2 * (P - popcount of the weights at padded taps) */
    /* interior pixels (no zero-padded tap) in runs of whole rows when the item has every channel: one
     * flat loop over run x Cout values instead of a short one per pixel (the shallow convs have 6-24) */
    int oy = p0 / Wo, ox = p0 % Wo, flat = c0 == 0 && c1 == Cout, run0 = -1;
    int span = (k - 1) * dil, xlo = (pad + stride - 1) / stride, xhi = W - span + pad - 1 < 0 ? -1 : (W - span + pad - 1) / stride;
    for (int r = 0; r <= rows; r++, (++ox == Wo ? (ox = 0, oy++) : 0)) {
        int npad = 0;
        int padded[64];
        int border = 0;
        int y0 = oy * stride - pad, x0 = ox * stride - pad;
        if (flat && r < rows) {
            /* interior pixels from here on (rows apart when nothing is zero-padded, else along this row,
             * [xlo, xhi]): joined to the run at once instead of tested one by one */
            int n = !zero_pad ? rows - r : y0 < 0 || y0 + span >= H || ox < xlo || ox > xhi ? 0 : xhi - ox + 1;
            if (n > rows - r) n = rows - r;
            if (n > 1) {
                if (run0 < 0) run0 = r;
                r += n - 1;          /* to the run's last pixel; the loop steps past it */
                ox += n - 1;
                oy += ox / Wo;
                ox %= Wo;
                continue;
            }
        }
        int edge = r < rows && zero_pad && (y0 < 0 || x0 < 0 || y0 + span >= H || x0 + span >= W);
        if (flat && r < rows && !edge) {
            if (run0 < 0) run0 = r;
            continue;
        }
        if (run0 >= 0) {
            uint32_t f = (uint32_t)(kk * cg);
            uint32_t *ar = (uint32_t *)acc + (size_t)run0 * Cout;
            const uint32_t *pr = (const uint32_t *)pc + (size_t)run0 * Cout;
            size_t n = (size_t)(r - run0) * Cout;
            if (direct_out)
                for (size_t e = 0; e < n; e++) ar[e] = f - 2u * ar[e];
            else
                for (size_t e = 0; e < n; e++) ar[e] = f - 2u * pr[e];
            run0 = -1;
        }
        if (r == rows) break;
        /* edge sums: the padded taps as window rows and columns cut by the border (plus) less the taps in
         * both (minus), indices of rep's rows */
        int nplus = 0, nminus = 0, plus[16], minus[64];
        if (edge && o->edge_sums) {
            int cy[8], cx[8], ny = 0, nx = 0;
            for (int t = 0; t < k; t++) {
                int iy = oy * stride - pad + t * dil, ix = ox * stride - pad + t * dil;
                if (iy < 0 || iy >= H) cy[ny++] = t, plus[nplus++] = kk + t;
                if (ix < 0 || ix >= W) cx[nx++] = t, plus[nplus++] = kk + k + t;
            }
            for (int a = 0; a < ny; a++)
                for (int b = 0; b < nx; b++) minus[nminus++] = cy[a] * k + cx[b];
            npad = ny * k + nx * k - ny * nx;
            border = npad > 0;
        } else if (edge) {
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    int iy = oy * stride - pad + ky * dil, ix = ox * stride - pad + kx * dil;
                    if (iy < 0 || iy >= H || ix < 0 || ix >= W) {
                        if (npad < 64) padded[npad] = ky * k + kx;
                        npad++;
                        border = 1;
                    }
                }
        }
        int32_t *prow = pc + (size_t)r * Cout, *arow = acc + (size_t)r * Cout;
        int32_t full = (kk - npad) * cg;
        if (!border || (npad <= 64 && o->rep)) {   /* loops the compiler vectorises */
            if (direct_out)     /* in place: one pointer, so no overlap check keeps it scalar */
                for (int c = c0; c < c1; c++) arow[c] = (int32_t)((uint32_t)full - 2u * (uint32_t)arow[c]);
            else
                for (int c = c0; c < c1; c++) arow[c] = (int32_t)((uint32_t)full - 2u * (uint32_t)prow[c]);
            /* a border pixel: + 2 * the weights' popcount at each padded tap, from the tap-major copy
             * (ew_plan), one contiguous row of Cout per tap; the same bits as the int64 loop below
             * (full - 2 * (P - sum) modulo 2^32) */
            if (o->edge_sums) {
                for (int q = 0; q < nplus; q++) {
                    const int32_t *wq = o->rep + (size_t)plus[q] * Cout;
                    for (int c = c0; c < c1; c++) arow[c] = (int32_t)((uint32_t)arow[c] + 2u * (uint32_t)wq[c]);
                }
                for (int q = 0; q < nminus; q++) {
                    const int32_t *wq = o->rep + (size_t)minus[q] * Cout;
                    for (int c = c0; c < c1; c++) arow[c] = (int32_t)((uint32_t)arow[c] - 2u * (uint32_t)wq[c]);
                }
                continue;
            }
            for (int q = 0; q < npad; q++) {
                const int32_t *wq = o->rep + (size_t)padded[q] * Cout;
                for (int c = c0; c < c1; c++) arow[c] = (int32_t)((uint32_t)arow[c] + 2u * (uint32_t)wq[c]);
            }
            continue;
        }
        for (int c = c0; c < c1; c++) {
            int64_t p = prow[c];      /* int64 and a wrapping result: a corrupt weight popcount cannot overflow */
            if (npad <= 64)
                for (int q = 0; q < npad; q++) p -= wpop[(size_t)c * kk + padded[q]];
            else
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        int iy = oy * stride - pad + ky * dil, ix = ox * stride - pad + kx * dil;
                        if (iy < 0 || iy >= H || ix < 0 || ix >= W) p -= wpop[(size_t)c * kk + ky * k + kx];
                    }
            arow[c] = (int32_t)(full - 2 * p);
        }
    }
    if (!j->shared && !direct_out) activation_rows(m, o, acc, p0, rows);
    if (!j->shared) fused_rows(m, o, p0, p0 + rows);
}

static int op_bconv(bnhw_model *m, const op_t *o)
{
    const int32_t *a = o->a;
    int k = a[A_K], kk = k * k, groups = a[A_GROUPS], cg = a[A_C] / groups;
    int wpg = bnhw_words(cg), Cout = a[A_COUT], pixels = a[A_HO] * a[A_WO];
    int rowwise = tap_rows(o);
    int direct = (k == 1 && a[A_STRIDE] == 1 && a[A_PAD] == 0) || rowwise;
    int K = kk * wpg;
    const tensor_t *x = &m->t[o->in[0]];
    conv_job j = {m, o, {0, 0, 0, 0, 0}, NULL, NULL, 0, 0};
    j.sp = conv_split(m, (direct ? 0 : (size_t)K * groups * sizeof(bnhw_word)) + (size_t)Cout * (2 + rowwise) * sizeof(int32_t),
                      pixels, Cout, (double)pixels * Cout / groups * K);
    size_t col_words = direct ? 0 : (size_t)j.sp.R * K * groups;
    size_t bytes = (col_words + (size_t)x->wpp) * sizeof(bnhw_word) + (size_t)j.sp.R * Cout * sizeof(int32_t) * (2 + rowwise);
    int pad = a[A_PAD], Hp = x->H + 2 * pad;
    size_t shared_bytes = j.sp.S > 1 ? (size_t)pixels * Cout * 2 * sizeof(int32_t) : 0;
    size_t padded_words = rowwise && (pad || groups > 1) ? (size_t)Hp * (x->W + 2 * pad) * x->wpp : 0;
    unsigned char *sh = NULL;
    if (shared_bytes || padded_words) {
        sh = scratch(m, shared_bytes + padded_words * sizeof(bnhw_word));
        if (!sh) { set_error("out of memory"); return -1; }
        if (shared_bytes) j.shared = (int32_t *)sh;
    }
    if (rowwise) {
        j.Hp = Hp;
        j.Wp = x->W + 2 * pad;
        if (padded_words) {
            /* group-major planes [g][Hp][Wp][wpg], the pad pixels around the input holding pad words (as
             * im2col's padw) */
            bnhw_word *dst = (bnhw_word *)(sh + shared_bytes);
            size_t plane = (size_t)Hp * j.Wp * wpg, wpp = (size_t)x->wpp;
            bnhw_word pw[SMALL_DEPTH];
            pad_pixel(pw, wpg, wpg, cg, a[A_PAD_VALUE]);
            const bnhw_word *in = x->data;
            for (int g = 0; g < groups; g++)
                for (int py = 0; py < Hp; py++) {
                    bnhw_word *d = dst + g * plane + (size_t)py * j.Wp * wpg;
                    int y = py - pad, inside = y >= 0 && y < x->H;
                    for (int px = 0; px < j.Wp; px++)       /* the pad pixels: whole rows above / below, else the sides */
                        if (!inside || px < pad || px >= pad + x->W)
                            for (int w = 0; w < wpg; w++) d[(size_t)px * wpg + w] = pw[w];
                    if (!inside) continue;
                    d += (size_t)pad * wpg;
                    const bnhw_word *src = in + (size_t)y * x->W * wpp + (size_t)g * wpg;
                    if (groups == 1) {
                        memcpy(d, src, sizeof(bnhw_word) * x->W * wpp);
                        continue;
                    }
                    for (int px = 0; px < x->W; px++)
                        for (int w = 0; w < wpg; w++) d[(size_t)px * wpg + w] = src[(size_t)px * wpp + w];
                }
            j.padded = dst;
        } else {
            j.padded = x->data;       /* one group, no padding: the input is its own plane */
        }
    }
    if (thread_scratch(m, j.sp.threads, bytes)) return -1;
    pool_run(m, j.sp.chunks * j.sp.S, j.sp.threads, bconv_item, &j);
    if (j.shared)
        for (int c = 0; c < j.sp.chunks; c++) {
            int p0 = c * j.sp.R, rows = pixels - p0 < j.sp.R ? pixels - p0 : j.sp.R;
            activation_rows(m, o, j.shared + (size_t)pixels * Cout + (size_t)p0 * Cout, p0, rows);
            fused_rows(m, o, p0, p0 + rows);
        }
    return 0;
}

VEC_CLONES static void gemm_s32(int M, int N, int K, const int32_t *A, int lda, const int32_t *B, int ldb, int32_t *C, int ldc)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            int64_t s = 0;
            for (int q = 0; q < K; q++) s += (int64_t)A[(size_t)i * lda + q] * B[(size_t)j * ldb + q];
            C[(size_t)i * ldc + j] = (int32_t)s;
        }
}

/* One integer conv item: chunk p0 = chunk * R, output channels [c0, c1) (see bconv_item). */
VEC_CLONES static void iconv_item(void *arg, int item, int thread)
{
    conv_job *j = arg;
    bnhw_model *m = j->m;
    const op_t *o = j->o;
    const int32_t *a = o->a;
    const tensor_t *x = &m->t[o->in[0]];
    int k = a[A_K], kk = k * k, groups = a[A_GROUPS], C = a[A_C], cg = C / groups, og = a[A_COUT] / groups;
    int Cout = a[A_COUT], Wo = a[A_WO], pixels = a[A_HO] * a[A_WO], s16 = a[A_USE_S16];
    int stride = a[A_STRIDE], pad = a[A_PAD], dil = a[A_DIL], H = a[A_H], W = a[A_W];
    int32_t pv = a[A_PAD_VALUE];
    const int32_t *in = x->data;
    int K = kk * cg, R = j->sp.R;
    int chunk = item / j->sp.S, c0 = (item % j->sp.S) * j->sp.slice, c1 = c0 + j->sp.slice;
    if (c1 > Cout) c1 = Cout;
    int p0 = chunk * R, rows = pixels - p0 < R ? pixels - p0 : R;
    if (c0 >= c1 || rows <= 0) return;
    size_t esz = s16 ? sizeof(int16_t) : sizeof(int32_t);
    size_t col_bytes = ((size_t)R * K * esz + 7) / 8 * 8;
    unsigned char *buf = m->tscratch[thread];
    int32_t *acc = j->shared ? j->shared + (size_t)p0 * Cout : (int32_t *)(buf + col_bytes);
    for (int g = 0; g < groups; g++) {
        int g0 = g * og > c0 ? g * og : c0, g1 = (g + 1) * og < c1 ? (g + 1) * og : c1;
        if (g0 >= g1) continue;
        for (int r = 0; r < rows; r++) {
            int oy = (p0 + r) / Wo, ox = (p0 + r) % Wo;
            int x0 = ox * stride - pad;
            if (groups == 1 && dil == 1 && x0 >= 0 && x0 + k <= W) {
                /* one group, the window inside the row: a window row is k * C contiguous values */
                for (int ky = 0; ky < k; ky++) {
                    int iy = oy * stride - pad + ky;
                    size_t base = (size_t)r * K + (size_t)ky * k * C;
                    int n = k * C;
                    if (iy < 0 || iy >= H) {
                        if (s16) { int16_t *dst = (int16_t *)buf + base; for (int c = 0; c < n; c++) dst[c] = (int16_t)pv; }
                        else { int32_t *dst = (int32_t *)buf + base; for (int c = 0; c < n; c++) dst[c] = pv; }
                        continue;
                    }
                    const int32_t *src = in + ((size_t)iy * W + x0) * C;
                    if (s16) { int16_t *dst = (int16_t *)buf + base; for (int c = 0; c < n; c++) dst[c] = (int16_t)src[c]; }
                    else memcpy((int32_t *)buf + base, src, sizeof(int32_t) * (size_t)n);
                }
                continue;
            }
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    int iy = oy * stride - pad + ky * dil, ix = ox * stride - pad + kx * dil;
                    size_t base = (size_t)r * K + (size_t)(ky * k + kx) * cg;
                    if (iy < 0 || iy >= H || ix < 0 || ix >= W) {
                        if (s16) { int16_t *dst = (int16_t *)buf + base; for (int c = 0; c < cg; c++) dst[c] = (int16_t)pv; }
                        else { int32_t *dst = (int32_t *)buf + base; for (int c = 0; c < cg; c++) dst[c] = pv; }
                        continue;
                    }
                    const int32_t *src = in + ((size_t)iy * W + ix) * C + (size_t)g * cg;
                    if (s16) { int16_t *dst = (int16_t *)buf + base; for (int c = 0; c < cg; c++) dst[c] = (int16_t)src[c]; }
                    else memcpy((int32_t *)buf + base, src, sizeof(int32_t) * (size_t)cg);
                }
        }
        if (s16)
            m->k->gemm_s16(rows, g1 - g0, K, (const int16_t *)buf, K, (const int16_t *)o->p[0].data + (size_t)g0 * K,
                           K, acc + g0, Cout);
        else
            gemm_s32(rows, g1 - g0, K, (const int32_t *)buf, K, (const int32_t *)o->p[0].data + (size_t)g0 * K, K,
                     acc + g0, Cout);
    }
    if (!j->shared) {
        activation_rows(m, o, acc, p0, rows);
        fused_rows(m, o, p0, p0 + rows);
    }
}

static int op_iconv(bnhw_model *m, const op_t *o)
{
    const int32_t *a = o->a;
    int k = a[A_K], kk = k * k, groups = a[A_GROUPS], cg = a[A_C] / groups;
    int Cout = a[A_COUT], pixels = a[A_HO] * a[A_WO];
    int K = kk * cg;
    size_t esz = a[A_USE_S16] ? sizeof(int16_t) : sizeof(int32_t);
    conv_job j = {m, o, {0, 0, 0, 0, 0}, NULL};
    j.sp = conv_split(m, (size_t)K * esz + (size_t)Cout * sizeof(int32_t), pixels, Cout,
                      (double)pixels * Cout / groups * K / 8);
    size_t bytes = ((size_t)j.sp.R * K * esz + 7) / 8 * 8;
    if (j.sp.S > 1) {
        j.shared = scratch(m, (size_t)pixels * Cout * sizeof(int32_t));
        if (!j.shared) { set_error("out of memory"); return -1; }
    } else {
        bytes += (size_t)j.sp.R * Cout * sizeof(int32_t);
    }
    if (thread_scratch(m, j.sp.threads, bytes)) return -1;
    pool_run(m, j.sp.chunks * j.sp.S, j.sp.threads, iconv_item, &j);
    if (j.shared)
        for (int c = 0; c < j.sp.chunks; c++) {
            int p0 = c * j.sp.R, rows = pixels - p0 < j.sp.R ? pixels - p0 : j.sp.R;
            activation_rows(m, o, j.shared + (size_t)p0 * Cout, p0, rows);
            fused_rows(m, o, p0, p0 + rows);
        }
    return 0;
}

/* Elementwise ops and pools over ranges of pixels: rows [p0, p1) of the output, each range on one
 * thread (par_rows), so an op's split, like a conv's, never changes a value. */
typedef struct {
    bnhw_model *m;
    const op_t *o;
    rows_fn fn;
    int n, chunk;
} rows_job;

static void rows_item(void *arg, int item, int thread)
{
    rows_job *j = arg;
    int p0 = item * j->chunk, p1 = p0 + j->chunk < j->n ? p0 + j->chunk : j->n;
    (void)thread;
    j->fn(j->m, j->o, p0, p1);
}

/* fn over rows [0, n), each row `row_work` element operations: in 4 ranges per thread on the pool
 * when the op has at least the split threshold's work, else in one call */
static void par_rows(bnhw_model *m, const op_t *o, int n, double row_work, rows_fn fn)
{
    if (m->threads <= 1 || n < 2 || (double)n * row_work < m->split_min) {
        fn(m, o, 0, n);
        return;
    }
    int items = m->threads * 4 < n ? m->threads * 4 : n;
    rows_job j = {m, o, fn, n, (n + items - 1) / items};
    pool_run(m, (n + j.chunk - 1) / j.chunk, m->threads, rows_item, &j);
}

VEC_CLONES static void thresh_rows(bnhw_model *m, const op_t *o, int p0, int p1)
{
    const tensor_t *x = &m->t[o->in[0]], *y = &m->t[o->out];
    int C = x->C;
    const int32_t *thr = o->p[0].data;
    if (o->a[A_OUT_MODE] == OUT_PACKED) {
        m->k->pack((const int32_t *)x->data + (size_t)p0 * C, p1 - p0, C, y->groups, thr,
                   (bnhw_word *)y->data + (size_t)p0 * y->wpp);
        return;
    }
    const int32_t *in = x->data;
    int32_t *out = y->data;
    int nt = o->a[A_NTHR];
    for (int p = p0; p < p1; p++)
        for (int c = 0; c < C; c++)
            out[(size_t)p * C + c] = (int32_t)((int64_t)o->a[A_OUT_SCALE] *
                                               count_le(thr + (size_t)c * nt, nt, in[(size_t)p * C + c]) + o->a[A_OUT_BIAS]);
}

static int op_thresh(bnhw_model *m, const op_t *o)
{
    const tensor_t *x = &m->t[o->in[0]];
    /* a multi-threshold output is a binary search per element (CNV-W1A1's 8-bit input: 255 levels) */
    int nt = o->a[A_OUT_MODE] == OUT_MULTI ? o->a[A_NTHR] : 1, probes = 1;
    while ((1 << probes) <= nt && probes < 31) probes++;
    par_rows(m, o, x->H * x->W, (double)x->C * probes, thresh_rows);
    return 0;
}

/* output pixels q in [q0, q1) (q = oy * Wo + ox) */
VEC_CLONES static void maxpool_rows(bnhw_model *m, const op_t *o, int q0, int q1)
{
    const tensor_t *x = &m->t[o->in[0]], *y = &m->t[o->out];
    int k = o->a[A_K];
    for (int q = q0; q < q1; q++) {
        int oy = q / y->W, ox = q % y->W;
        if (x->packed) {     /* max of +-1 values is -1 only when all are: AND of the sign bits */
            bnhw_word *dst = (bnhw_word *)y->data + (size_t)q * y->wpp;
            for (int w = 0; w < y->wpp; w++) dst[w] = ~(bnhw_word)0;
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    const bnhw_word *src = (const bnhw_word *)x->data +
                                           ((size_t)(oy * k + ky) * x->W + ox * k + kx) * x->wpp;
                    for (int w = 0; w < y->wpp; w++) dst[w] &= src[w];
                }
        } else {
            int32_t *dst = (int32_t *)y->data + (size_t)q * y->C;
            for (int c = 0; c < y->C; c++) {
                int32_t v = INT32_MIN;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        int32_t s = ((const int32_t *)x->data)[((size_t)(oy * k + ky) * x->W + ox * k + kx) * x->C + c];
                        if (s > v) v = s;
                    }
                dst[c] = v;
            }
        }
    }
}

static int op_maxpool(bnhw_model *m, const op_t *o)
{
    const tensor_t *y = &m->t[o->out];
    par_rows(m, o, y->H * y->W, (double)o->a[A_K] * o->a[A_K] * y->C, maxpool_rows);
    return 0;
}

/* the window sums in uint32 lanes, channel innermost (contiguous, vectorised): wrapping arithmetic,
 * so each output is the int64 sum modulo 2^32 -- the (int32_t) of the int64 sum, bit for bit */
VEC_CLONES static void avgpoolsum_rows(bnhw_model *m, const op_t *o, int q0, int q1)
{
    const tensor_t *x = &m->t[o->in[0]], *y = &m->t[o->out];
    int k = o->a[A_K], C = x->C;
    const int32_t *in = x->data;
    int32_t *out = y->data;
    for (int q = q0; q < q1; q++) {
        int oy = q / y->W, ox = q % y->W;
        uint32_t *dst = (uint32_t *)out + (size_t)q * C;
        if (k == 2) {       /* the 2x2 window: two rows of two adjacent pixels, 2C contiguous values each */
            const uint32_t *a = (const uint32_t *)in + ((size_t)oy * 2 * x->W + (size_t)ox * 2) * C, *b = a + (size_t)x->W * C;
            for (int c = 0; c < C; c++) dst[c] = a[c] + a[C + c] + b[c] + b[C + c];     /* wrapping, as below */
            continue;
        }
        for (int c = 0; c < C; c++) dst[c] = 0;
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const uint32_t *src = (const uint32_t *)in + ((size_t)(oy * k + ky) * x->W + ox * k + kx) * C;
                for (int c = 0; c < C; c++) dst[c] += src[c];
            }
    }
}

static int op_avgpoolsum(bnhw_model *m, const op_t *o)
{
    const tensor_t *y = &m->t[o->out];
    par_rows(m, o, y->H * y->W, (double)o->a[A_K] * o->a[A_K] * y->C, avgpoolsum_rows);
    return 0;
}

/* channel concatenation of two integer tensors: per pixel in0's channels, then in1's */
static int op_concat(bnhw_model *m, const op_t *o)
{
    const tensor_t *x = &m->t[o->in[0]], *x2 = &m->t[o->in[1]], *y = &m->t[o->out];
    const int32_t *a = x->data, *b = x2->data;
    int32_t *out = y->data;
    for (int64_t p = 0; p < (int64_t)y->H * y->W; p++) {
        memcpy(out + p * y->C, a + p * x->C, sizeof(int32_t) * (size_t)x->C);
        memcpy(out + p * y->C + x->C, b + p * x2->C, sizeof(int32_t) * (size_t)x2->C);
    }
    return 0;
}

/* k x k window pool with stride and padding (taps outside the image hold pad_value): out_mode 0 the maximum,
 * 1 round_half_even(window sum / counts[position]) (the IR's SWG + WindowMax / WindowAvg) */
static int op_wpool(bnhw_model *m, const op_t *o)
{
    const int32_t *a = o->a;
    const tensor_t *x = &m->t[o->in[0]], *y = &m->t[o->out];
    const int32_t *in = x->data, *counts = o->p[0].data;
    int32_t *out = y->data;
    int k = a[A_K], stride = a[A_STRIDE], pad = a[A_PAD], H = x->H, W = x->W, C = x->C, avg = a[A_OUT_MODE];
    int64_t pv = a[A_PAD_VALUE];
    for (int oy = 0; oy < y->H; oy++)
        for (int ox = 0; ox < y->W; ox++)
            for (int c = 0; c < C; c++) {
                int64_t r = 0;
                int first = 1;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                        int64_t v = (iy < 0 || iy >= H || ix < 0 || ix >= W) ? pv : in[((int64_t)iy * W + ix) * C + c];
                        if (avg) r += v;
                        else if (first || v > r) r = v;
                        first = 0;
                    }
                out[((int64_t)oy * y->W + ox) * C + c] = (int32_t)(avg ? rhe_div(r, counts[oy * y->W + ox]) : r);
            }
    return 0;
}

VEC_CLONES static int op_gap(bnhw_model *m, const op_t *o)
{
    const tensor_t *x = &m->t[o->in[0]], *y = &m->t[o->out];
    const int32_t *in = x->data;
    int32_t *out = y->data;
    int64_t n = (int64_t)x->H * x->W;
    for (int c = 0; c < x->C; c++) {
        int64_t s = 0;
        for (int64_t p = 0; p < n; p++) s += in[p * x->C + c];
        out[c] = (int32_t)rhe_div(s, n);
    }
    return 0;
}

/* output pixels [p0, p1) of a gather */
VEC_CLONES static void gather_rows(bnhw_model *m, const op_t *o, int p0, int p1)
{
    const tensor_t *x = &m->t[o->in[0]], *y = &m->t[o->out];
    const int32_t *idx = o->p[0].data, *in = x->data;
    int32_t *out = y->data;
    if (x->packed) {          /* move single bits between the two group layouts */
        int xcg = x->C / x->groups, xw = bnhw_words(xcg), ycg = y->C / y->groups, yw = bnhw_words(ycg);
        for (int64_t p = p0; p < p1; p++) {
            const bnhw_word *src = (const bnhw_word *)x->data + p * x->wpp;
            bnhw_word *dst = (bnhw_word *)y->data + p * y->wpp;
            memset(dst, 0, sizeof(bnhw_word) * (size_t)y->wpp);
            for (int c = 0; c < y->C; c++) {
                int s = idx[c], sg = s / xcg, si = s % xcg, dg = c / ycg, di = c % ycg;
                bnhw_word b = src[sg * xw + si / BNHW_WORD_BITS] >> (si % BNHW_WORD_BITS) & 1u;
                dst[dg * yw + di / BNHW_WORD_BITS] |= b << (di % BNHW_WORD_BITS);
            }
        }
        return;
    }
    /* run by run (see ew_plan): contiguous copies instead of an indexed load per channel; the run lengths
     * of nasbnn's channel-doubling shortcuts (6-48 channels) as fixed-size copies (a loop of unknown
     * length this short runs its scalar tail) */
    for (int64_t p = p0; p < p1; p++)
        for (int r = 0; r < o->nruns; r++) {
            const int32_t *src = in + p * x->C + o->rep[3 * r + 1];
            int32_t *dst = out + p * y->C + o->rep[3 * r];
            int len = o->rep[3 * r + 2];
            switch (len) {
            case 6: memcpy(dst, src, 6 * sizeof(int32_t)); break;
            case 12: memcpy(dst, src, 12 * sizeof(int32_t)); break;
            case 24: memcpy(dst, src, 24 * sizeof(int32_t)); break;
            default:
                for (int t = 0; t < len; t++) dst[t] = src[t];
            }
        }
}

static int op_gather(bnhw_model *m, const op_t *o)
{
    const tensor_t *y = &m->t[o->out];
    par_rows(m, o, y->H * y->W, y->C, gather_rows);
    return 0;
}

/* ---- the integer residual path in int32 lanes
 * ADDREQUANT and RPRELU are specified in int64 (addrequant_rows / rprelu_rows below: wrapping int64,
 * a round-half-even shift, a clip).  When every intermediate of a range of pixels provably fits int32
 * -- the parameters' largest magnitudes (at load) times the inputs' (a min / max pass over the range)
 * -- the same values come out of int32 arithmetic, which vectorises 8 (AVX2) / 4 (NEON) lanes wide
 * and has no per-element branch:
 *   floor(v / 2^s) for |v| < 2^31 as ((uint32)v + 2^31) >> s, minus 2^(31-s) (unsigned shifts only);
 *   round half even: add 2^(s-1) - 1 + (the floor's parity) before that shift (1 <= s <= 30).
 * The per-channel parameters are repeated over `lanes` elements (a multiple of C and 16), so the loop
 * runs over the range's contiguous elements with no channel index. */
static int64_t max_abs64(const int64_t *v, int n)
{
    uint64_t mx = 0;
    for (int i = 0; i < n; i++) {
        uint64_t a = v[i] < 0 ? 0 - (uint64_t)v[i] : (uint64_t)v[i];
        if (a > mx) mx = a;
    }
    return mx > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)mx;
}


static int ew_plan(op_t *o)
{
    if (o->opcode == OP_BCONV && bnhw_words(o->a[A_C] / o->a[A_GROUPS]) <= SMALL_DEPTH) {
        int groups = o->a[A_GROUPS], og = o->a[A_COUT] / groups;
        int K = o->a[A_K] * o->a[A_K] * bnhw_words(o->a[A_C] / groups);
        const bnhw_word *w = o->p[0].data;
        o->wt = malloc(sizeof(bnhw_word) * ((size_t)K * o->a[A_COUT] + 1));
        if (!o->wt) return -1;
        for (int g = 0; g < groups; g++)
            for (int k = 0; k < K; k++)
                for (int j = 0; j < og; j++)
                    o->wt[((size_t)g * K + k) * og + j] = w[((size_t)g * og + j) * K + k];
    }
    if (o->opcode == OP_GATHER) {
        /* the index as runs of consecutive source channels (a channel-doubling shortcut: two runs) */
        const int32_t *idx = o->p[0].data;
        int C = (int)o->p[0].count, n = 0;
        o->rep = malloc(sizeof(int32_t) * 3 * ((size_t)C + 1));
        if (!o->rep) return -1;
        for (int c = 0; c < C;) {
            int len = 1;
            while (c + len < C && idx[c + len] == idx[c] + len) len++;
            o->rep[3 * n] = c, o->rep[3 * n + 1] = idx[c], o->rep[3 * n + 2] = len;
            n++;
            c += len;
        }
        o->nruns = n;
        return 0;
    }
    if (o->opcode == OP_BCONV && o->a[A_PAD] && o->a[A_PAD_VALUE] == 0) {
        /* zero padding: the weights' popcount per tap, tap-major ([kk][Cout]) for the border correction */
        /* then (k <= 8) the sums of each window row and column, rows [kk + ky] and [kk + k + kx]: a border
         * pixel's padded taps are whole rows and columns of its window, less the taps in both (wrapping
         * uint32 sums, as the correction itself) */
        int k = o->a[A_K], kk = k * k, C = o->a[A_COUT];
        const int32_t *wpop = o->p[1].data;
        o->rep = malloc(sizeof(int32_t) * ((size_t)(kk + 2 * k) * C + 1));
        if (!o->rep) return -1;
        for (int q = 0; q < kk; q++)
            for (int c = 0; c < C; c++) o->rep[(size_t)q * C + c] = wpop[(size_t)c * kk + q];
        if (k <= 8) {
            uint32_t *rs = (uint32_t *)o->rep + (size_t)kk * C, *cs = rs + (size_t)k * C;
            memset(rs, 0, sizeof(uint32_t) * 2 * (size_t)k * C);
            for (int q = 0; q < kk; q++)
                for (int c = 0; c < C; c++) {
                    rs[(size_t)(q / k) * C + c] += (uint32_t)o->rep[(size_t)q * C + c];
                    cs[(size_t)(q % k) * C + c] += (uint32_t)o->rep[(size_t)q * C + c];
                }
            o->edge_sums = 1;
        }
        return 0;
    }
    int np = o->opcode == OP_ADDREQUANT ? 2 : o->opcode == OP_RPRELU ? 3 : 0;
    if (!np) return 0;
    int C = (int)o->p[0].count, s = o->a[A_SHIFT];     /* A_FRAC == A_SHIFT */
    for (int j = 0; j < np; j++) o->pmax[j] = max_abs64(o->p[j].data, C);
    o->lanes32 = 0;
    if (s < 1 || s > 30 || C <= 0) return 0;
    for (int j = 0; j < np; j++)
        if (o->pmax[j] > ((int64_t)1 << 30)) return 0;
    if (o->opcode == OP_ADDREQUANT && o->a[A_SSHIFT] > 30) return 0;
    int L = C;
    while (L % 16 || L < 64) L += C;
    o->rep = malloc(sizeof(int32_t) * (size_t)L * (size_t)np);
    if (!o->rep) return -1;
    for (int j = 0; j < np; j++)
        for (int i = 0; i < L; i++) o->rep[(size_t)j * L + i] = (int32_t)((const int64_t *)o->p[j].data)[i % C];
    /* RPRELU: S_out * 2^frac, the product rprelu32 adds (wrapped: when it does not fit, neither does the
     * range's bound, and the int64 loop runs instead) */
    if (o->opcode == OP_RPRELU)
        for (int i = 0; i < L; i++)
            o->rep[2 * (size_t)L + i] = (int32_t)(uint32_t)((uint64_t)((const int64_t *)o->p[2].data)[i % C] << s);
    o->lanes32 = L;
    return 0;
}

/* the largest |x[i]| over n elements (a vectorised min / max) */
VEC_CLONES static int64_t max_abs32(const int32_t *x, int64_t n)
{
    int32_t lo = 0, hi = 0;
    for (int64_t i = 0; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    return -(int64_t)lo > hi ? -(int64_t)lo : hi;
}

/* round_half_even(v / 2^s) for |v| + 2^s < 2^31, 1 <= s <= 30 (see above) */
static inline int32_t rhe32(int32_t v, int s)
{
    uint32_t u = (uint32_t)v + 0x80000000u;
    u += ((uint32_t)1 << (s - 1)) - 1u + ((u >> s) & 1u);
    return (int32_t)(u >> s) - ((int32_t)1 << (31 - s));
}

static inline int32_t clip32(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* elements [e0, e0 + n) of an ADDREQUANT in int32 lanes; sc may be NULL */
VEC_CLONES static void addrequant32(const op_t *o, const int32_t *in, const int32_t *sc, int32_t *out, int64_t e0,
                                    int64_t n)
{
    int L = o->lanes32, s = o->a[A_SHIFT], ss = o->a[A_SSHIFT];
    int32_t lo = o->a[A_LO], hi = o->a[A_HI];
    const int32_t *A = o->rep, *B = o->rep + L;
    int j = (int)(e0 % L);
    for (int64_t i = 0; i < n;) {
        int len = (int)(n - i < L - j ? n - i : L - j);
        const int32_t *x = in + e0 + i, *Aj = A + j, *Bj = B + j;
        int32_t *y = out + e0 + i;
        if (sc) {
            const int32_t *z = sc + e0 + i;
            /* z * 2^ss as a shift (the same bits: the bound keeps it in range) */
            for (int t = 0; t < len; t++)
                y[t] = clip32(rhe32(x[t] * Aj[t] + Bj[t] + (int32_t)((uint32_t)z[t] << ss), s), lo, hi);
        } else {
            for (int t = 0; t < len; t++) y[t] = clip32(rhe32(x[t] * Aj[t] + Bj[t], s), lo, hi);
        }
        i += len;
        j = 0;
    }
}

/* elements [e0, e0 + n) of an RPRELU in int32 lanes */
VEC_CLONES static void rprelu32(const op_t *o, const int32_t *in, int32_t *out, int64_t e0, int64_t n)
{
    int L = o->lanes32, s = o->a[A_FRAC];
    int32_t f = (int32_t)1 << s, lo = o->a[A_LO], hi = o->a[A_HI];
    const int32_t *Si = o->rep, *Sl = o->rep + L, *So = o->rep + 2 * (size_t)L;    /* So: S_out * 2^frac (ew_plan) */
    int j = (int)(e0 % L);
    for (int64_t i = 0; i < n;) {
        int len = (int)(n - i < L - j ? n - i : L - j);
        const int32_t *x = in + e0 + i, *a = Si + j, *b = Sl + j, *c = So + j;
        int32_t *y = out + e0 + i;
        for (int t = 0; t < len; t++) {
            int32_t v = x[t] - a[t], slope = b[t];    /* loaded unconditionally: a select, not a branch */
            v = v * (v >= 0 ? f : slope) + c[t];
            y[t] = clip32(rhe32(v, s), lo, hi);
        }
        i += len;
        j = 0;
    }
}

/* the int32 lanes are exact for these elements when bound (|intermediate| + 2^s, computed from the
 * largest magnitudes) stays below 2^31 */
static int fits32(int64_t bound) { return bound >= 0 && bound <= INT32_MAX; }

VEC_CLONES static void addrequant_rows(bnhw_model *m, const op_t *o, int p0, int p1)
{
    const tensor_t *x = &m->t[o->in[0]], *y = &m->t[o->out];
    const int32_t *in = x->data, *sc = o->n_in == 2 ? m->t[o->in[1]].data : NULL;
    const int64_t *A = o->p[0].data, *B = o->p[1].data;
    int32_t *out = y->data;
    int shift = o->a[A_SHIFT], ss = o->a[A_SSHIFT], C = x->C;
    if (o->lanes32) {
        int64_t e0 = (int64_t)p0 * C, n = (int64_t)(p1 - p0) * C;
        /* every factor <= 2^31 (inputs) or 2^30 (parameters, shifts): no int64 overflow */
        int64_t bx = m->tbound[o->in[0]], bs = sc ? m->tbound[o->in[1]] : 0;
        int64_t bound = (bx >= 0 ? bx : max_abs32(in + e0, n)) * o->pmax[0] + o->pmax[1] + ((int64_t)1 << shift);
        if (sc) bound += (bs >= 0 ? bs : max_abs32(sc + e0, n)) << ss;
        if (fits32(bound)) {
            addrequant32(o, in, sc, out, e0, n);
            return;
        }
    }
    for (int64_t p = p0; p < p1; p++)
        for (int c = 0; c < C; c++) {
            int64_t i = p * C + c, v = wadd(wmul(in[i], A[c]), B[c]);
            if (sc) v = wadd(v, wmul(sc[i], (int64_t)1 << ss));
            out[i] = clip(rhe_shift(v, shift), o->a[A_LO], o->a[A_HI]);
        }
}

static int op_addrequant(bnhw_model *m, const op_t *o)
{
    const tensor_t *x = &m->t[o->in[0]];
    par_rows(m, o, x->H * x->W, x->C, addrequant_rows);
    return 0;
}

VEC_CLONES static void rprelu_rows(bnhw_model *m, const op_t *o, int p0, int p1)
{
    const tensor_t *x = &m->t[o->in[0]], *y = &m->t[o->out];
    const int32_t *in = x->data;
    const int64_t *S_in = o->p[0].data, *slope = o->p[1].data, *S_out = o->p[2].data;
    int32_t *out = y->data;
    int frac = o->a[A_FRAC], C = x->C;
    if (o->lanes32) {
        int64_t e0 = (int64_t)p0 * C, n = (int64_t)(p1 - p0) * C, f = (int64_t)1 << frac;
        int64_t bx = m->tbound[o->in[0]];
        int64_t bound = ((bx >= 0 ? bx : max_abs32(in + e0, n)) + o->pmax[0]) * (o->pmax[1] > f ? o->pmax[1] : f) +
                        (o->pmax[2] + 1) * f;
        if (fits32(bound)) {
            rprelu32(o, in, out, e0, n);
            return;
        }
    }
    for (int64_t p = p0; p < p1; p++)
        for (int c = 0; c < C; c++) {
            int64_t i = p * C + c, v = wadd(in[i], wmul(S_in[c], -1));
            v = v >= 0 ? wmul(v, (int64_t)1 << frac) : wmul(v, slope[c]);
            v = wadd(v, wmul(S_out[c], (int64_t)1 << frac));
            out[i] = clip(rhe_shift(v, frac), o->a[A_LO], o->a[A_HI]);
        }
}

static void unpack_rows(bnhw_model *m, const op_t *o, int p0, int p1)
{
    unpack_range(&m->t[o->in[0]], m->t[o->out].data, p0, p1);
}

static int op_rprelu(bnhw_model *m, const op_t *o)
{
    const tensor_t *x = &m->t[o->in[0]];
    par_rows(m, o, x->H * x->W, x->C, rprelu_rows);
    return 0;
}

VEC_CLONES static int op_labelselect(bnhw_model *m, const op_t *o)
{
    const tensor_t *x = &m->t[o->in[0]];
    const int32_t *in = x->data;
    int64_t n = (int64_t)x->H * x->W * x->C, best = 0;
    for (int64_t i = 1; i < n; i++)
        if (in[i] > in[best]) best = i;
    ((int32_t *)m->t[o->out].data)[0] = (int32_t)best;
    return 0;
}

static rows_fn rows_fn_of(int opcode)
{
    switch (opcode) {
    case OP_THRESH: return thresh_rows;
    case OP_MAXPOOL: return maxpool_rows;
    case OP_AVGPOOLSUM: return avgpoolsum_rows;
    case OP_GATHER: return gather_rows;
    case OP_ADDREQUANT: return addrequant_rows;
    case OP_RPRELU: return rprelu_rows;
    case OP_UNPACK: return unpack_rows;
    default: return NULL;
    }
}

/* At load: the ops each conv takes into its pass (see "fused epilogues").  Op i + q joins conv i when
 * every op between them has joined, it works output pixel by output pixel over a tensor of the conv's
 * Ho x Wo, it writes no tensor the conv or an earlier member reads, and a pool among them reads no
 * tensor the conv or the chain writes (a pool's output pixel reads several input pixels). */
static void fuse_plan(bnhw_model *m)
{
    for (int i = 0; i < m->n_ops; i++) {
        op_t *o = &m->ops[i];
        if (o->opcode != OP_BCONV && o->opcode != OP_ICONV) continue;
        const tensor_t *y = &m->t[o->out];
        int n = 0;
        for (int q = i + 1; q < m->n_ops; q++) {
            const op_t *f = &m->ops[q];
            const tensor_t *fy = &m->t[f->out];
            if (!rows_fn_of(f->opcode) || fy->H != y->H || fy->W != y->W || f->out == o->in[0]) break;
            /* it writes nothing an earlier member reads (a valid program never does: only a corrupt
             * file could make two threads meet in one tensor) */
            int read_before = 0;
            for (int r = i + 1; r < q; r++)
                read_before |= m->ops[r].in[0] == f->out || (m->ops[r].n_in > 1 && m->ops[r].in[1] == f->out);
            if (read_before) break;
            if (f->opcode == OP_MAXPOOL || f->opcode == OP_AVGPOOLSUM) {
                int made_here = f->in[0] == o->out;
                for (int r = i + 1; r < q; r++) made_here |= f->in[0] == m->ops[r].out;
                if (made_here) break;
            } else if (m->t[f->in[0]].H != y->H || m->t[f->in[0]].W != y->W) {
                break;
            }
            n++;
        }
        o->nfuse = n;
        for (int q = 1; q <= n; q++) m->ops[i + q].fused = 1;
        i += n;
    }
}

/* At load: a bound on |value| of every int32 tensor over any run, from the ops' parameters alone, so
 * the residual path's int32-lane check (addrequant_rows / rprelu_rows) needs no min / max pass over
 * its inputs where the bound is known.  The model's input is unknown (-1); a tensor no op writes is 0
 * (zeroed at load); otherwise the largest over its writers, unknown when a writer reads a tensor that
 * an op at or after it writes (only a corrupt file does) or when the bound passes 2^30:
 *   BCONV accumulators  acc = n_valid * cg - 2 (P - S): |acc| <= kk cg + 2 (64 K + max_c S_c), S_c the
 *                       sum of channel c's weight popcounts (whatever the file says they are)
 *   thresholds          |out_scale| n_thr + |out_bias|;  ADDREQUANT / RPRELU: max(|lo|, |hi|)
 *   GATHER, MAXPOOL     their input's;  AVGPOOLSUM: k^2 times its input's;  UNPACK: 1;  others unknown */
static int bounds_plan(bnhw_model *m)
{
    const int64_t LIM = (int64_t)1 << 30;
    int *last = malloc(sizeof(int) * (size_t)m->n_tensors);
    m->tbound = calloc((size_t)m->n_tensors, sizeof *m->tbound);
    if (!last || !m->tbound) { free(last); return -1; }
    for (int t = 0; t < m->n_tensors; t++) last[t] = -1;
    for (int i = 0; i < m->n_ops; i++) last[m->ops[i].out] = i;
    m->tbound[m->input] = -1;
    for (int i = 0; i < m->n_ops; i++) {
        const op_t *o = &m->ops[i];
        const int32_t *a = o->a;
        int64_t bin = m->tbound[o->in[0]], b = -1;
        if (last[o->in[0]] >= i) bin = -1;
        switch (o->opcode) {
        case OP_BCONV:
        case OP_ICONV:
            if (a[A_OUT_MODE] != OUT_ACC) {
                b = (int64_t)(a[A_OUT_SCALE] < 0 ? -(int64_t)a[A_OUT_SCALE] : a[A_OUT_SCALE]) * a[A_NTHR] +
                    (a[A_OUT_BIAS] < 0 ? -(int64_t)a[A_OUT_BIAS] : a[A_OUT_BIAS]);
            } else if (o->opcode == OP_BCONV) {
                int kk = a[A_K] * a[A_K], cg = a[A_C] / a[A_GROUPS];
                const int32_t *wpop = o->p[1].data;
                int64_t smax = 0;
                for (int c = 0; c < a[A_COUT]; c++) {
                    int64_t sc = 0;
                    for (int q = 0; q < kk; q++) sc += wpop[(size_t)c * kk + q] < 0 ? -(int64_t)wpop[(size_t)c * kk + q]
                                                                                 : wpop[(size_t)c * kk + q];
                    if (sc > smax) smax = sc;
                }
                b = (int64_t)kk * cg + 2 * ((int64_t)64 * kk * bnhw_words(cg) + smax);
            }
            break;
        case OP_THRESH:
            b = a[A_OUT_MODE] == OUT_PACKED ? 1 : (int64_t)(a[A_OUT_SCALE] < 0 ? -(int64_t)a[A_OUT_SCALE] : a[A_OUT_SCALE]) *
                a[A_NTHR] + (a[A_OUT_BIAS] < 0 ? -(int64_t)a[A_OUT_BIAS] : a[A_OUT_BIAS]);
            break;
        case OP_ADDREQUANT:
        case OP_RPRELU: {
            int64_t lo = a[A_LO] < 0 ? -(int64_t)a[A_LO] : a[A_LO], hi = a[A_HI] < 0 ? -(int64_t)a[A_HI] : a[A_HI];
            b = lo > hi ? lo : hi;
            break;
        }
        case OP_GATHER: case OP_MAXPOOL: b = bin; break;
        case OP_AVGPOOLSUM: b = bin < 0 || a[A_K] > 1024 ? -1 : bin * a[A_K] * a[A_K]; break;
        case OP_UNPACK: b = 1; break;
        default: b = -1;
        }
        if (b < 0 || b > LIM) b = -1;
        int64_t *t = &m->tbound[o->out];
        if (o->out != m->input) *t = (*t < 0 || b < 0) ? -1 : (*t > b ? *t : b);
    }
    free(last);
    return 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int bnhw_model_run(bnhw_model *m, const int32_t *input, int32_t *output)
{
    if (pool_start(m)) return -1;
    tensor_t *x = &m->t[m->input];
    memcpy(x->data, input, tensor_bytes(x));
    for (int i = 0; i < m->n_ops; i++) {
        op_t *o = &m->ops[i];
        if (o->fused && m->fuse) {     /* ran in its conv's pass: its time is the conv's */
            o->seconds = 0;
            continue;
        }
        double t0 = now();
        int rc;
        switch (o->opcode) {
        case OP_BCONV: rc = op_bconv(m, o); break;
        case OP_ICONV: rc = op_iconv(m, o); break;
        case OP_THRESH: rc = op_thresh(m, o); break;
        case OP_MAXPOOL: rc = op_maxpool(m, o); break;
        case OP_AVGPOOLSUM: rc = op_avgpoolsum(m, o); break;
        case OP_GAP: rc = op_gap(m, o); break;
        case OP_GATHER: rc = op_gather(m, o); break;
        case OP_ADDREQUANT: rc = op_addrequant(m, o); break;
        case OP_RPRELU: rc = op_rprelu(m, o); break;
        case OP_LABELSELECT: rc = op_labelselect(m, o); break;
        case OP_CONCAT: rc = op_concat(m, o); break;
        case OP_WPOOL: rc = op_wpool(m, o); break;
        case OP_UNPACK: par_rows(m, o, m->t[o->out].H * m->t[o->out].W, m->t[o->out].C, unpack_rows); rc = 0; break;
        default: set_error("unknown opcode"); rc = -1;
        }
        o->seconds = now() - t0;
        if (rc) return rc;
    }
    if (output) return bnhw_model_tensor(m, m->output, output);
    return 0;
}
