/* The loop over the MR x NR output tiles of a GEMM, shared by the optimised kernels: full tiles, then
 * the right-hand column of MR x 1 tiles, then the bottom rows as 1 x NR and 1 x 1 tiles.
 * TILE(R, Cn, i, j) computes the R x Cn tile whose top-left output is (i, j); R and Cn are always
 * literal constants here, so an always-inline tile function unrolls completely for each shape. */
#ifndef BNHW_TILING_H
#define BNHW_TILING_H

#define BNHW_FOR_TILES(M, N, MR_, NR_, TILE)                                  \
    do {                                                                      \
        int i_ = 0, j_;                                                       \
        for (; i_ + (MR_) <= (M); i_ += (MR_)) {                              \
            for (j_ = 0; j_ + (NR_) <= (N); j_ += (NR_)) TILE(MR_, NR_, i_, j_); \
            for (; j_ < (N); j_++) TILE(MR_, 1, i_, j_);                      \
        }                                                                     \
        for (; i_ < (M); i_++) {                                              \
            for (j_ = 0; j_ + (NR_) <= (N); j_ += (NR_)) TILE(1, NR_, i_, j_); \
            for (; j_ < (N); j_++) TILE(1, 1, i_, j_);                        \
        }                                                                     \
    } while (0)

/* The loop over the 64-bit words of bnhw_pack's output: for every row and group, FULL(xw, tw) packs 64
 * channels and TAIL(xw, tw, cnt) the partial last word of cnt < 64 channels; xw points at the word's
 * first input, tw at its first threshold (NULL without thresholds). */
#define BNHW_FOR_PACK_WORDS(x, n, C, groups, thr, out, FULL, TAIL)                           \
    do {                                                                                     \
        int cg_ = (C) / (groups), wpg_ = bnhw_words(cg_);                                   \
        for (int p_ = 0; p_ < (n); p_++) {                                                   \
            const int32_t *xp_ = (x) + (size_t)p_ * (C);                                     \
            bnhw_word *o_ = (out) + (size_t)p_ * (groups) * wpg_;                             \
            for (int g_ = 0; g_ < (groups); g_++, o_ += wpg_) {                              \
                const int32_t *xg_ = xp_ + (size_t)g_ * cg_;                                 \
                const int32_t *tg_ = (thr) ? (thr) + (size_t)g_ * cg_ : NULL;                \
                int w_ = 0;                                                                  \
                for (; (w_ + 1) * BNHW_WORD_BITS <= cg_; w_++)                               \
                    o_[w_] = FULL(xg_ + w_ * BNHW_WORD_BITS, tg_ ? tg_ + w_ * BNHW_WORD_BITS : NULL); \
                if (w_ < wpg_)                                                               \
                    o_[w_] = TAIL(xg_ + w_ * BNHW_WORD_BITS, tg_ ? tg_ + w_ * BNHW_WORD_BITS : NULL, \
                                  cg_ - w_ * BNHW_WORD_BITS);                                \
            }                                                                                \
        }                                                                                    \
    } while (0)

#endif
