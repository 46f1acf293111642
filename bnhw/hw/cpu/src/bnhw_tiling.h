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

#endif
