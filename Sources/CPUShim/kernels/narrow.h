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

/// C[i][j] = Σ_p A[p][i] · B[p][j] (C = Aᵀ·B, A is k × m) for j < width, columns i0 + 16h + lane of A for the
/// lanes[h] ≤ 16 lanes of each vector h0 ≤ h < h1: every row p reads one contiguous piece of A's row
/// ((h1 − h0) · 64 bytes), (h1 − h0) · width partial sums held in registers. Sums over fixed blocks of
/// NARROW_BLOCK rows (0 + row p0 + row p0+1 + …), the block sums added in block order (0 + block 0 + …).
static inline __attribute__((always_inline)) void KERNEL(narrow_transposed_width)(
    const float *a, long lda, const float *b, long ldb, long k, long n, long i0, const int *lanes, float *c,
    long ldc, int h0, int h1, int width) {
    v16 t[NARROW_VECTORS][NARROW_WIDTH];
    for (int h = h0; h < h1; ++h)
        for (int j = 0; j < width; ++j) t[h][j] = splat(0);
    for (long p0 = 0; p0 < k; p0 += NARROW_BLOCK) {
        long p1 = p0 + NARROW_BLOCK < k ? p0 + NARROW_BLOCK : k;
        v16 s[NARROW_VECTORS][NARROW_WIDTH];
        for (int h = h0; h < h1; ++h)
            for (int j = 0; j < width; ++j) s[h][j] = splat(0);
        for (long p = p0; p < p1; ++p) {
            float bv[NARROW_WIDTH] = {0};
            for (long j = 0; j < n; ++j) bv[j] = b[p * ldb + j];
            for (int h = h0; h < h1; ++h) {
                v16 x = lanes[h] > 0 ? KERNEL(load)(a + p * lda + i0 + 16 * h, lanes[h]) : splat(0);
                for (int j = 0; j < width; ++j) s[h][j] += x * splat(bv[j]);
            }
        }
        for (int h = h0; h < h1; ++h)
            for (int j = 0; j < width; ++j) t[h][j] += s[h][j];
    }
    for (int h = h0; h < h1; ++h) {
        float values[NARROW_WIDTH][16];
        for (int j = 0; j < width; ++j) memcpy(values[j], &t[h][j], sizeof values[j]);
        for (int i = 0; i < lanes[h]; ++i)
            for (long j = 0; j < n; ++j) c[(i0 + 16 * h + i) * ldc + j] = values[j][i];
    }
}

/// narrow_transposed_width for w ≤ 16 · NARROW_VECTORS columns from i0: all vectors in one walk over the rows
/// with 2 sums per row when n ≤ 2 (the recoil's x and y), else half of them per walk with NARROW_WIDTH sums (the
/// registers hold 16 partial sums at most). Each output element's sequence is the same either way.
static void KERNEL(narrow_transposed)(const float *a, long lda, const float *b, long ldb, long k, long n, long i0,
                                      int w, float *c, long ldc) {
    int lanes[NARROW_VECTORS];
    for (int h = 0; h < NARROW_VECTORS; ++h) {
        int rest = w - 16 * h;
        lanes[h] = rest < 0 ? 0 : rest < 16 ? rest : 16;
    }
    if (n <= 2) {
        KERNEL(narrow_transposed_width)(a, lda, b, ldb, k, n, i0, lanes, c, ldc, 0, NARROW_VECTORS, 2);
    } else {
        KERNEL(narrow_transposed_width)(a, lda, b, ldb, k, n, i0, lanes, c, ldc, 0, NARROW_VECTORS / 2, NARROW_WIDTH);
        KERNEL(narrow_transposed_width)(a, lda, b, ldb, k, n, i0, lanes, c, ldc, NARROW_VECTORS / 2, NARROW_VECTORS,
                                        NARROW_WIDTH);
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
