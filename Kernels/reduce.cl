// hrtrain column reductions.
//
// Deterministic by construction: a work-group of COL_TILE x ROW_LANES work-items owns COL_TILE
// columns; lane `ly` sums rows ly, ly + ROW_LANES, ly + 2*ROW_LANES, ... in that order, then the
// ROW_LANES partial sums are combined by a fixed binary tree in local memory. No atomics, so the
// same inputs give the same bits on every run.
//
// Launch: local = (COL_TILE, ROW_LANES), global = (ceil(cols / COL_TILE) * COL_TILE, ROW_LANES).

#ifndef COL_TILE
#define COL_TILE 16
#endif
#ifndef ROW_LANES
#define ROW_LANES 16
#endif

// Tree-reduces partial[ly][lx] over ly; the total ends in partial[0][lx]. All work-items must call it.
inline void tree_sum(__local float partial[ROW_LANES][COL_TILE], const int lx, const int ly) {
    for (int stride = ROW_LANES / 2; stride > 0; stride >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (ly < stride) partial[ly][lx] += partial[ly + stride][lx];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

// s[c] = sum_r x[r, c]      (the bias gradient db = sum over rows of dz)
__kernel void kernel_column_sums_f32(__global const float *x, const int x_off,
                                     __global float *s, const int s_off,
                                     const int rows, const int cols) {
    __local float partial[ROW_LANES][COL_TILE];
    const int lx = get_local_id(0), ly = get_local_id(1);
    const int c = get_group_id(0) * COL_TILE + lx;
    float acc = 0.0f;
    if (c < cols)
        for (int r = ly; r < rows; r += ROW_LANES) acc += x[x_off + r * cols + c];
    partial[ly][lx] = acc;
    tree_sum(partial, lx, ly);
    if (ly == 0 && c < cols) s[s_off + c] = partial[0][lx];
}
