// bnhw_dataflow.h -- streaming units of a bnhw hardware graph (Vitis HLS C++).
//
// Every unit processes ONE frame per call: it reads the whole input frame from
// its hls::stream(s) and writes the whole output frame.  The generated top
// function chains the units in a DATAFLOW region.  The same code is compiled
// by g++ for C simulation (the ap_int / hls_stream headers shipped with
// hls4ml) and by Vitis HLS for synthesis; the only csim-specific code is the
// popcount helper (a 64-bit builtin instead of an adder tree), which computes
// the same value.
//
// Stream words
// ------------
// A word carries P elements of an element type T; element i occupies bits
// [i*T::BITS, (i+1)*T::BITS) (lane 0 in the least significant bits), except
// for PaddedBipolar, which is planar: bits [0, P) hold the values (1 = +1) and
// bits [P, 2P) the valid flags (0 = a zero-padding tap, value 0).
//
// Element types
// -------------
//   Int<B, S>       B-bit two's complement (S) or unsigned integer
//   Bipolar         1 bit, 1 = +1, 0 = -1 (FINN's convention)
//   PaddedBipolar   value bit + valid bit: +1, -1 or 0 (zero padding tap of an SWG)
//
// Wide words
// ----------
// ap_int allows words of at most AP_INT_MAX_W bits (1024 unless defined before the first
// #include <ap_int.h>; Vitis HLS accepts up to 4096).  A word of P elements (or an MVAU weight word
// of SIMD lanes) can be wider: the generated sources define AP_INT_MAX_W and BNHW_WORD_BITS (the
// design's widest word) before any include, the build scripts pass the same -DAP_INT_MAX_W, and
// the check below stops a translation unit that included ap_int.h with a smaller limit.
#ifndef BNHW_DATAFLOW_H
#define BNHW_DATAFLOW_H

#include <ap_int.h>
#include <hls_stream.h>

#if defined(BNHW_WORD_BITS) && BNHW_WORD_BITS > AP_INT_MAX_W
#error "bnhw: this design has ap_uint words of BNHW_WORD_BITS bits, more than AP_INT_MAX_W: define AP_INT_MAX_W (a multiple of 1024, at least BNHW_WORD_BITS) before the first #include <ap_int.h>"
#endif

// Cycle stamps (BNHW_TIMING; off in synthesis and in the normal C simulation)
// ---------------------------------------------------------------------------
// With -DBNHW_TIMING the C simulation also measures the schedule the code
// expresses: every unit keeps a clock (keyed by its first output stream), every
// iteration of a pipelined loop (`#pragma HLS PIPELINE II=1`) is one cycle
// (BNHW_TICK), every word carries the cycle it was written in, and a read of a
// word written at cycle t happens at cycle t + 1 at the earliest (the unit stalls
// until then).  Streams are unbounded, so this is the schedule with unbounded
// FIFOs and II = 1 wherever the code asks for it: what Vitis HLS builds if it meets
// the pragmas, not a synthesis result.
#ifdef BNHW_TIMING
#include <deque>
#include <map>
namespace bnhw {
namespace timing {
inline std::map<const void *, std::deque<long long> > &stamps() {
    static std::map<const void *, std::deque<long long> > m;
    return m;
}
inline std::map<const void *, long long> &clocks() {
    static std::map<const void *, long long> m;
    return m;
}
inline long long *&current() {
    static long long *c = 0;
    return c;
}
inline void unit(const void *key) { current() = &clocks()[key]; }
inline void tick() { ++*current(); }
template <class S>
inline void stamp_read(S &s) {
    std::deque<long long> &q = stamps()[(const void *)&s];
    const long long t = q.empty() ? 0 : q.front();
    if (!q.empty()) q.pop_front();
    if (*current() < t + 1) *current() = t + 1;
}
template <class S>
inline void stamp_write(S &s) { stamps()[(const void *)&s].push_back(*current()); }
}  // namespace timing
}  // namespace bnhw
#define BNHW_TIMING_STATIC static
#define BNHW_UNIT(s) ::bnhw::timing::unit((const void *)&(s))
#define BNHW_TICK() ::bnhw::timing::tick()
#define BNHW_RD(s) (::bnhw::timing::stamp_read(s), (s).read())
#define BNHW_WR(s, ...) (::bnhw::timing::stamp_write(s), (s).write(__VA_ARGS__))
#else
#define BNHW_TIMING_STATIC
#define BNHW_UNIT(s) ((void)0)
#define BNHW_TICK() ((void)0)
#define BNHW_RD(s) (s).read()
#define BNHW_WR(s, ...) (s).write(__VA_ARGS__)
#endif

namespace bnhw {

typedef long long i64;

// ---------------------------------------------------------------- bit helpers
template <int N>
inline int popcount(const ap_uint<N> &v) {
#ifdef __SYNTHESIS__
    int c = 0;
    for (int i = 0; i < N; i++) {
#pragma HLS UNROLL
        c += v[i];
    }
    return c;
#else
    if (N <= 64) return __builtin_popcountll((unsigned long long)v.to_uint64());
    int c = 0;
    for (int lo = 0; lo < N; lo += 64) {
        const int hi = (lo + 63 < N) ? lo + 63 : N - 1;
        ap_uint<64> part = v.range(hi, lo);
        c += __builtin_popcountll((unsigned long long)part.to_uint64());
    }
    return c;
#endif
}

template <int N>
inline ap_uint<N> ones() {
    ap_uint<N> r = 0;
    r = ~r;
    return r;
}

// Constants (weights, thresholds, per-channel parameters) are stored in plain
// integer arrays, which C++ initialises statically (an ap_uint array needs a
// constructor call per element: minutes of g++ time for a CNV-size network).
// A weight word of N bits is NCH = ceil(N/64) chunks of the narrowest unsigned
// type holding min(N, 64) bits, least significant chunk first.
template <int N, class WS, int NCH>
inline ap_uint<N> load_word(const WS (&c)[NCH]) {
    if (NCH == 1) return ap_uint<N>((unsigned long long)c[0]);
    ap_uint<N> r = 0;
    for (int i = 0; i < NCH; i++) {
#pragma HLS UNROLL
        const int lo = 64 * i;
        const int hi = (lo + 63 < N) ? lo + 63 : N - 1;
        ap_uint<64> chunk = (unsigned long long)c[i];
        r.range(hi, lo) = chunk;
    }
    return r;
}

// ---------------------------------------------------------------- element types
template <int B, bool S>
struct Int {
    static const int BITS = B;
    static i64 min_value() { return S ? -(i64(1) << (B - 1)) : i64(0); }
    static i64 max_value() { return S ? (i64(1) << (B - 1)) - 1 : (i64(1) << B) - 1; }
    template <int P>
    static i64 get(const ap_uint<P * B> &w, int i) {
        unsigned long long u;
        if (P * B <= 64) {
            u = (unsigned long long)w.to_uint64() >> (i * B);
        } else {
            ap_uint<64> r = w >> (i * B);
            u = (unsigned long long)r.to_uint64();
        }
        if (B < 64) u &= (~0ULL) >> (64 - B);
        if (S && B < 64 && ((u >> (B - 1)) & 1)) u |= ~0ULL << B;   // sign extension
        return (i64)u;
    }
    template <int P>
    static void set(ap_uint<P * B> &w, int i, i64 v) {
        w.range(i * B + B - 1, i * B) = (unsigned long long)v & ((~0ULL) >> (64 - B));
    }
};

struct Bipolar {
    static const int BITS = 1;
    static i64 min_value() { return -1; }
    static i64 max_value() { return 1; }
    template <int P>
    static i64 get(const ap_uint<P> &w, int i) { return w[i] ? 1 : -1; }
    template <int P>
    static void set(ap_uint<P> &w, int i, i64 v) { w[i] = (v > 0) ? 1 : 0; }
};

struct PaddedBipolar {
    static const int BITS = 2;
    static i64 min_value() { return -1; }
    static i64 max_value() { return 1; }
    template <int P>
    static i64 get(const ap_uint<2 * P> &w, int i) { return w[P + i] ? (w[i] ? 1 : -1) : 0; }
    template <int P>
    static void set(ap_uint<2 * P> &w, int i, i64 v) {
        w[i] = (v > 0) ? 1 : 0;
        w[P + i] = (v != 0) ? 1 : 0;
    }
};

// Re-encode a word of P elements of TI as TO (the SWG's bipolar -> padded-bipolar
// widening; identity otherwise).
template <class TI, class TO, int P>
struct Widen {
    static ap_uint<P * TO::BITS> run(const ap_uint<P * TI::BITS> &x) {
        ap_uint<P * TO::BITS> r = 0;
        for (int i = 0; i < P; i++) {
#pragma HLS UNROLL
            TO::template set<P>(r, i, TI::template get<P>(x, i));
        }
        return r;
    }
};
template <class T, int P>
struct Widen<T, T, P> {
    static ap_uint<P * T::BITS> run(const ap_uint<P * T::BITS> &x) { return x; }
};
template <int P>
struct Widen<Bipolar, PaddedBipolar, P> {
    static ap_uint<2 * P> run(const ap_uint<P> &x) {
        ap_uint<2 * P> r = x;
        r.range(2 * P - 1, P) = ones<P>();
        return r;
    }
};

// ---------------------------------------------------------------- arithmetic helpers
// round_half_even(v / 2**SHIFT); SHIFT <= 0 multiplies.  T is a signed ap_int
// wide enough for v and for 2**SHIFT.
template <int SHIFT, class T>
inline T rhe_shift(const T &v) {
    if (SHIFT <= 0) return v << (-SHIFT);
    T q = v >> SHIFT;                       // arithmetic shift: floor
    T r = v - (q << SHIFT);                 // 0 <= r < 2**SHIFT
    T half = T(1) << (SHIFT > 0 ? SHIFT - 1 : 0);
    if (r > half || (r == half && q[0])) q = q + 1;
    return q;
}

// round_half_even(num / DEN) for a positive constant DEN.
template <int DEN>
inline i64 rhe_div(i64 num) {
    i64 q = num / DEN;
    i64 r = num - q * DEN;
    if (r < 0) {                            // C++ truncates toward zero: make it a floor
        q -= 1;
        r += DEN;
    }
    const i64 twice = 2 * r;
    if (twice > DEN || (twice == DEN && (q & 1))) q += 1;
    return q;
}

// round_half_even(num / den) for a positive den known at run time.
inline i64 rhe_div_rt(i64 num, i64 den) {
    i64 q = num / den;
    i64 r = num - q * den;
    if (r < 0) {
        q -= 1;
        r += den;
    }
    const i64 twice = 2 * r;
    if (twice > den || (twice == den && (q & 1))) q += 1;
    return q;
}

template <class T>
inline i64 clip(i64 v) {
    if (v < T::min_value()) return T::min_value();
    if (v > T::max_value()) return T::max_value();
    return v;
}

// ---------------------------------------------------------------- activations
// Identity: the MVAU emits its accumulator.
struct PassThrough {
    template <class A>
    i64 activate(int, int, const A &acc) const { return (i64)acc; }
};

// Multi-threshold: SCALE * #{i : acc >= m[pe][nf][i]} + BIAS  (FINN layout T[PE][NF][NT]).
// An aggregate: the generated params header initialises it as a constant.
template <int PE, int NF, int NT, class TT, int SCALE, int BIAS>
struct Thresholds {
    TT m[PE][NF][NT];
    template <class A>
    i64 activate(int nf, int pe, const A &acc) const {
        int c = 0;
        for (int i = 0; i < NT; i++) {
#pragma HLS UNROLL
            c += (acc >= m[pe][nf][i]) ? 1 : 0;
        }
        return (i64)SCALE * c + BIAS;
    }
};

// ---------------------------------------------------------------- SIMD dot products
// XNOR-popcount of a bipolar input word and a bipolar weight word.
template <int SIMD>
struct XnorDot {
    typedef Bipolar TI;
    static const int WBITS = 1;
    static int run(const ap_uint<SIMD> &x, const ap_uint<SIMD> &w) {
        ap_uint<SIMD> m = ~(x ^ w);
        return 2 * popcount<SIMD>(m) - SIMD;
    }
};

// The same with zero-padding taps masked out by the valid plane.
template <int SIMD>
struct XnorDotPadded {
    typedef PaddedBipolar TI;
    static const int WBITS = 1;
    static int run(const ap_uint<2 * SIMD> &x, const ap_uint<SIMD> &w) {
        ap_uint<SIMD> v = x.range(SIMD - 1, 0);
        ap_uint<SIMD> valid = x.range(2 * SIMD - 1, SIMD);
        ap_uint<SIMD> m = ~(v ^ w);
        m = m & valid;
        return 2 * popcount<SIMD>(m) - popcount<SIMD>(valid);
    }
};

// Integer multiply-accumulate of SIMD lanes (int8 etc. inputs, TW weights).
template <int SIMD, class TIN, class TW>
struct MulDot {
    typedef TIN TI;
    static const int WBITS = TW::BITS;
    static i64 run(const ap_uint<SIMD * TIN::BITS> &x, const ap_uint<SIMD * TW::BITS> &w) {
        i64 s = 0;
        for (int i = 0; i < SIMD; i++) {
#pragma HLS UNROLL
            s += TIN::template get<SIMD>(x, i) * TW::template get<SIMD>(w, i);
        }
        return s;
    }
};

// ---------------------------------------------------------------- units
// Data width converter: TOTAL elements per frame, PIN -> POUT elements per word,
// L = lcm(PIN, POUT) elements per chunk, max(L/PIN, L/POUT) cycles per chunk:
// input word i is read in cycle i, output word j written in the last L/POUT
// cycles (every element it takes has been read by then, in the same cycle at
// the latest), so a frame costs max(TOTAL/PIN, TOTAL/POUT) cycles, as FINN's.
template <int TOTAL, int PIN, int POUT, int L, class T>
void dwc(hls::stream<ap_uint<PIN * T::BITS> > &in, hls::stream<ap_uint<POUT * T::BITS> > &out) {
    BNHW_UNIT(out);
    const int NI = L / PIN, NO = L / POUT, STEPS = NI > NO ? NI : NO;
    i64 buf[L];
#pragma HLS ARRAY_PARTITION variable=buf complete
    for (int c = 0; c < TOTAL / L; c++) {
        for (int i = 0; i < STEPS; i++) {
#pragma HLS PIPELINE II=1
            BNHW_TICK();
            if (i < NI) {
                ap_uint<PIN * T::BITS> w = BNHW_RD(in);
                for (int p = 0; p < PIN; p++) buf[i * PIN + p] = T::template get<PIN>(w, p);
            }
            const int j = i - (STEPS - NO);
            if (j >= 0) {
                ap_uint<POUT * T::BITS> w = 0;
                for (int p = 0; p < POUT; p++) T::template set<POUT>(w, p, buf[j * POUT + p]);
                BNHW_WR(out, w);
            }
        }
    }
}

// Sliding window generator (FINN ConvolutionInputGenerator semantics): input
// (H, W, C) in words of SIMD channels; output (HO, WO, K*K*C), window elements
// ordered (ky, kx, c), SIMD channels per word; padding taps emit `padword`.
// A ring of R + STRIDE input rows (R = (K-1)*DIL + 1): while output row oy is
// emitted, one word per cycle, the STRIDE rows output row oy+1 needs next are
// read in the same loop (one word per cycle), so reading and writing overlap
// as in FINN's RTL window generator and a row costs max(read, write) cycles.
template <int H, int W, int C, int K, int STRIDE, int PAD, int DIL, int HO, int WO, int SIMD, class TI, class TO>
void swg(hls::stream<ap_uint<SIMD * TI::BITS> > &in, hls::stream<ap_uint<SIMD * TO::BITS> > &out,
         const ap_uint<SIMD * TO::BITS> padword) {
    BNHW_UNIT(out);
    const int R = (K - 1) * DIL + 1;
    const int NB = R + STRIDE;
    const int CF = C / SIMD;
    const int ROW = W * CF;                 // words per input row
    const int EMIT = WO * K * K * CF;       // words per output row
    static ap_uint<SIMD * TI::BITS> buf[NB][W][CF];
    int rows_read = 0, col = 0;             // col: words of row `rows_read` read so far
    for (int oy = 0; oy < HO; oy++) {
        int last = oy * STRIDE - PAD + (K - 1) * DIL;
        if (last > H - 1) last = H - 1;
        int next = (oy + 1) * STRIDE - PAD + (K - 1) * DIL;     // the last row output row oy+1 needs
        if (oy + 1 == HO || next > H - 1) next = (oy + 1 == HO) ? last : H - 1;
        while (rows_read <= last) {         // rows this output row needs and the previous one did not read
#pragma HLS PIPELINE II=1
            BNHW_TICK();
            buf[rows_read % NB][col / CF][col % CF] = BNHW_RD(in);
            if (++col == ROW) {
                col = 0;
                rows_read++;
            }
        }
        int ox = 0, ky = 0, kx = 0, cf = 0;
        for (int i = 0; i < EMIT; i++) {
#pragma HLS PIPELINE II=1
            BNHW_TICK();
            if (rows_read <= next) {         // overlap: the next output row's new rows
                buf[rows_read % NB][col / CF][col % CF] = BNHW_RD(in);
                if (++col == ROW) {
                    col = 0;
                    rows_read++;
                }
            }
            const int iy = oy * STRIDE - PAD + ky * DIL;
            const int ix = ox * STRIDE - PAD + kx * DIL;
            ap_uint<SIMD * TO::BITS> o;
            if (iy >= 0 && iy < H && ix >= 0 && ix < W)
                o = Widen<TI, TO, SIMD>::run(buf[iy % NB][ix][cf]);
            else
                o = padword;
            BNHW_WR(out, o);
            if (++cf == CF) {
                cf = 0;
                if (++kx == K) {
                    kx = 0;
                    if (++ky == K) {
                        ky = 0;
                        ox++;
                    }
                }
            }
        }
    }
    while (rows_read < H) {                 // rows no window reaches
#pragma HLS PIPELINE II=1
        BNHW_TICK();
        BNHW_RD(in);
        if (++col == ROW) {
            col = 0;
            rows_read++;
        }
    }
}

// Matrix-vector-activation unit, FINN loop structure: for each of PIXELS input
// vectors, NF = MH/PE neuron folds x SF = MW/SIMD synapse folds; the input
// vector is buffered during the first neuron fold and reused by the others.
// weights[pe][nf*SF + sf] (see load_word) holds the SIMD weights of neuron nf*PE+pe, synapses
// sf*SIMD ... sf*SIMD+SIMD-1.
template <int PIXELS, int MW, int MH, int SIMD, int PE, class DOT, class TO, class ACC, class WS, int NCH,
          class ACT>
void mvau(hls::stream<ap_uint<SIMD * DOT::TI::BITS> > &in, hls::stream<ap_uint<PE * TO::BITS> > &out,
          const WS (&weights)[PE][(MH / PE) * (MW / SIMD)][NCH], const ACT &act) {
    BNHW_UNIT(out);
    const int SF = MW / SIMD;
    const int NF = MH / PE;
    ap_uint<SIMD * DOT::TI::BITS> inbuf[SF];
    ACC acc[PE];
#pragma HLS ARRAY_PARTITION variable=acc complete
    int nf = 0, sf = 0, tile = 0;
    for (int i = 0; i < PIXELS * NF * SF; i++) {
#pragma HLS PIPELINE II=1
        BNHW_TICK();
        ap_uint<SIMD * DOT::TI::BITS> x;
        if (nf == 0) {
            x = BNHW_RD(in);
            inbuf[sf] = x;
        } else {
            x = inbuf[sf];
        }
        for (int pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
            ACC partial = DOT::run(x, load_word<SIMD * DOT::WBITS>(weights[pe][tile]));
            acc[pe] = (sf == 0) ? partial : ACC(acc[pe] + partial);
        }
        tile++;
        if (++sf == SF) {
            ap_uint<PE * TO::BITS> o = 0;
            for (int pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
                TO::template set<PE>(o, pe, act.activate(nf, pe, acc[pe]));
            }
            BNHW_WR(out, o);
            sf = 0;
            if (++nf == NF) {
                nf = 0;
                tile = 0;
            }
        }
    }
}

// Grouped MVAU (block-diagonal grouped convolution).  The input vector is the
// SWG window (KK taps x C channels, tap-major); output channel o belongs to
// group o / (MH/GROUPS) and sees the CG = C/GROUPS channels of its group at
// every tap.  Per pixel GROUPS x NFG x SFG tiles are computed (NFG =
// MH/GROUPS/PE, SFG = KK*CG/SIMD), one per cycle, while the next pixel's window
// (MW/SIMD = GROUPS x SFG words, never more than the tiles) is read into the
// other half of a ping-pong buffer: after the first window a frame takes
// PIXELS x GROUPS x NFG x SFG cycles, the unit's modelled cycle count (reading
// and computing overlap as in FINN's MVAU, which reads during its first
// neuron fold).  weights[pe][(g*NFG + nfg)*SFG + sf]: SIMD weights of neuron
// g*MH/GROUPS + nfg*PE + pe, group-local synapses sf*SIMD ...  (ordered (tap,
// channel)).
template <int PIXELS, int KK, int C, int MH, int GROUPS, int SIMD, int PE, class DOT, class TO, class ACC,
          class WS, int NCH, class ACT>
void mvau_grouped(hls::stream<ap_uint<SIMD * DOT::TI::BITS> > &in, hls::stream<ap_uint<PE * TO::BITS> > &out,
                  const WS (&weights)[PE][(MH / PE) * (KK * C / GROUPS / SIMD)][NCH], const ACT &act) {
    BNHW_UNIT(out);
    const int CG = C / GROUPS;
    const int CW = CG / SIMD;               // words per group per tap
    const int CT = C / SIMD;                // words per tap
    const int WW = KK * CT;                 // words per window
    const int SFG = KK * CW;
    const int NFG = MH / GROUPS / PE;
    const int TILES = GROUPS * NFG * SFG;   // >= WW (NFG >= 1)
    ap_uint<SIMD * DOT::TI::BITS> inbuf[2][WW];
#pragma HLS ARRAY_PARTITION variable=inbuf complete dim=1
#pragma HLS DEPENDENCE variable=inbuf inter false
    ACC acc[PE];
#pragma HLS ARRAY_PARTITION variable=acc complete
    for (int i = 0; i < WW; i++) {          // the first window
#pragma HLS PIPELINE II=1
        BNHW_TICK();
        inbuf[0][i] = BNHW_RD(in);
    }
    for (int px = 0; px < PIXELS; px++) {
        const int cur = px & 1;
        int rd = 0, g = 0, nfg = 0, sf = 0, tile = 0;
        for (int t = 0; t < TILES; t++) {
#pragma HLS PIPELINE II=1
            BNHW_TICK();
            if (px + 1 < PIXELS && rd < WW) {   // the next pixel's window, one word per cycle
                inbuf[cur ^ 1][rd] = BNHW_RD(in);
                rd++;
            }
            const int tap = sf / CW;
            const int j = sf - tap * CW;
            ap_uint<SIMD * DOT::TI::BITS> x = inbuf[cur][tap * CT + g * CW + j];
            for (int pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
                ACC partial = DOT::run(x, load_word<SIMD * DOT::WBITS>(weights[pe][tile]));
                acc[pe] = (sf == 0) ? partial : ACC(acc[pe] + partial);
            }
            tile++;
            if (++sf == SFG) {
                ap_uint<PE * TO::BITS> o = 0;
                for (int pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
                    TO::template set<PE>(o, pe, act.activate(g * NFG + nfg, pe, acc[pe]));
                }
                BNHW_WR(out, o);
                sf = 0;
                if (++nfg == NFG) {
                    nfg = 0;
                    g++;
                }
            }
        }
    }
}

// Elementwise multi-threshold activation, channel c = cf*PE + pe.
template <int PIXELS, int C, int PE, class TI, class TO, class ACT>
void thresholding(hls::stream<ap_uint<PE * TI::BITS> > &in, hls::stream<ap_uint<PE * TO::BITS> > &out,
                  const ACT &act) {
    BNHW_UNIT(out);
    const int CF = C / PE;
    for (int px = 0; px < PIXELS; px++)
        for (int cf = 0; cf < CF; cf++) {
#pragma HLS PIPELINE II=1
            BNHW_TICK();
            ap_uint<PE * TI::BITS> x = BNHW_RD(in);
            ap_uint<PE * TO::BITS> o = 0;
            for (int pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
                TO::template set<PE>(o, pe, act.activate(cf, pe, TI::template get<PE>(x, pe)));
            }
            BNHW_WR(out, o);
        }
}

struct PoolMax {
    template <class T>
    static T combine(const T &a, const T &b) { return a > b ? a : b; }
};
struct PoolSum {
    template <class T>
    static T combine(const T &a, const T &b) { return T(a + b); }
};

// K x K pooling with stride K (floor: trailing rows / columns are dropped).
// A line buffer of WO x C partial results; output pixel (oy, ox) leaves in the
// cycle its window's last word is read (row oy*K + K-1, column ox*K + K-1), as
// FINN's StreamingMaxPool: a frame costs H x W x C/PE cycles.
template <int H, int W, int C, int K, int PE, class TI, class TO, class OP, class BT>
void pool(hls::stream<ap_uint<PE * TI::BITS> > &in, hls::stream<ap_uint<PE * TO::BITS> > &out) {
    BNHW_UNIT(out);
    const int HO = H / K, WO = W / K, CF = C / PE;
    BT buf[WO][CF][PE];
#pragma HLS ARRAY_PARTITION variable=buf complete dim=3
    for (int oy = 0; oy < HO; oy++) {
        for (int ky = 0; ky < K; ky++)
            for (int x = 0; x < W; x++)
                for (int cf = 0; cf < CF; cf++) {
#pragma HLS PIPELINE II=1
                    BNHW_TICK();
                    ap_uint<PE * TI::BITS> w = BNHW_RD(in);
                    if (x < WO * K) {
                        const int ox = x / K;
                        const bool first = (ky == 0) && (x - ox * K == 0);
                        const bool last = (ky == K - 1) && (x - ox * K == K - 1);
                        ap_uint<PE * TO::BITS> o = 0;
                        for (int pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
                            BT v = TI::template get<PE>(w, pe);
                            BT r = first ? v : OP::combine(buf[ox][cf][pe], v);
                            buf[ox][cf][pe] = r;
                            TO::template set<PE>(o, pe, (i64)r);
                        }
                        if (last) BNHW_WR(out, o);
                    }
                }
    }
    for (int i = 0; i < (H - HO * K) * W * CF; i++) {
#pragma HLS PIPELINE II=1
        BNHW_TICK();
        BNHW_RD(in);
    }
}

// Pooling of an SWG's window stream (per pixel KK taps x C channels, tap-major): per channel OP over the
// taps (PoolMax: the maximum; PoolSum: the sum, then round_half_even(sum / counts[pixel]) when counts is
// given: an average with the padding not counted).
template <int PIXELS, int KK, int C, int PE, class TI, class TO, class OP, class BT>
void window_pool(hls::stream<ap_uint<PE * TI::BITS> > &in, hls::stream<ap_uint<PE * TO::BITS> > &out,
                 const int *counts) {
    BNHW_UNIT(out);
    const int CF = C / PE;
    BT buf[CF][PE];
#pragma HLS ARRAY_PARTITION variable=buf complete dim=2
    for (int px = 0; px < PIXELS; px++) {
        for (int t = 0; t < KK; t++)
            for (int cf = 0; cf < CF; cf++) {
#pragma HLS PIPELINE II=1
                BNHW_TICK();
                ap_uint<PE * TI::BITS> w = BNHW_RD(in);
                ap_uint<PE * TO::BITS> o = 0;
                for (int pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
                    BT v = TI::template get<PE>(w, pe);
                    BT r = t == 0 ? v : OP::combine(buf[cf][pe], v);
                    buf[cf][pe] = r;
                    TO::template set<PE>(o, pe, counts ? rhe_div_rt((i64)r, counts[px]) : (i64)r);
                }
                if (t == KK - 1) BNHW_WR(out, o);     // the channel fold's last tap: its result leaves now
            }
    }
}

// Global average pooling: per-channel round_half_even(sum / PIXELS).
template <int PIXELS, int C, int PE, class TI, class TO, class ST>
void global_avg_pool(hls::stream<ap_uint<PE * TI::BITS> > &in, hls::stream<ap_uint<PE * TO::BITS> > &out) {
    BNHW_UNIT(out);
    const int CF = C / PE;
    ST sum[CF][PE];
#pragma HLS ARRAY_PARTITION variable=sum complete dim=2
    for (int px = 0; px < PIXELS; px++)
        for (int cf = 0; cf < CF; cf++) {
#pragma HLS PIPELINE II=1
            BNHW_TICK();
            ap_uint<PE * TI::BITS> w = BNHW_RD(in);
            for (int pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
                ST v = TI::template get<PE>(w, pe);
                sum[cf][pe] = (px == 0) ? v : ST(sum[cf][pe] + v);
            }
        }
    for (int cf = 0; cf < CF; cf++) {
#pragma HLS PIPELINE II=1
        BNHW_TICK();
        ap_uint<PE * TO::BITS> o = 0;
        for (int pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
            TO::template set<PE>(o, pe, rhe_div<PIXELS>((i64)sum[cf][pe]));
        }
        BNHW_WR(out, o);
    }
}

// Channel gather out[c] = in[index[c]] (C input, CO output channels per pixel).
// Reading and writing overlap, one word each per cycle, around a buffer of two
// pixels: an output word leaves as soon as every input word it takes has been
// read, while the next pixel is read into the other half (the schedule of
// bnhw's cycle model, a router buffering two pixels).
template <int PIXELS, int C, int CO, int PIN, int POUT, class T>
void gather(hls::stream<ap_uint<PIN * T::BITS> > &in, hls::stream<ap_uint<POUT * T::BITS> > &out,
            const int (&index)[CO]) {
    BNHW_UNIT(out);
    const int NI = C / PIN, NO = CO / POUT;
    i64 buf[2][C];
    int r = 0, w = 0;                       // words read / written in this frame
    while (w < PIXELS * NO) {
#pragma HLS PIPELINE II=1
        BNHW_TICK();
        const int rp = r / NI, wp = w / NO;
        if (r < PIXELS * NI && rp <= wp + 1) {
            ap_uint<PIN * T::BITS> x = BNHW_RD(in);
            const int i = r - rp * NI;
            for (int p = 0; p < PIN; p++) buf[rp & 1][i * PIN + p] = T::template get<PIN>(x, p);
            r++;
        }
        const int j = w - wp * NO;
        int need = 0;                       // the last input word output word j takes
        for (int p = 0; p < POUT; p++) {
            const int k = index[j * POUT + p] / PIN;
            need = k > need ? k : need;
        }
        if (r > wp * NI + need) {
            ap_uint<POUT * T::BITS> o = 0;
            for (int p = 0; p < POUT; p++) T::template set<POUT>(o, p, buf[wp & 1][index[j * POUT + p]]);
            BNHW_WR(out, o);
            w++;
        }
    }
}

// acc = x*A[c] + B[c] (+ s << SC_SHIFT); out = clip(round_half_even(acc / 2**SHIFT)).
template <class TO, class ACC, int SHIFT>
inline i64 requant(const ACC &acc) {
    ACC q = rhe_shift<SHIFT>(acc);
    return clip<TO>((i64)q.to_int64());
}

// The multiplier of an elementwise unit in DSP slices (MUL_DSP = 1) or in LUTs (0): bnhw's folding chooses which,
// and its resource model costs that choice (bnhw/hw/ops/elementwise.py), so the HLS binding is stated, not left
// to the tool's default.
template <int MUL_DSP>
struct scale_mul;
template <>
struct scale_mul<1> {
    template <class ACC, class X, class A>
    static ACC mul(X x, A a) {
        ACC p = ACC(x) * a;
#pragma HLS BIND_OP variable=p op=mul impl=dsp
        return p;
    }
};
template <>
struct scale_mul<0> {
    template <class ACC, class X, class A>
    static ACC mul(X x, A a) {
        ACC p = ACC(x) * a;
#pragma HLS BIND_OP variable=p op=mul impl=fabric
        return p;
    }
};

template <int PIXELS, int C, int PE, class TI, class TO, class PT, class ACC, int SHIFT, int MUL_DSP = 0>
void add_requant(hls::stream<ap_uint<PE * TI::BITS> > &in, hls::stream<ap_uint<PE * TO::BITS> > &out,
                 const PT (&A)[PE][C / PE], const PT (&B)[PE][C / PE]) {
    BNHW_UNIT(out);
    const int CF = C / PE;
    for (int px = 0; px < PIXELS; px++)
        for (int cf = 0; cf < CF; cf++) {
#pragma HLS PIPELINE II=1
            BNHW_TICK();
            ap_uint<PE * TI::BITS> x = BNHW_RD(in);
            ap_uint<PE * TO::BITS> o = 0;
            for (int pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
                ACC acc = scale_mul<MUL_DSP>::template mul<ACC>(TI::template get<PE>(x, pe), A[pe][cf]) + B[pe][cf];
                TO::template set<PE>(o, pe, requant<TO, ACC, SHIFT>(acc));
            }
            BNHW_WR(out, o);
        }
}

template <int PIXELS, int C, int PE, class TI, class TS, class TO, class PT, class ACC, int SC_SHIFT, int SHIFT,
          int MUL_DSP = 0>
void add_requant2(hls::stream<ap_uint<PE * TI::BITS> > &in, hls::stream<ap_uint<PE * TS::BITS> > &sc,
                  hls::stream<ap_uint<PE * TO::BITS> > &out, const PT (&A)[PE][C / PE],
                  const PT (&B)[PE][C / PE]) {
    BNHW_UNIT(out);
    const int CF = C / PE;
    for (int px = 0; px < PIXELS; px++)
        for (int cf = 0; cf < CF; cf++) {
#pragma HLS PIPELINE II=1
            BNHW_TICK();
            ap_uint<PE * TI::BITS> x = BNHW_RD(in);
            ap_uint<PE * TS::BITS> s = BNHW_RD(sc);
            ap_uint<PE * TO::BITS> o = 0;
            for (int pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
                ACC acc = scale_mul<MUL_DSP>::template mul<ACC>(TI::template get<PE>(x, pe), A[pe][cf]) + B[pe][cf];
                acc = acc + (ACC(TS::template get<PE>(s, pe)) << SC_SHIFT);
                TO::template set<PE>(o, pe, requant<TO, ACC, SHIFT>(acc));
            }
            BNHW_WR(out, o);
        }
}

// AddRequant with a bias per output position class (a unit that folded FINN's -1 padding correction into B):
// B[rc[y]][cc[x]][pe][cf] for the pixel in row y, column x of an H x W map.
template <int H, int W, int C, int PE, int NR, int NC, class TI, class TO, class PT, class ACC, int SHIFT,
          int MUL_DSP = 0>
void add_requant_pos(hls::stream<ap_uint<PE * TI::BITS> > &in, hls::stream<ap_uint<PE * TO::BITS> > &out,
                     const PT (&A)[PE][C / PE], const PT (&B)[NR][NC][PE][C / PE], const unsigned char (&rc)[H],
                     const unsigned char (&cc)[W]) {
    BNHW_UNIT(out);
    const int CF = C / PE;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int cf = 0; cf < CF; cf++) {
#pragma HLS PIPELINE II=1
                BNHW_TICK();
                ap_uint<PE * TI::BITS> v = BNHW_RD(in);
                ap_uint<PE * TO::BITS> o = 0;
                for (int pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
                    ACC acc = scale_mul<MUL_DSP>::template mul<ACC>(TI::template get<PE>(v, pe), A[pe][cf]) + B[rc[y]][cc[x]][pe][cf];
                    TO::template set<PE>(o, pe, requant<TO, ACC, SHIFT>(acc));
                }
                BNHW_WR(out, o);
            }
}

template <int H, int W, int C, int PE, int NR, int NC, class TI, class TS, class TO, class PT, class ACC,
          int SC_SHIFT, int SHIFT, int MUL_DSP = 0>
void add_requant2_pos(hls::stream<ap_uint<PE * TI::BITS> > &in, hls::stream<ap_uint<PE * TS::BITS> > &sc,
                      hls::stream<ap_uint<PE * TO::BITS> > &out, const PT (&A)[PE][C / PE],
                      const PT (&B)[NR][NC][PE][C / PE], const unsigned char (&rc)[H],
                      const unsigned char (&cc)[W]) {
    BNHW_UNIT(out);
    const int CF = C / PE;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int cf = 0; cf < CF; cf++) {
#pragma HLS PIPELINE II=1
                BNHW_TICK();
                ap_uint<PE * TI::BITS> v = BNHW_RD(in);
                ap_uint<PE * TS::BITS> s = BNHW_RD(sc);
                ap_uint<PE * TO::BITS> o = 0;
                for (int pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
                    ACC acc = scale_mul<MUL_DSP>::template mul<ACC>(TI::template get<PE>(v, pe), A[pe][cf]) + B[rc[y]][cc[x]][pe][cf];
                    acc = acc + (ACC(TS::template get<PE>(s, pe)) << SC_SHIFT);
                    TO::template set<PE>(o, pe, requant<TO, ACC, SHIFT>(acc));
                }
                BNHW_WR(out, o);
            }
}

// RPReLU: y = x - S_in[c]; y = y << FRAC if y >= 0 else y * slope[c];
// out = clip(round_half_even((y + (S_out[c] << FRAC)) / 2**FRAC)).
template <int PIXELS, int C, int PE, class TI, class TO, class PT, class ACC, int FRAC>
void rprelu(hls::stream<ap_uint<PE * TI::BITS> > &in, hls::stream<ap_uint<PE * TO::BITS> > &out,
            const PT (&S_in)[PE][C / PE], const PT (&slope)[PE][C / PE], const PT (&S_out)[PE][C / PE]) {
    BNHW_UNIT(out);
    const int CF = C / PE;
    for (int px = 0; px < PIXELS; px++)
        for (int cf = 0; cf < CF; cf++) {
#pragma HLS PIPELINE II=1
            BNHW_TICK();
            ap_uint<PE * TI::BITS> x = BNHW_RD(in);
            ap_uint<PE * TO::BITS> o = 0;
            for (int pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
                ACC y = ACC(TI::template get<PE>(x, pe)) - S_in[pe][cf];
                y = (y >= 0) ? ACC(y << FRAC) : ACC(y * slope[pe][cf]);
                y = y + (ACC(S_out[pe][cf]) << FRAC);
                TO::template set<PE>(o, pe, requant<TO, ACC, FRAC>(y));
            }
            BNHW_WR(out, o);
        }
}

// Index of the largest of N elements (ties: the lowest index).
template <int N, int PE, class TI, class TO>
void label_select(hls::stream<ap_uint<PE * TI::BITS> > &in, hls::stream<ap_uint<TO::BITS> > &out) {
    BNHW_UNIT(out);
    i64 best = 0;
    int best_i = 0;
    for (int i = 0; i < N / PE; i++) {
#pragma HLS PIPELINE II=1
        BNHW_TICK();
        ap_uint<PE * TI::BITS> w = BNHW_RD(in);
        for (int pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
            const i64 v = TI::template get<PE>(w, pe);
            if ((i == 0 && pe == 0) || v > best) {
                best = v;
                best_i = i * PE + pe;
            }
        }
    }
    ap_uint<TO::BITS> o = 0;
    TO::template set<1>(o, 0, best_i);
    BNHW_WR(out, o);
}

}  // namespace bnhw

#endif  // BNHW_DATAFLOW_H
