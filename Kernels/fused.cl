// hrtrain fused hidden-block kernels for GPUs (the `tiled` variant): a hidden block's whole non-GEMM work in
// one launch, like the column-strip kernels of columns.cl do it for CPU devices.
//
//   kernel_bias_tanh_bn_forward_tiled_f32   dense-tanh-bn forward:  t = tanh(z + b);  y = BN(t)
//   kernel_bias_bn_tanh_forward_tiled_f32   dense-bn-tanh forward:  u = z + b;  y = tanh(BN(u))
//   kernel_bn_tanh_backward_tiled_f32       dense-tanh-bn backward: dt = BN'(dy);  dz = dt (1 - t^2);  db = sum dz
//   kernel_tanh_bn_backward_tiled_f32       dense-bn-tanh backward: dn = dy (1 - y^2);  dz = BN'(dn);  db = sum dz
// with BN in training mode exactly as in columns.cl (two-pass batch mean and biased variance, saved mean and
// 1/sqrt(var + eps), running statistics m <- (1 - f) m + f mean, v <- (1 - f) v + f var_stored).
//
// Layout: a work-group of TILE x LANES work-items (TILE = get_local_size(0) neighbouring columns, LANES =
// get_local_size(1) row lanes, a power of two) owns TILE columns and all rows: lane ly walks rows ly, ly + LANES,
// ly + 2 LANES, ... in order, then the LANES partial sums of a column are combined by a fixed binary tree in
// local memory. No atomics: the same inputs and launch shape give the same bits on every run. Each work-item
// reads back only the elements it wrote itself (t, u, dz), so the passes over global memory need no barrier;
// the barriers guard the local-memory tree only, and every work-item (also those past the last column) reaches
// each of them.
//
// Launch: local = (TILE, LANES), global = (ceil(cols / TILE) * TILE, LANES); `partial` is local memory of
// 2 * TILE * LANES floats.

// The sums over the row lanes of a and b for column lx: fixed tree, the totals returned to every lane.
inline float2 lane_sums(__local float *partial, const float a, const float b) {
    const int lx = get_local_id(0), ly = get_local_id(1);
    const int tile = get_local_size(0), lanes = get_local_size(1);
    __local float *pa = partial, *pb = partial + tile * lanes;
    pa[ly * tile + lx] = a;
    pb[ly * tile + lx] = b;
    for (int stride = lanes / 2; stride > 0; stride >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (ly < stride) {
            pa[ly * tile + lx] += pa[(ly + stride) * tile + lx];
            pb[ly * tile + lx] += pb[(ly + stride) * tile + lx];
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const float2 totals = (float2)(pa[lx], pb[lx]);
    barrier(CLK_LOCAL_MEM_FENCE);  // `partial` is free again for the next call
    return totals;
}

// Batch statistics of column c of v (whose lane-ly rows this work-item wrote; `sum` is their sum so far),
// the saved mean and 1/sqrt(var + eps), and the running update (lane 0). Returns (mean, invstd).
inline float2 tiled_statistics(__local float *partial, __global const float *v, const float sum, const int c,
                               const bool active, const int rows, const int cols, const float eps,
                               const float update_factor, const int unbiased,
                               __global float *save_mean, __global float *save_invstd,
                               __global float *running_mean, __global float *running_var) {
    const int ly = get_local_id(1), lanes = get_local_size(1);
    const float mean = lane_sums(partial, sum, 0.0f).x / (float)rows;
    float squares = 0.0f;
    if (active)
        for (int r = ly; r < rows; r += lanes) {
            const float d = v[r * cols + c] - mean;
            squares += d * d;
        }
    const float var = lane_sums(partial, squares, 0.0f).x / (float)rows;
    const float invstd = 1.0f / sqrt(var + eps);
    if (ly == 0 && active) {
        save_mean[c] = mean;
        save_invstd[c] = invstd;
        const float stored = unbiased ? var * ((float)rows / (float)(rows - 1)) : var;
        running_mean[c] = (1.0f - update_factor) * running_mean[c] + update_factor * mean;
        running_var[c] = (1.0f - update_factor) * running_var[c] + update_factor * stored;
    }
    return (float2)(mean, invstd);
}

__kernel void kernel_bias_tanh_bn_forward_tiled_f32(
    __global const float *z, const int z_off, __global const float *b, const int b_off,
    __global const float *gamma, const int gamma_off, __global const float *beta, const int beta_off,
    __global float *t, const int t_off, __global float *y, const int y_off,
    __global float *save_mean, const int save_mean_off, __global float *save_invstd, const int save_invstd_off,
    __global float *running_mean, const int running_mean_off, __global float *running_var, const int running_var_off,
    const int rows, const int cols, const float eps, const float update_factor, const int unbiased,
    __local float *partial) {
    const int ly = get_local_id(1), lanes = get_local_size(1);
    const int c = get_global_id(0);
    const bool active = c < cols;
    const float bias = active ? b[b_off + c] : 0.0f;
    float sum = 0.0f;
    if (active)
        for (int r = ly; r < rows; r += lanes) {
            const float v = tanh(z[z_off + r * cols + c] + bias);
            t[t_off + r * cols + c] = v;
            sum += v;
        }
    const float2 s = tiled_statistics(partial, t + t_off, sum, c, active, rows, cols, eps, update_factor, unbiased,
                                      save_mean + save_mean_off, save_invstd + save_invstd_off,
                                      running_mean + running_mean_off, running_var + running_var_off);
    if (!active) return;
    const float g = gamma[gamma_off + c] * s.y, shift = beta[beta_off + c];
    for (int r = ly; r < rows; r += lanes) y[y_off + r * cols + c] = g * (t[t_off + r * cols + c] - s.x) + shift;
}

__kernel void kernel_bias_bn_tanh_forward_tiled_f32(
    __global const float *z, const int z_off, __global const float *b, const int b_off,
    __global const float *gamma, const int gamma_off, __global const float *beta, const int beta_off,
    __global float *u, const int u_off, __global float *y, const int y_off,
    __global float *save_mean, const int save_mean_off, __global float *save_invstd, const int save_invstd_off,
    __global float *running_mean, const int running_mean_off, __global float *running_var, const int running_var_off,
    const int rows, const int cols, const float eps, const float update_factor, const int unbiased,
    __local float *partial) {
    const int ly = get_local_id(1), lanes = get_local_size(1);
    const int c = get_global_id(0);
    const bool active = c < cols;
    const float bias = active ? b[b_off + c] : 0.0f;
    float sum = 0.0f;
    if (active)
        for (int r = ly; r < rows; r += lanes) {
            const float v = z[z_off + r * cols + c] + bias;
            u[u_off + r * cols + c] = v;
            sum += v;
        }
    const float2 s = tiled_statistics(partial, u + u_off, sum, c, active, rows, cols, eps, update_factor, unbiased,
                                      save_mean + save_mean_off, save_invstd + save_invstd_off,
                                      running_mean + running_mean_off, running_var + running_var_off);
    if (!active) return;
    const float g = gamma[gamma_off + c] * s.y, shift = beta[beta_off + c];
    for (int r = ly; r < rows; r += lanes)
        y[y_off + r * cols + c] = tanh(g * (u[u_off + r * cols + c] - s.x) + shift);
}

__kernel void kernel_bn_tanh_backward_tiled_f32(
    __global const float *dy, const int dy_off, __global const float *t, const int t_off,
    __global const float *mean, const int mean_off, __global const float *invstd, const int invstd_off,
    __global const float *gamma, const int gamma_off,
    __global float *dz, const int dz_off, __global float *dgamma, const int dgamma_off,
    __global float *dbeta, const int dbeta_off, __global float *dbias, const int dbias_off,
    const int rows, const int cols, __local float *partial) {
    const int ly = get_local_id(1), lanes = get_local_size(1);
    const int c = get_global_id(0);
    const bool active = c < cols;
    const float m = active ? mean[mean_off + c] : 0.0f, s = active ? invstd[invstd_off + c] : 0.0f;
    float sum_g = 0.0f, sum_g_xhat = 0.0f;
    if (active)
        for (int r = ly; r < rows; r += lanes) {
            const float g = dy[dy_off + r * cols + c];
            sum_g += g;
            sum_g_xhat += g * (t[t_off + r * cols + c] - m) * s;
        }
    const float2 sums = lane_sums(partial, sum_g, sum_g_xhat);
    const float rowsf = (float)rows;
    const float k = active ? gamma[gamma_off + c] * s / rowsf : 0.0f;
    float sum_dz = 0.0f;
    if (active)
        for (int r = ly; r < rows; r += lanes) {
            const float tv = t[t_off + r * cols + c];
            const float dx = k * (rowsf * dy[dy_off + r * cols + c] - sums.x - (tv - m) * s * sums.y);
            const float d = dx * (1.0f - tv * tv);
            dz[dz_off + r * cols + c] = d;
            sum_dz += d;
        }
    const float db = lane_sums(partial, sum_dz, 0.0f).x;
    if (ly == 0 && active) {
        dbeta[dbeta_off + c] = sums.x;
        dgamma[dgamma_off + c] = sums.y;
        dbias[dbias_off + c] = db;
    }
}

__kernel void kernel_tanh_bn_backward_tiled_f32(
    __global const float *dy, const int dy_off, __global const float *y, const int y_off,
    __global const float *u, const int u_off,
    __global const float *mean, const int mean_off, __global const float *invstd, const int invstd_off,
    __global const float *gamma, const int gamma_off,
    __global float *dz, const int dz_off, __global float *dgamma, const int dgamma_off,
    __global float *dbeta, const int dbeta_off, __global float *dbias, const int dbias_off,
    const int rows, const int cols, __local float *partial) {
    const int ly = get_local_id(1), lanes = get_local_size(1);
    const int c = get_global_id(0);
    const bool active = c < cols;
    const float m = active ? mean[mean_off + c] : 0.0f, s = active ? invstd[invstd_off + c] : 0.0f;
    float sum_g = 0.0f, sum_g_xhat = 0.0f;
    if (active)
        for (int r = ly; r < rows; r += lanes) {
            const float yv = y[y_off + r * cols + c];
            const float g = dy[dy_off + r * cols + c] * (1.0f - yv * yv);
            sum_g += g;
            sum_g_xhat += g * (u[u_off + r * cols + c] - m) * s;
        }
    const float2 sums = lane_sums(partial, sum_g, sum_g_xhat);
    const float rowsf = (float)rows;
    const float k = active ? gamma[gamma_off + c] * s / rowsf : 0.0f;
    float sum_dz = 0.0f;
    if (active)
        for (int r = ly; r < rows; r += lanes) {
            const float yv = y[y_off + r * cols + c];
            const float g = dy[dy_off + r * cols + c] * (1.0f - yv * yv);
            const float d = k * (rowsf * g - sums.x - (u[u_off + r * cols + c] - m) * s * sums.y);
            dz[dz_off + r * cols + c] = d;
            sum_dz += d;
        }
    const float db = lane_sums(partial, sum_dz, 0.0f).x;
    if (ly == 0 && active) {
        dbeta[dbeta_off + c] = sums.x;
        dgamma[dgamma_off + c] = sums.y;
        dbias[dbias_off + c] = db;
    }
}
