// hrtrain column-strip kernels, for CPU devices (PoCL).
//
// One work-item owns a strip of 16 neighbouring columns (one float16: an AVX-512 register) and walks the
// rows in order, so every load and store is a contiguous 64-byte vector and there is no local memory and no
// barrier (both costly on CPU drivers). Sums run row by row in order: deterministic. The last strip of a
// matrix whose width is not a multiple of 16 is loaded and stored lane by lane (padding lanes hold zeros and
// are never written back).
//
// The fused kernels do a hidden block's whole non-GEMM work in one launch:
//   kernel_bias_tanh_bn_forward_strip_f32   dense-tanh-bn forward:  t = tanh(z + b);  y = BN(t)
//   kernel_bias_bn_tanh_forward_strip_f32   dense-bn-tanh forward:  u = z + b;  y = tanh(BN(u))
//   kernel_bn_tanh_backward_strip_f32       dense-tanh-bn backward: dt = BN'(dy);  dz = dt (1 - t^2);  db = sum dz
//   kernel_tanh_bn_backward_strip_f32       dense-bn-tanh backward: dn = dy (1 - y^2);  dz = BN'(dn);  db = sum dz
// with BN in training mode: batch mean and biased variance (two passes), saved mean and 1/sqrt(var + eps),
// running statistics m <- (1 - f) m + f mean, v <- (1 - f) v + f var_stored (unbiased: var N/(N-1)), and
//   dbeta = sum g,  dgamma = sum g xhat,  dx = gamma invstd / N (N g - sum g - xhat sum g xhat).
//
// Launch: global = ceil(cols / 16) work-items, 1-D, work-groups of 1.

#define STRIP 16
typedef float16 strip_t;

// The n (≤ 16) values at p, as a vector padded with zeros.
inline strip_t load_strip(__global const float *p, const int n) {
    if (n == STRIP) return vload16(0, p);
    float v[STRIP];
    for (int i = 0; i < STRIP; ++i) v[i] = i < n ? p[i] : 0.0f;
    return vload16(0, v);
}

// Stores the first n (≤ 16) lanes of v at p.
inline void store_strip(const strip_t v, __global float *p, const int n) {
    if (n == STRIP) {
        vstore16(v, 0, p);
        return;
    }
    float t[STRIP];
    vstore16(v, 0, t);
    for (int i = 0; i < n; ++i) p[i] = t[i];
}

__kernel void kernel_column_sums_strip_f32(__global const float *x, const int x_off,
                                           __global float *s, const int s_off,
                                           const int rows, const int cols) {
    const int c0 = get_global_id(0) * STRIP;
    if (c0 >= cols) return;
    const int n = min(STRIP, cols - c0);
    strip_t acc = 0.0f;
    for (int r = 0; r < rows; ++r) acc += load_strip(x + x_off + r * cols + c0, n);
    store_strip(acc, s + s_off + c0, n);
}

// Batch mean and biased variance of the strip at v (two passes), the saved statistics, the running update.
inline void strip_statistics(__global const float *v, const int c0, const int n, const int rows, const int cols,
                             const float eps, const float update_factor, const int unbiased,
                             strip_t *mean_out, strip_t *invstd_out,
                             __global float *save_mean, __global float *save_invstd,
                             __global float *running_mean, __global float *running_var) {
    strip_t sum = 0.0f;
    for (int r = 0; r < rows; ++r) sum += load_strip(v + r * cols + c0, n);
    const strip_t mean = sum / (float)rows;
    strip_t squares = 0.0f;
    for (int r = 0; r < rows; ++r) {
        const strip_t d = load_strip(v + r * cols + c0, n) - mean;
        squares += d * d;
    }
    const strip_t var = squares / (float)rows;
    const strip_t invstd = 1.0f / sqrt(var + eps);
    store_strip(mean, save_mean, n);
    store_strip(invstd, save_invstd, n);
    const strip_t stored = unbiased ? var * ((float)rows / (float)(rows - 1)) : var;
    store_strip((1.0f - update_factor) * load_strip(running_mean, n) + update_factor * mean, running_mean, n);
    store_strip((1.0f - update_factor) * load_strip(running_var, n) + update_factor * stored, running_var, n);
    *mean_out = mean;
    *invstd_out = invstd;
}

__kernel void kernel_bias_tanh_bn_forward_strip_f32(
    __global const float *z, const int z_off, __global const float *b, const int b_off,
    __global const float *gamma, const int gamma_off, __global const float *beta, const int beta_off,
    __global float *t, const int t_off, __global float *y, const int y_off,
    __global float *save_mean, const int save_mean_off, __global float *save_invstd, const int save_invstd_off,
    __global float *running_mean, const int running_mean_off, __global float *running_var, const int running_var_off,
    const int rows, const int cols, const float eps, const float update_factor, const int unbiased) {
    const int c0 = get_global_id(0) * STRIP;
    if (c0 >= cols) return;
    const int n = min(STRIP, cols - c0);
    const strip_t bias = load_strip(b + b_off + c0, n);
    for (int r = 0; r < rows; ++r)
        store_strip(tanh(load_strip(z + z_off + r * cols + c0, n) + bias), t + t_off + r * cols + c0, n);
    strip_t mean, invstd;
    strip_statistics(t + t_off, c0, n, rows, cols, eps, update_factor, unbiased, &mean, &invstd,
                     save_mean + save_mean_off + c0, save_invstd + save_invstd_off + c0,
                     running_mean + running_mean_off + c0, running_var + running_var_off + c0);
    const strip_t g = load_strip(gamma + gamma_off + c0, n) * invstd, shift = load_strip(beta + beta_off + c0, n);
    for (int r = 0; r < rows; ++r)
        store_strip(g * (load_strip(t + t_off + r * cols + c0, n) - mean) + shift, y + y_off + r * cols + c0, n);
}

__kernel void kernel_bias_bn_tanh_forward_strip_f32(
    __global const float *z, const int z_off, __global const float *b, const int b_off,
    __global const float *gamma, const int gamma_off, __global const float *beta, const int beta_off,
    __global float *u, const int u_off, __global float *y, const int y_off,
    __global float *save_mean, const int save_mean_off, __global float *save_invstd, const int save_invstd_off,
    __global float *running_mean, const int running_mean_off, __global float *running_var, const int running_var_off,
    const int rows, const int cols, const float eps, const float update_factor, const int unbiased) {
    const int c0 = get_global_id(0) * STRIP;
    if (c0 >= cols) return;
    const int n = min(STRIP, cols - c0);
    const strip_t bias = load_strip(b + b_off + c0, n);
    for (int r = 0; r < rows; ++r)
        store_strip(load_strip(z + z_off + r * cols + c0, n) + bias, u + u_off + r * cols + c0, n);
    strip_t mean, invstd;
    strip_statistics(u + u_off, c0, n, rows, cols, eps, update_factor, unbiased, &mean, &invstd,
                     save_mean + save_mean_off + c0, save_invstd + save_invstd_off + c0,
                     running_mean + running_mean_off + c0, running_var + running_var_off + c0);
    const strip_t g = load_strip(gamma + gamma_off + c0, n) * invstd, shift = load_strip(beta + beta_off + c0, n);
    for (int r = 0; r < rows; ++r)
        store_strip(tanh(g * (load_strip(u + u_off + r * cols + c0, n) - mean) + shift), y + y_off + r * cols + c0, n);
}

__kernel void kernel_bn_tanh_backward_strip_f32(
    __global const float *dy, const int dy_off, __global const float *t, const int t_off,
    __global const float *mean, const int mean_off, __global const float *invstd, const int invstd_off,
    __global const float *gamma, const int gamma_off,
    __global float *dz, const int dz_off, __global float *dgamma, const int dgamma_off,
    __global float *dbeta, const int dbeta_off, __global float *dbias, const int dbias_off,
    const int rows, const int cols) {
    const int c0 = get_global_id(0) * STRIP;
    if (c0 >= cols) return;
    const int n = min(STRIP, cols - c0);
    const strip_t m = load_strip(mean + mean_off + c0, n), s = load_strip(invstd + invstd_off + c0, n);
    strip_t sum_g = 0.0f, sum_g_xhat = 0.0f;
    for (int r = 0; r < rows; ++r) {
        const strip_t g = load_strip(dy + dy_off + r * cols + c0, n);
        sum_g += g;
        sum_g_xhat += g * (load_strip(t + t_off + r * cols + c0, n) - m) * s;
    }
    store_strip(sum_g, dbeta + dbeta_off + c0, n);
    store_strip(sum_g_xhat, dgamma + dgamma_off + c0, n);
    const float rowsf = (float)rows;
    const strip_t k = load_strip(gamma + gamma_off + c0, n) * s / rowsf;
    strip_t sum_dz = 0.0f;
    for (int r = 0; r < rows; ++r) {
        const strip_t tv = load_strip(t + t_off + r * cols + c0, n);
        const strip_t dx = k * (rowsf * load_strip(dy + dy_off + r * cols + c0, n) - sum_g - (tv - m) * s * sum_g_xhat);
        const strip_t d = dx * (1.0f - tv * tv);
        store_strip(d, dz + dz_off + r * cols + c0, n);
        sum_dz += d;
    }
    store_strip(sum_dz, dbias + dbias_off + c0, n);
}

__kernel void kernel_tanh_bn_backward_strip_f32(
    __global const float *dy, const int dy_off, __global const float *y, const int y_off,
    __global const float *u, const int u_off,
    __global const float *mean, const int mean_off, __global const float *invstd, const int invstd_off,
    __global const float *gamma, const int gamma_off,
    __global float *dz, const int dz_off, __global float *dgamma, const int dgamma_off,
    __global float *dbeta, const int dbeta_off, __global float *dbias, const int dbias_off,
    const int rows, const int cols) {
    const int c0 = get_global_id(0) * STRIP;
    if (c0 >= cols) return;
    const int n = min(STRIP, cols - c0);
    const strip_t m = load_strip(mean + mean_off + c0, n), s = load_strip(invstd + invstd_off + c0, n);
    strip_t sum_g = 0.0f, sum_g_xhat = 0.0f;
    for (int r = 0; r < rows; ++r) {
        const strip_t yv = load_strip(y + y_off + r * cols + c0, n);
        const strip_t g = load_strip(dy + dy_off + r * cols + c0, n) * (1.0f - yv * yv);
        sum_g += g;
        sum_g_xhat += g * (load_strip(u + u_off + r * cols + c0, n) - m) * s;
    }
    store_strip(sum_g, dbeta + dbeta_off + c0, n);
    store_strip(sum_g_xhat, dgamma + dgamma_off + c0, n);
    const float rowsf = (float)rows;
    const strip_t k = load_strip(gamma + gamma_off + c0, n) * s / rowsf;
    strip_t sum_dz = 0.0f;
    for (int r = 0; r < rows; ++r) {
        const strip_t yv = load_strip(y + y_off + r * cols + c0, n);
        const strip_t g = load_strip(dy + dy_off + r * cols + c0, n) * (1.0f - yv * yv);
        const strip_t d = k * (rowsf * g - sum_g - (load_strip(u + u_off + r * cols + c0, n) - m) * s * sum_g_xhat);
        store_strip(d, dz + dz_off + r * cols + c0, n);
        sum_dz += d;
    }
    store_strip(sum_dz, dbias + dbias_off + c0, n);
}
