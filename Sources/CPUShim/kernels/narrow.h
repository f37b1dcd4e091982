// The narrow GEMMs of the output layer (2 outputs): C = A·B and C = Aᵀ·B with n ≤ 4, C = A·Bᵀ with k ≤ 4;
// included by cpukernels.c once per vector level like strips.h. A BLAS spends most of such a call packing and
// dispatching (BLIS: 6–22 GFLOP/s on the step's 4000×2×256 shapes); these read A once, in rows. Every output
// element is computed by one thread in an order fixed by the shapes alone, so results do not depend on the
// thread count.

/// The 16 lanes of `v` added in a fixed tree: ((l0 + l8) + (l4 + l12)) + … (halves, quarters, eighths, pairs).
static inline __attribute__((always_inline)) float KERNEL(lane_sum)(v16 v) {
    float l[16];
    memcpy(l, &v, sizeof l);
    for (int width = 8; width >= 1; width /= 2)
        for (int i = 0; i < width; ++i) l[i] += l[i + width];
    return l[0];
}

/// C[r][j] = Σ_p A[r][p] · B[p][j] for rows r0..<r1 and j < n ≤ NARROW_WIDTH; `bt` is Bᵀ, NARROW_WIDTH rows of
/// k floats (rows n… zero). Each row's 16-lane partial sums over p, then lane_sum.
static void KERNEL(narrow_rows)(const float *a, long lda, const float *bt, long k, long n, long r0, long r1,
                                float *c, long ldc) {
    for (long r = r0; r < r1; ++r) {
        const float *row = a + r * lda;
        v16 s0 = splat(0), s1 = splat(0), s2 = splat(0), s3 = splat(0);
        for (long p = 0; p < k; p += 16) {
            int w = k - p < 16 ? (int)(k - p) : 16;
            v16 x = KERNEL(load)(row + p, w);
            s0 += x * KERNEL(load)(bt + p, w);
            s1 += x * KERNEL(load)(bt + k + p, w);
            s2 += x * KERNEL(load)(bt + 2 * k + p, w);
            s3 += x * KERNEL(load)(bt + 3 * k + p, w);
        }
        float *out = c + r * ldc;
        out[0] = KERNEL(lane_sum)(s0);
        if (n > 1) out[1] = KERNEL(lane_sum)(s1);
        if (n > 2) out[2] = KERNEL(lane_sum)(s2);
        if (n > 3) out[3] = KERNEL(lane_sum)(s3);
    }
}

/// C[i][j] = Σ_p A[p][i] · B[p][j] (C = Aᵀ·B, A is k × m) for w ≤ 32 columns i0… of A, n ≤ NARROW_WIDTH;
/// sums over fixed blocks of NARROW_BLOCK rows, added in block order.
static void KERNEL(narrow_transposed)(const float *a, long lda, const float *b, long ldb, long k, long n, long i0,
                                      int w, float *c, long ldc) {
    int w0 = w < 16 ? w : 16, w1 = w - w0;
    v16 t[2][NARROW_WIDTH];
    for (int h = 0; h < 2; ++h)
        for (int j = 0; j < NARROW_WIDTH; ++j) t[h][j] = splat(0);
    for (long p0 = 0; p0 < k; p0 += NARROW_BLOCK) {
        long p1 = p0 + NARROW_BLOCK < k ? p0 + NARROW_BLOCK : k;
        v16 s[2][NARROW_WIDTH];
        for (int h = 0; h < 2; ++h)
            for (int j = 0; j < NARROW_WIDTH; ++j) s[h][j] = splat(0);
        for (long p = p0; p < p1; ++p) {
            float bv[NARROW_WIDTH] = {0};
            for (long j = 0; j < n; ++j) bv[j] = b[p * ldb + j];
            v16 x0 = KERNEL(load)(a + p * lda + i0, w0);
            v16 x1 = w1 > 0 ? KERNEL(load)(a + p * lda + i0 + 16, w1) : splat(0);
            for (int j = 0; j < NARROW_WIDTH; ++j) {
                s[0][j] += x0 * splat(bv[j]);
                s[1][j] += x1 * splat(bv[j]);
            }
        }
        for (int h = 0; h < 2; ++h)
            for (int j = 0; j < NARROW_WIDTH; ++j) t[h][j] += s[h][j];
    }
    for (int h = 0; h < 2; ++h) {
        float lanes[NARROW_WIDTH][16];
        for (int j = 0; j < NARROW_WIDTH; ++j) memcpy(lanes[j], &t[h][j], sizeof lanes[j]);
        for (int i = 0; i < (h == 0 ? w0 : w1); ++i)
            for (long j = 0; j < n; ++j) c[(i0 + 16 * h + i) * ldc + j] = lanes[j][i];
    }
}

/// C[r][i] = Σ_p A[r][p] · B[i][p] (C = A·Bᵀ) for rows r0..<r1, k ≤ NARROW_WIDTH: `bt` is Bᵀ (k rows of n);
/// each element 0 + a₀b₀ + a₁b₁ + … in p order.
static void KERNEL(narrow_outer)(const float *a, long lda, const float *bt, long k, long n, long r0, long r1,
                                 float *c, long ldc) {
    for (long r = r0; r < r1; ++r) {
        float av[NARROW_WIDTH] = {0};
        for (long p = 0; p < k; ++p) av[p] = a[r * lda + p];
        for (long c0 = 0; c0 < n; c0 += 16) {
            int w = n - c0 < 16 ? (int)(n - c0) : 16;
            v16 s = splat(0);
            for (long p = 0; p < k; ++p) s += splat(av[p]) * KERNEL(load)(bt + p * n + c0, w);
            KERNEL(store)(s, c + r * ldc + c0, w);
        }
    }
}
