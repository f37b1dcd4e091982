// The CPU backend's fused hidden-block kernels, included by cpukernels.c once per vector level, each time
// compiled for that level's instruction set (the `target` attribute pushed around the #include) and named
// with KERNEL(name). Every function computes lane by lane the operation sequence of its Swift twin in
// CPUKernels.swift (same formulas, same order, no contraction into FMA), so all levels give bitwise the
// Swift results; only the width of the registers differs.

static inline __attribute__((always_inline)) v16 KERNEL(load)(const float *p, int n) {
    v16 v;
    if (n == 16) {
        memcpy(&v, p, sizeof v);
    } else {
        v = splat(0);
        memcpy(&v, p, (size_t)n * sizeof(float));
    }
    return v;
}

static inline __attribute__((always_inline)) void KERNEL(store)(v16 v, float *p, int n) {
    memcpy(p, &v, (size_t)(n == 16 ? 16 : n) * sizeof(float));
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

/// CPUKernels.hiddenBlockForward for the strip of n ≤ 16 columns from c0 (training mode). The mean is summed
/// while `saved` is written (the same values, in the same blocks and order as a separate pass would sum them).
static void KERNEL(block_forward_strip)(int tanh_first, const float *z, const float *bias, long rows, long cols,
                                        long c0, int n, const cpushim_batch_norm *bn, float *saved, float *y) {
    v16 b = KERNEL(load)(bias + c0, n);
    v16 total = splat(0);
    long r = 0;
    while (r < rows) {
        v16 block = splat(0);
        long end = rows < r + SUM_BLOCK ? rows : r + SUM_BLOCK;
        for (; r < end; ++r) {
            v16 u = KERNEL(load)(z + r * cols + c0, n) + b;
            v16 s = tanh_first ? KERNEL(tanh)(u) : u;
            KERNEL(store)(s, saved + r * cols + c0, n);
            block += s;
        }
        total += block;
    }
    float count = (float)rows;
    v16 mean = total / splat(count);
    total = splat(0);
    r = 0;
    while (r < rows) {
        v16 block = splat(0);
        long end = rows < r + SUM_BLOCK ? rows : r + SUM_BLOCK;
        for (; r < end; ++r) {
            v16 d = KERNEL(load)(saved + r * cols + c0, n) - mean;
            block += d * d;
        }
        total += block;
    }
    v16 variance = total / splat(count);
    v16 inverse_std = splat(1) / vsqrt(variance + splat(bn->epsilon));
    KERNEL(store)(mean, bn->saved_mean + c0, n);
    KERNEL(store)(inverse_std, bn->saved_inverse_std + c0, n);
    float f = bn->update_factor;
    v16 stored = bn->unbiased ? variance * splat(count / (float)(rows - 1)) : variance;
    v16 keep = splat(1 - f);
    KERNEL(store)(keep * KERNEL(load)(bn->running_mean + c0, n) + splat(f) * mean, bn->running_mean + c0, n);
    KERNEL(store)(keep * KERNEL(load)(bn->running_variance + c0, n) + splat(f) * stored, bn->running_variance + c0,
                  n);
    v16 g = KERNEL(load)(bn->gamma + c0, n) * inverse_std;
    v16 shift = KERNEL(load)(bn->beta + c0, n);
    for (r = 0; r < rows; ++r) {
        v16 v = g * (KERNEL(load)(saved + r * cols + c0, n) - mean) + shift;
        KERNEL(store)(tanh_first ? v : KERNEL(tanh)(v), y + r * cols + c0, n);
    }
}

/// CPUKernels.batchNormBackward for the strip of n ≤ 16 columns from c0.
static void KERNEL(block_backward_strip)(const cpushim_block_backward *a, long rows, long cols, long c0, int n) {
    const float *dy = a->output_gradient, *x = a->input, *ty = a->tanh_output;
#define GRADIENT(r)                                                                                                \
    (ty ? KERNEL(load)(dy + (r) * cols + c0, n) *                                                                 \
              (splat(1) - KERNEL(load)(ty + (r) * cols + c0, n) * KERNEL(load)(ty + (r) * cols + c0, n))          \
        : KERNEL(load)(dy + (r) * cols + c0, n))
    v16 m = KERNEL(load)(a->saved_mean + c0, n);
    v16 s = KERNEL(load)(a->saved_inverse_std + c0, n);
    v16 sum_g = splat(0), sum_g_xhat = splat(0);
    long r = 0;
    while (r < rows) {
        v16 block_g = splat(0), block_g_xhat = splat(0);
        long end = rows < r + SUM_BLOCK ? rows : r + SUM_BLOCK;
        for (; r < end; ++r) {
            v16 gv = GRADIENT(r);
            block_g += gv;
            block_g_xhat += gv * ((KERNEL(load)(x + r * cols + c0, n) - m) * s);
        }
        sum_g += block_g;
        sum_g_xhat += block_g_xhat;
    }
    KERNEL(store)(sum_g, a->beta_gradient + c0, n);
    KERNEL(store)(sum_g_xhat, a->gamma_gradient + c0, n);
    float count = (float)rows;
    v16 k = KERNEL(load)(a->gamma + c0, n) * s / splat(count);
    v16 total = splat(0);
    r = 0;
    while (r < rows) {
        v16 block = splat(0);
        long end = rows < r + SUM_BLOCK ? rows : r + SUM_BLOCK;
        for (; r < end; ++r) {
            v16 xv = KERNEL(load)(x + r * cols + c0, n);
            v16 d = k * (splat(count) * GRADIENT(r) - sum_g - (xv - m) * s * sum_g_xhat);
            if (a->tanh_input) d *= splat(1) - xv * xv;
            KERNEL(store)(d, a->input_gradient + r * cols + c0, n);
            block += d;
        }
        total += block;
    }
    if (a->bias_gradient) KERNEL(store)(total, a->bias_gradient + c0, n);
#undef GRADIENT
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
