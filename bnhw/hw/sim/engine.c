/* bnhw cycle-level dataflow simulator core (see bnhw/hw/sim/netlist.py for the unit model).
 *
 * The field indices U_* / P_* / S_* are prepended by engine.py (one table in Python).
 *
 * One call of sim_run() simulates `frames` frames through the netlist, cycle by cycle.  Every
 * cycle each unit looks at the FIFO state *at the start of the cycle* (a token written this
 * cycle is not readable yet; a slot freed this cycle is not writable yet), so the result does not
 * depend on the order units are visited in.  With `functional` the FIFOs carry the data and the
 * loop units compute it (int32 elements, int64 arithmetic).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int64_t i64;
typedef int32_t i32;

enum { K_LOOP = 0, K_ROUTER = 1, K_SOURCE = 2, K_SINK = 3 };
enum { OP_MVAU = 1, OP_VVAU, OP_THRESH, OP_POOLMAX, OP_POOLSUM, OP_GAP, OP_DUP, OP_ADDREQ, OP_RPRELU,
       OP_LABEL, OP_CONCAT, OP_POOLAVG };

typedef struct {
    i64 depth, width, head, tail, last_w, last_r, max_occ, ring;
    i32 *data;
} Fifo;

typedef struct {
    const i64 *h;          /* header */
    void *const *p;        /* pointers */
    i64 *st;               /* stats */
    i64 pos, total;                /* loop: next position, positions in all frames */
    i64 qhead, qtail, *qready, *qpos;   /* loop: pipeline queue of computed output words */
    i64 nread, nwritten;           /* router / source / sink counters */
    i64 last_read_cycle, last_write_cycle;
    i64 *acc;
    i32 *inbuf, *dline, *ring;
    i64 best, besti;               /* LabelSelect */
    int timer;                     /* loop: a computed word becomes writable later: stay awake */
} Unit;

static inline int can_read(const Fifo *f, i64 cyc) {
    return (f->tail - (f->last_w == cyc)) - f->head >= 1;
}
static inline int can_write(const Fifo *f, i64 cyc) {
    return (f->tail - f->head) + (f->last_r == cyc) < f->depth;
}
static inline i32 *fifo_pop(Fifo *f, i64 cyc) {
    i32 *d = f->data ? f->data + (f->head % f->ring) * f->width : NULL;
    f->head++;
    f->last_r = cyc;
    return d;
}
static inline i32 *fifo_push(Fifo *f, i64 cyc) {
    i64 occ = (f->tail - f->head) + (f->last_r == cyc) + 1;
    if (occ > f->max_occ) f->max_occ = occ;
    i32 *d = f->data ? f->data + (f->tail % f->ring) * f->width : NULL;
    f->tail++;
    f->last_w = cyc;
    return d;
}

static inline i64 rhe_shift(i64 num, i64 shift) {
    if (shift <= 0) return num << (-shift);
    i64 den = (i64)1 << shift;
    i64 q = num >= 0 ? num / den : -((-num + den - 1) / den);   /* floor */
    i64 r = num - q * den;
    i64 twice = 2 * r;
    if (twice > den || (twice == den && (q & 1))) q++;
    return q;
}
static inline i64 rhe_div(i64 num, i64 den) {
    i64 q = num >= 0 ? num / den : -((-num + den - 1) / den);
    i64 r = num - q * den;
    i64 twice = 2 * r;
    if (twice > den || (twice == den && (q & 1))) q++;
    return q;
}
static inline i64 clip(i64 v, i64 lo, i64 hi) { return v < lo ? lo : (v > hi ? hi : v); }

static inline i64 activate(const i64 *h, const i64 *T, i64 row, i64 acc) {
    i64 nt = h[U_nthr];
    if (!T || nt == 0) return acc;
    const i64 *t = T + row * nt;
    i64 cnt = 0;
    for (i64 i = 0; i < nt; i++) cnt += acc >= t[i];
    return h[U_out_scale] * cnt + h[U_out_bias];
}

/* compute position `q` (frame-local) of a loop unit: `in[p]` are the words read (or NULL),
 * the output word (if any) goes to `o` */
static void loop_compute(Unit *u, i64 q, i32 *const *in, i32 *o) {
    const i64 *h = u->h;
    const i64 PE = h[U_PE];
    switch (h[U_op]) {
    case OP_MVAU: {
        const i64 SIMD = h[U_SIMD], SFG = h[U_SFG], NFG = h[U_NFG], G = h[U_G], MWg = h[U_MWg];
        const i64 *W = (const i64 *)u->p[P_W];
        const i64 *T = (const i64 *)u->p[P_T];
        i64 sf = q % SFG, r = q / SFG;
        i64 nfg = r % NFG; r /= NFG;
        i64 g = r % G;
        i32 *buf = u->inbuf + (g * SFG + sf) * SIMD;
        if (in[0]) memcpy(buf, in[0], SIMD * sizeof(i32));
        for (i64 pe = 0; pe < PE; pe++) {
            i64 row = g * h[U_OG] + nfg * PE + pe;
            const i64 *w = W + row * MWg + sf * SIMD;
            i64 s = 0;
            for (i64 k = 0; k < SIMD; k++) s += w[k] * buf[k];
            u->acc[pe] = (sf == 0 ? 0 : u->acc[pe]) + s;
            if (o) o[pe] = (i32)activate(h, T, row, u->acc[pe]);
        }
        break;
    }
    case OP_VVAU: {
        const i64 SIMD = h[U_SIMD], TC = h[U_TC], CF = h[U_CF], KK = h[U_KK];
        const i64 *W = (const i64 *)u->p[P_W];
        const i64 *T = (const i64 *)u->p[P_T];
        i64 tc = q % TC, cf = (q / TC) % CF;
        for (i64 pe = 0; pe < PE; pe++) {
            i64 ch = cf * PE + pe, s = 0;
            for (i64 k = 0; k < SIMD; k++) s += W[ch * KK + tc * SIMD + k] * in[0][k * PE + pe];
            u->acc[pe] = (tc == 0 ? 0 : u->acc[pe]) + s;
            if (o) o[pe] = (i32)activate(h, T, ch, u->acc[pe]);
        }
        break;
    }
    case OP_THRESH: {
        const i64 *T = (const i64 *)u->p[P_T];
        i64 cf = q % (h[U_C] / PE);
        for (i64 pe = 0; pe < PE; pe++) o[pe] = (i32)activate(h, T, cf * PE + pe, in[0][pe]);
        break;
    }
    case OP_POOLMAX:
    case OP_POOLSUM: {
        i64 tap = q % h[U_KK];
        for (i64 pe = 0; pe < PE; pe++) {
            i64 v = in[0][pe];
            if (tap == 0) u->acc[pe] = v;
            else if (h[U_op] == OP_POOLMAX) u->acc[pe] = v > u->acc[pe] ? v : u->acc[pe];
            else u->acc[pe] += v;
            if (o) o[pe] = (i32)u->acc[pe];
        }
        break;
    }
    case OP_POOLAVG: {            /* window sum, then round_half_even(sum / in-image taps of the position) */
        const i64 *N = (const i64 *)u->p[P_counts];
        i64 tap = q % h[U_KK], pix = q / (h[U_KK] * (h[U_C] / PE));
        for (i64 pe = 0; pe < PE; pe++) {
            u->acc[pe] = (tap == 0 ? 0 : u->acc[pe]) + in[0][pe];
            if (o) o[pe] = (i32)rhe_div(u->acc[pe], N[pix]);
        }
        break;
    }
    case OP_CONCAT:               /* copy the word of whichever input this position reads */
        for (int i = 0; i < 3; i++)
            if (in[i]) memcpy(o, in[i], PE * sizeof(i32));
        break;
    case OP_GAP: {
        i64 CF = h[U_C] / PE, P = h[U_pixels];
        if (q < P * CF) {
            i64 cf = q % CF;
            for (i64 pe = 0; pe < PE; pe++)
                u->acc[cf * PE + pe] = (q < CF ? 0 : u->acc[cf * PE + pe]) + in[0][pe];
        } else {
            i64 cf = q - P * CF;
            for (i64 pe = 0; pe < PE; pe++) o[pe] = (i32)rhe_div(u->acc[cf * PE + pe], P);
        }
        break;
    }
    case OP_DUP:
        memcpy(o, in[0], PE * sizeof(i32));
        break;
    case OP_ADDREQ: {
        const i64 *A = (const i64 *)u->p[P_A], *B = (const i64 *)u->p[P_B];
        i64 cf = q % (h[U_C] / PE);
        for (i64 pe = 0; pe < PE; pe++) {
            i64 c = cf * PE + pe;
            i64 acc = (i64)in[0][pe] * A[c] + B[c];
            if (h[U_ninputs] > 1) acc += (i64)in[1][pe] << h[U_sc_shift];
            o[pe] = (i32)clip(rhe_shift(acc, h[U_shift]), h[U_lo], h[U_hi]);
        }
        break;
    }
    case OP_RPRELU: {
        const i64 *Si = (const i64 *)u->p[P_S_in], *Sl = (const i64 *)u->p[P_slope];
        const i64 *So = (const i64 *)u->p[P_S_out];
        i64 cf = q % (h[U_C] / PE), frac = h[U_frac];
        for (i64 pe = 0; pe < PE; pe++) {
            i64 c = cf * PE + pe;
            i64 y = (i64)in[0][pe] - Si[c];
            y = y >= 0 ? (y << frac) : y * Sl[c];
            y += So[c] << frac;
            o[pe] = (i32)clip(rhe_shift(y, frac), h[U_lo], h[U_hi]);
        }
        break;
    }
    case OP_LABEL: {
        i64 base = q * PE;
        if (base == 0) { u->best = 0; u->besti = -1; }
        for (i64 pe = 0; pe < PE; pe++) {
            if (u->besti < 0 || in[0][pe] > u->best) { u->best = in[0][pe]; u->besti = base + pe; }
        }
        if (o) o[0] = (i32)u->besti;
        break;
    }
    }
}

enum { ST_BUSY = 0, ST_STARVED = 1, ST_STALLED = 2, ST_IDLE = 3, ST_WAIT = 4,
       ST_DRAIN = 5 /* wrote a finished word but could not issue (starved): counted as starved */ };

/* one cycle of a loop unit; returns 1 if it did anything.  The pipeline is modelled as a queue of
 * up to L+1 computed output words, each writable L cycles after its position read its inputs (a
 * flushing pipeline: finished words drain while the loop waits for input).  A blocked write stalls
 * the loop (blocking stream writes). */
static int loop_step(Unit *u, Fifo *F, i64 cyc, int functional) {
    const i64 *h = u->h;
    const i64 S = h[U_positions], L = h[U_latency], Q = L + 1;
    const uint8_t *flags = (const uint8_t *)u->p[P_flags];
    const i64 nin = h[U_nin], nout = h[U_nout], ow = h[U_out_width];
    int did = 0;
    u->timer = 0;
    /* drain the oldest finished word */
    if (u->qhead < u->qtail) {
        i64 slot = u->qhead % Q;
        if (u->qready[slot] <= cyc) {
            i64 wp = u->qpos[slot];
            int wf = flags[wp % S] >> 4;
            for (i64 j = 0; j < nout; j++)
                if ((wf >> j) & 1 && !can_write(&F[h[U_out0 + j]], cyc)) return ST_STALLED;
            for (i64 j = 0; j < nout; j++)
                if ((wf >> j) & 1) {
                    i32 *d = fifo_push(&F[h[U_out0 + j]], cyc);
                    if (d) memcpy(d, u->dline + slot * ow, ow * sizeof(i32));
                }
            u->qhead++;
            u->st[S_writes]++;
            if (u->st[S_first_write] < 0) u->st[S_first_write] = cyc;
            u->st[S_last_write] = cyc;
            if (wp < S) u->st[S_frame0_last_write] = cyc;
            did = 1;
        } else {
            u->timer = 1;   /* a word is in flight in the pipeline: wake up by time, not by a FIFO */
        }
    }
    /* issue the next position */
    if (u->pos < u->total && u->qtail - u->qhead < Q) {
        const i64 rp = u->pos;
        const int rf = flags[rp % S] & 15, writes = (flags[rp % S] >> 4) != 0;
        for (i64 i = 0; i < nin; i++)
            if ((rf >> i) & 1 && !can_read(&F[h[U_in0 + i]], cyc)) {
                return did ? ST_DRAIN : ST_STARVED;
            }
        i32 *in[3] = {NULL, NULL, NULL};
        for (i64 i = 0; i < nin; i++)
            if ((rf >> i) & 1) {
                in[i] = fifo_pop(&F[h[U_in0 + i]], cyc);
                u->st[S_reads]++;
                if (u->st[S_first_read] < 0) u->st[S_first_read] = cyc;
            }
        i32 *o = NULL;
        if (writes) {
            i64 slot = u->qtail % Q;
            u->qready[slot] = cyc + L;
            u->qpos[slot] = rp;
            u->qtail++;
            o = u->dline + slot * ow;
        }
        if (functional) loop_compute(u, rp % S, in, o);
        u->pos++;
        did = 1;
    }
    if (did) return ST_BUSY;
    if (u->pos >= u->total) return u->qhead == u->qtail ? ST_IDLE : ST_WAIT;
    return u->qtail - u->qhead >= Q ? ST_WAIT : ST_STARVED;
}

static int router_step(Unit *u, Fifo *F, i64 cyc, i64 frames, int functional) {
    const i64 *h = u->h;
    const i64 IW = h[U_in_words], OW = h[U_out_words], cap = h[U_cap];
    const i32 *need = (const i32 *)u->p[P_need], *oldest = (const i32 *)u->p[P_oldest];
    const i64 *route = (const i64 *)u->p[P_route];
    Fifo *fi = &F[h[U_in0]], *fo = &F[h[U_out0]];
    const i64 iw = h[U_in_width], ow = h[U_out_width];
    int did = 0, wrote = 0, blocked_in = 0, blocked_out = 0;
    i64 reads_before = u->nread;           /* the reader has not run yet this cycle */
    /* writer */
    if (u->nwritten < frames * OW) {
        i64 f = u->nwritten / OW, j = u->nwritten % OW;
        if (reads_before >= f * IW + need[j]) {
            if (can_write(fo, cyc)) {
                i32 *d = fifo_push(fo, cyc);
                if (d && functional) {
                    const i64 *r = route + j * ow;
                    for (i64 e = 0; e < ow; e++) {
                        i64 s = r[e];
                        if (s < 0) { d[e] = (i32)h[U_pad]; continue; }
                        i64 word = f * IW + s / iw;
                        d[e] = u->ring[(word % cap) * iw + s % iw];
                    }
                }
                u->nwritten++;
                wrote = 1;
                did = 1;
                u->st[S_writes]++;
                if (u->st[S_first_write] < 0) u->st[S_first_write] = cyc;
                u->st[S_last_write] = cyc;
                if (f == 0) u->st[S_frame0_last_write] = cyc;
            } else blocked_out = 1;
        } else blocked_in = 1;
    }
    /* reader: may overwrite the slot of word i - cap only if no output from w on needs it */
    if (u->nread < frames * IW) {
        i64 w = u->nwritten - wrote;
        i64 lim = w >= frames * OW ? INT64_MAX / 2 : (w / OW) * IW + oldest[w % OW] + cap;
        if (u->nread < lim && can_read(fi, cyc)) {
            i32 *src = fifo_pop(fi, cyc);
            if (functional && src) memcpy(u->ring + (u->nread % cap) * iw, src, iw * sizeof(i32));
            u->nread++;
            did = 1;
            u->st[S_reads]++;
            if (u->st[S_first_read] < 0) u->st[S_first_read] = cyc;
        }
    }
    if (did) return ST_BUSY;
    if (blocked_out) return ST_STALLED;
    if (blocked_in) return ST_STARVED;
    return u->nread >= frames * IW ? ST_IDLE : ST_STARVED;
}

/* hdr: nunits x U_FIELDS; ptrs: nunits x P_FIELDS; fhdr: nfifo x 2 (depth, width); returns the
 * cycle count, or -1 on a deadlock (no unit could move), -2 when max_cycles ran out.
 * stats: nunits x S_FIELDS (out); fstats: nfifo (max occupancy, out); frame_done: frames (out). */
i64 sim_run(i64 nunits, const i64 *hdr, void *const *ptrs, i64 nfifo, const i64 *fhdr, i64 frames,
            int functional, i64 max_cycles, i64 *stats, i64 *fstats, i64 *frame_done,
            const i32 *input, i32 *output, i64 *deadlock_cycle) {
    Fifo *F = calloc(nfifo, sizeof(Fifo));
    Unit *U = calloc(nunits, sizeof(Unit));
    i64 result = -2;
    for (i64 i = 0; i < nfifo; i++) {
        F[i].depth = fhdr[2 * i];
        F[i].width = fhdr[2 * i + 1];
        F[i].last_w = F[i].last_r = -1;
        F[i].ring = F[i].depth;
        if (functional) F[i].data = malloc(sizeof(i32) * F[i].ring * F[i].width);
    }
    for (i64 k = 0; k < nunits; k++) {
        Unit *u = &U[k];
        u->h = hdr + k * U_FIELDS;
        u->p = ptrs + k * P_FIELDS;
        u->st = stats + k * S_FIELDS;
        for (int s = 0; s < S_FIELDS; s++) u->st[s] = 0;
        u->st[S_first_read] = u->st[S_first_write] = u->st[S_last_write] = u->st[S_frame0_last_write] = -1;
        const i64 *h = u->h;
        if (h[U_kind] == K_LOOP) {
            u->total = frames * h[U_positions];
            u->qready = calloc(h[U_latency] + 1, sizeof(i64));
            u->qpos = calloc(h[U_latency] + 1, sizeof(i64));
            {
                i64 na = h[U_C] > h[U_PE] ? h[U_C] : h[U_PE];
                u->acc = calloc(na + 1, sizeof(i64));
                i64 nb = h[U_op] == OP_MVAU ? h[U_G] * h[U_SFG] * h[U_SIMD] : 1;
                u->inbuf = calloc(nb, sizeof(i32));
                u->dline = calloc((h[U_latency] + 1) * (h[U_out_width] ? h[U_out_width] : 1), sizeof(i32));
            }
        } else if (h[U_kind] == K_ROUTER && functional) {
            u->ring = calloc(h[U_cap] * h[U_in_width], sizeof(i32));
        }
    }
    /* which unit reads / writes each FIFO (to wake it) */
    i64 *rd_of = malloc(nfifo * sizeof(i64)), *wr_of = malloc(nfifo * sizeof(i64));
    for (i64 k = 0; k < nunits; k++) {
        const i64 *h = hdr + k * U_FIELDS;
        for (i64 i = 0; i < h[U_nin]; i++) rd_of[h[U_in0 + i]] = k;
        for (i64 j = 0; j < h[U_nout]; j++) wr_of[h[U_out0 + j]] = k;
    }
    /* active list: a unit that could not move sleeps until a FIFO it touches changes */
    i64 *active = malloc(nunits * sizeof(i64)), *next = malloc(nunits * sizeof(i64));
    char *listed = calloc(nunits, 1);
    i64 *counted = malloc(nunits * sizeof(i64));    /* last cycle whose state is in the stats */
    i64 *ran = malloc(nunits * sizeof(i64));        /* last cycle the unit was stepped */
    int *state = calloc(nunits, sizeof(int));
    i64 nact = nunits, sinks_left = 0;
    for (i64 k = 0; k < nunits; k++) {
        active[k] = k;
        listed[k] = 1;
        counted[k] = -1;
        ran[k] = -1;
        if (hdr[k * U_FIELDS + U_kind] == K_SINK) sinks_left++;
    }
    i64 cyc;
    /* a unit woken after it ran this cycle joins the next cycle's list, else this cycle's */
#define WAKE(uid) do { i64 w_ = (uid); if (!listed[w_]) { listed[w_] = 1; \
        if (ran[w_] == cyc) next[nnext++] = w_; else active[nact++] = w_; \
        if (state[w_] != ST_IDLE) U[w_].st[state[w_] == ST_STALLED ? S_stalled : S_starved] += cyc - counted[w_]; \
        counted[w_] = cyc; } } while (0)
    for (cyc = 0; cyc < max_cycles; cyc++) {
        int progress = 0;
        i64 nnext = 0;
        for (i64 a = 0; a < nact; a++) {
            const i64 k = active[a];
            Unit *u = &U[k];
            ran[k] = cyc;
            const i64 *h = u->h;
            int st = ST_IDLE;
            switch (h[U_kind]) {
            case K_LOOP:
                st = loop_step(u, F, cyc, functional);
                break;
            case K_ROUTER:
                st = router_step(u, F, cyc, frames, functional);
                break;
            case K_SOURCE: {
                Fifo *fo = &F[h[U_out0]];
                if (u->nwritten < frames * h[U_out_words]) {
                    /* a throttled source starts frame f no earlier than f * period */
                    if (h[U_period] > 0 && cyc < (u->nwritten / h[U_out_words]) * h[U_period]) {
                        st = ST_WAIT;                 /* waiting for time: stays awake, idle */
                    } else if (can_write(fo, cyc)) {
                        i32 *d = fifo_push(fo, cyc);
                        if (d && input) memcpy(d, input + u->nwritten * fo->width, fo->width * sizeof(i32));
                        if (u->st[S_first_write] < 0) u->st[S_first_write] = cyc;
                        u->st[S_last_write] = cyc;
                        u->nwritten++;
                        u->st[S_writes]++;
                        st = ST_BUSY;
                    } else st = ST_STALLED;
                }
                break;
            }
            case K_SINK: {
                Fifo *fi = &F[h[U_in0]];
                const i64 total = frames * h[U_in_words];
                if (u->nread < total) {
                    if (can_read(fi, cyc)) {
                        i32 *d = fifo_pop(fi, cyc);
                        if (d && output && h[U_op] == 1)
                            memcpy(output + u->nread * fi->width, d, fi->width * sizeof(i32));
                        if (u->st[S_first_read] < 0) u->st[S_first_read] = cyc;
                        u->nread++;
                        u->st[S_reads]++;
                        if (h[U_op] == 1 && u->nread % h[U_in_words] == 0)
                            frame_done[u->nread / h[U_in_words] - 1] = cyc;
                        if (u->nread == total) sinks_left--;
                        st = ST_BUSY;
                    } else st = ST_STARVED;
                }
                break;
            }
            }
            state[k] = st;
            if (counted[k] < cyc) {
                if (st == ST_BUSY) u->st[S_busy]++;
                else if (st == ST_STARVED || st == ST_DRAIN) u->st[S_starved]++;
                else if (st == ST_STALLED) u->st[S_stalled]++;
                counted[k] = cyc;
            }
            if (st == ST_WAIT) {
                next[nnext++] = k;
            } else if (st == ST_BUSY || st == ST_DRAIN) {
                progress = 1;
                next[nnext++] = k;
                /* wake the neighbours this unit's moves may unblock */
                for (i64 i = 0; i < h[U_nin]; i++)
                    if (F[h[U_in0 + i]].last_r == cyc) WAKE(wr_of[h[U_in0 + i]]);
                for (i64 j = 0; j < h[U_nout]; j++)
                    if (F[h[U_out0 + j]].last_w == cyc) WAKE(rd_of[h[U_out0 + j]]);
            } else {
                /* stay awake if a FIFO it touches changed this cycle (visible next cycle) */
                int ev = 0;
                for (i64 i = 0; i < h[U_nin]; i++) ev |= F[h[U_in0 + i]].last_w == cyc;
                for (i64 j = 0; j < h[U_nout]; j++) ev |= F[h[U_out0 + j]].last_r == cyc;
                if (ev || u->timer) next[nnext++] = k;
                else listed[k] = 0;
            }
        }
        if (sinks_left == 0) { result = cyc; break; }
        if (!progress && nnext == 0) { result = -1; *deadlock_cycle = cyc; break; }
        i64 *t = active; active = next; next = t;
        nact = nnext;
    }
#undef WAKE
    /* close the books of sleeping units */
    i64 end_cyc = result >= 0 ? result : (result == -1 ? *deadlock_cycle : max_cycles - 1);
    for (i64 k = 0; k < nunits; k++)
        if (!listed[k] && state[k] != ST_IDLE && counted[k] < end_cyc)
            U[k].st[state[k] == ST_STALLED ? S_stalled : S_starved] += end_cyc - counted[k];
    free(rd_of); free(wr_of); free(active); free(next); free(listed); free(counted); free(ran); free(state);
    for (i64 i = 0; i < nfifo; i++) {
        fstats[i] = F[i].max_occ;
        free(F[i].data);
    }
    for (i64 k = 0; k < nunits; k++) {
        free(U[k].acc);
        free(U[k].qready);
        free(U[k].qpos);
        free(U[k].inbuf);
        free(U[k].dline);
        free(U[k].ring);
    }
    free(F);
    free(U);
    return result;
}
