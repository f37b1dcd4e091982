// The CPU backend's fused hidden-block kernels, included by cpukernels.c once per vector level, each time
// compiled for that level's instruction set (the `target` attribute pushed around the #include) and named
// with KERNEL(name). Every function computes lane by lane the operation sequence of its Swift twin in
// CPUKernels.swift (same formulas, same order, no contraction into FMA), so all levels give bitwise the
// Swift results; only the width of the registers differs.

// Whole vectors move with a fixed-size memcpy (one unaligned vector load or store); a partial strip's lanes
// move one by one. A variable-size memcpy would be a library call per vector, spilling every live register.
static inline __attribute__((always_inline)) v16 KERNEL(load)(const float *p, int n) {
    v16 v;
    if (__builtin_expect(n == 16, 1)) {
        memcpy(&v, p, sizeof v);
    } else {
        v = splat(0);
        for (int i = 0; i < n; ++i) v[i] = p[i];
    }
    return v;
}

static inline __attribute__((always_inline)) void KERNEL(store)(v16 v, float *p, int n) {
    if (__builtin_expect(n == 16, 1)) {
        memcpy(p, &v, sizeof v);
    } else {
        for (int i = 0; i < n; ++i) p[i] = v[i];
    }
}

/// CPUKernels.tanh: Eigen's 13/6 rational approximation on x clamped to ±limit; x itself below |x| = tiny.
static inline __attribute__((always_inline)) v16 KERNEL(tanh)(v16 x) {
    const float *k = tanh_constants;
    v16 limit = splat(k[0]), negative_limit = splat(-k[0]);
    v16 c = select(x > limit, limit, x);
    c = select(c < negative_limit, negative_limit, c);
    v16 x2 = c * c;
    v16 p = x2 * splat(k[1]) + splat(k[2]);
    p = p * x2 + splat(k[3]);
    p = p * x2 + splat(k[4]);
    p = p * x2 + splat(k[5]);
    p = p * x2 + splat(k[6]);
    p = p * x2 + splat(k[7]);
    p = p * c;
    v16 q = x2 * splat(k[8]) + splat(k[9]);
    q = q * x2 + splat(k[10]);
    q = q * x2 + splat(k[11]);
    v16 t = p / q;
    v16 tiny = splat(k[12]), negative_tiny = splat(-k[12]);
    return select((x < tiny) & (x > negative_tiny), x, t);
}

/// CPUKernels.hiddenBlockInference for rows r0..<r1, all columns.
static void KERNEL(block_inference_rows)(int tanh_first, const float *z, const float *bias, long r0, long r1,
                                         long cols, const cpushim_batch_norm *bn, float *norm_input, float *y) {
    for (long c0 = 0; c0 < cols; c0 += 16) {
        int n = cols - c0 < 16 ? (int)(cols - c0) : 16;
        v16 b = KERNEL(load)(bias + c0, n);
        v16 s = KERNEL(load)(bn->gamma + c0, n) /
                vsqrt(KERNEL(load)(bn->running_variance + c0, n) + splat(bn->epsilon));
        v16 m = KERNEL(load)(bn->running_mean + c0, n);
        v16 shift = KERNEL(load)(bn->beta + c0, n);
        for (long r = r0; r < r1; ++r) {
            v16 u = KERNEL(load)(z + r * cols + c0, n) + b;
            v16 t = tanh_first ? KERNEL(tanh)(u) : u;
            KERNEL(store)(t, norm_input + r * cols + c0, n);
            v16 v = s * (t - m) + shift;
            KERNEL(store)(tanh_first ? v : KERNEL(tanh)(v), y + r * cols + c0, n);
        }
    }
}

// MARK: row-major passes (the fused training forward and backward, in parallel over fixed row chunks)
//
// The same per-column sequences as the Swift strips of CPUKernels.swift, walked row by row: each 64-row
// block's sum of a column is accumulated in `sums[block · cols + c]` (0 + row r0 + row r0+1 + …, in row
// order) while whole rows stream through the cache; the caller adds the block sums in block order. A
// column's blocks are those of the Swift strips, so the totals are bitwise theirs, for any chunking and
// thread count.

/// saved = act(z + b) (tanh when tanh_first) for rows r0..<r1; sums[block] = Σ saved over each 64-row block.
static void KERNEL(forward_rows)(int tanh_first, const float *z, const float *bias, long r0, long r1, long cols,
                                 float *saved, float *sums) {
    for (long r = r0; r < r1; ++r) {
        float *acc = sums + (r / SUM_BLOCK) * cols;
        if (r % SUM_BLOCK == 0) memset(acc, 0, (size_t)cols * sizeof(float));
        for (long c0 = 0; c0 < cols; c0 += 16) {
            int n = cols - c0 < 16 ? (int)(cols - c0) : 16;
            v16 u = KERNEL(load)(z + r * cols + c0, n) + KERNEL(load)(bias + c0, n);
            v16 s = tanh_first ? KERNEL(tanh)(u) : u;
            KERNEL(store)(s, saved + r * cols + c0, n);
            KERNEL(store)(KERNEL(load)(acc + c0, n) + s, acc + c0, n);
        }
    }
}

/// sums[block] = Σ (saved − mean)² over each 64-row block of rows r0..<r1.
static void KERNEL(variance_rows)(const float *saved, const float *mean, long r0, long r1, long cols, float *sums) {
    for (long r = r0; r < r1; ++r) {
        float *acc = sums + (r / SUM_BLOCK) * cols;
        if (r % SUM_BLOCK == 0) memset(acc, 0, (size_t)cols * sizeof(float));
        for (long c0 = 0; c0 < cols; c0 += 16) {
            int n = cols - c0 < 16 ? (int)(cols - c0) : 16;
            v16 d = KERNEL(load)(saved + r * cols + c0, n) - KERNEL(load)(mean + c0, n);
            KERNEL(store)(KERNEL(load)(acc + c0, n) + d * d, acc + c0, n);
        }
    }
}

/// y = g (saved − mean) + shift, then tanh unless tanh_first, for rows r0..<r1.
static void KERNEL(output_rows)(int tanh_first, const float *saved, const float *mean, const float *g,
                                const float *shift, long r0, long r1, long cols, float *y) {
    for (long r = r0; r < r1; ++r) {
        for (long c0 = 0; c0 < cols; c0 += 16) {
            int n = cols - c0 < 16 ? (int)(cols - c0) : 16;
            v16 v = KERNEL(load)(g + c0, n) * (KERNEL(load)(saved + r * cols + c0, n) - KERNEL(load)(mean + c0, n)) +
                    KERNEL(load)(shift + c0, n);
            KERNEL(store)(tanh_first ? v : KERNEL(tanh)(v), y + r * cols + c0, n);
        }
    }
}

/// The gradient the batch norm sees at row r: dy, or dy (1 − y²) behind a tanh with output y.
static inline __attribute__((always_inline)) v16 KERNEL(gradient)(const cpushim_block_backward *a, long r,
                                                                  long cols, long c0, int n) {
    v16 d = KERNEL(load)(a->output_gradient + r * cols + c0, n);
    if (!a->tanh_output) return d;
    v16 y = KERNEL(load)(a->tanh_output + r * cols + c0, n);
    return d * (splat(1) - y * y);
}

/// sums_g[block] = Σ g, sums_gx[block] = Σ g (x − m) s over each 64-row block of rows r0..<r1.
static void KERNEL(backward_sums_rows)(const cpushim_block_backward *a, long r0, long r1, long cols, float *sums_g,
                                       float *sums_gx) {
    for (long r = r0; r < r1; ++r) {
        float *acc_g = sums_g + (r / SUM_BLOCK) * cols, *acc_gx = sums_gx + (r / SUM_BLOCK) * cols;
        if (r % SUM_BLOCK == 0) {
            memset(acc_g, 0, (size_t)cols * sizeof(float));
            memset(acc_gx, 0, (size_t)cols * sizeof(float));
        }
        for (long c0 = 0; c0 < cols; c0 += 16) {
            int n = cols - c0 < 16 ? (int)(cols - c0) : 16;
            v16 gv = KERNEL(gradient)(a, r, cols, c0, n);
            v16 xhat = (KERNEL(load)(a->input + r * cols + c0, n) - KERNEL(load)(a->saved_mean + c0, n)) *
                       KERNEL(load)(a->saved_inverse_std + c0, n);
            KERNEL(store)(KERNEL(load)(acc_g + c0, n) + gv, acc_g + c0, n);
            KERNEL(store)(KERNEL(load)(acc_gx + c0, n) + gv * xhat, acc_gx + c0, n);
        }
    }
}

/// dz = k (N g − Σg − (x − m) s Σgx), times (1 − x²) when tanh_input, for rows r0..<r1; sums[block] = Σ dz.
static void KERNEL(backward_rows)(const cpushim_block_backward *a, const float *k, const float *sum_g,
                                  const float *sum_gx, long rows, long r0, long r1, long cols, float *sums) {
    float count = (float)rows;
    for (long r = r0; r < r1; ++r) {
        float *acc = sums + (r / SUM_BLOCK) * cols;
        if (r % SUM_BLOCK == 0) memset(acc, 0, (size_t)cols * sizeof(float));
        for (long c0 = 0; c0 < cols; c0 += 16) {
            int n = cols - c0 < 16 ? (int)(cols - c0) : 16;
            v16 xv = KERNEL(load)(a->input + r * cols + c0, n);
            v16 m = KERNEL(load)(a->saved_mean + c0, n), s = KERNEL(load)(a->saved_inverse_std + c0, n);
            v16 gv = KERNEL(gradient)(a, r, cols, c0, n);
            v16 sg = KERNEL(load)(sum_g + c0, n), sgx = KERNEL(load)(sum_gx + c0, n);
            v16 d = KERNEL(load)(k + c0, n) * (splat(count) * gv - sg - (xv - m) * s * sgx);
            if (a->tanh_input) d *= splat(1) - xv * xv;
            KERNEL(store)(d, a->input_gradient + r * cols + c0, n);
            KERNEL(store)(KERNEL(load)(acc + c0, n) + d, acc + c0, n);
        }
    }
}
