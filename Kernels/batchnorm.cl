// hrtrain batch normalisation (Ioffe & Szegedy 2015), over the rows of a [rows, cols] matrix.
//
// Kernels:
//   kernel_batchnorm_stats_f32     training mode: batch mean and biased variance per column (two passes,
//                                  deterministic tree), saves mean and 1/sqrt(var + eps) for the backward
//                                  pass, updates the running statistics
//   kernel_batchnorm_apply_f32     y = gamma * (x - mean) * invstd + beta   (training: batch stats;
//                                  inference: the running statistics are turned into mean/invstd first)
//   kernel_batchnorm_invstd_f32    inference helper: invstd[c] = 1/sqrt(running_var[c] + eps)
//   kernel_batchnorm_backward_reduce_f32   dbeta = sum dy, dgamma = sum dy * xhat
//   kernel_batchnorm_backward_dx_f32       dx = gamma*invstd/N * (N dy - sum dy - xhat * sum dy*xhat)
//
// Running statistics: m <- (1 - f) m + f * mean,  v <- (1 - f) v + f * var_stored, where f is the update
// factor (Keras momentum 0.99 -> f = 0.01; PyTorch momentum 0.1 -> f = 0.1) and var_stored is the biased
// variance (Keras) or the unbiased one, var * N / (N - 1) (PyTorch).
//
// The reductions use the local layout and tree_sum of reduce.cl (COL_TILE columns x ROW_LANES row lanes),
// which is built before this file.

__kernel void kernel_batchnorm_stats_f32(__global const float *x, const int x_off,
                                         __global float *save_mean, const int save_mean_off,
                                         __global float *save_invstd, const int save_invstd_off,
                                         __global float *running_mean, const int running_mean_off,
                                         __global float *running_var, const int running_var_off,
                                         const int rows, const int cols, const float eps,
                                         const float update_factor, const int unbiased) {
    __local float partial[ROW_LANES][COL_TILE];
    const int lx = get_local_id(0), ly = get_local_id(1);
    const int c = get_group_id(0) * COL_TILE + lx;
    const bool active = c < cols;

    float acc = 0.0f;
    if (active)
        for (int r = ly; r < rows; r += ROW_LANES) acc += x[x_off + r * cols + c];
    partial[ly][lx] = acc;
    tree_sum(partial, lx, ly);
    const float mean = partial[0][lx] / (float)rows;
    barrier(CLK_LOCAL_MEM_FENCE);

    acc = 0.0f;
    if (active)
        for (int r = ly; r < rows; r += ROW_LANES) {
            const float d = x[x_off + r * cols + c] - mean;
            acc += d * d;
        }
    partial[ly][lx] = acc;
    tree_sum(partial, lx, ly);

    if (ly == 0 && active) {
        const float var = partial[0][lx] / (float)rows;
        save_mean[save_mean_off + c] = mean;
        save_invstd[save_invstd_off + c] = 1.0f / sqrt(var + eps);
        const float stored = unbiased ? var * ((float)rows / (float)(rows - 1)) : var;
        running_mean[running_mean_off + c] =
            (1.0f - update_factor) * running_mean[running_mean_off + c] + update_factor * mean;
        running_var[running_var_off + c] =
            (1.0f - update_factor) * running_var[running_var_off + c] + update_factor * stored;
    }
}

__kernel void kernel_batchnorm_invstd_f32(__global const float *var, const int var_off,
                                          __global float *invstd, const int invstd_off,
                                          const float eps, const int n) {
    const int i = get_global_id(0);
    if (i >= n) return;
    invstd[invstd_off + i] = 1.0f / sqrt(var[var_off + i] + eps);
}

__kernel void kernel_batchnorm_apply_f32(__global const float *x, const int x_off,
                                         __global const float *mean, const int mean_off,
                                         __global const float *invstd, const int invstd_off,
                                         __global const float *gamma, const int gamma_off,
                                         __global const float *beta, const int beta_off,
                                         __global float *y, const int y_off,
                                         const int rows, const int cols) {
    const int i = get_global_id(0);
    if (i >= rows * cols) return;
    const int c = i % cols;
    const float xhat = (x[x_off + i] - mean[mean_off + c]) * invstd[invstd_off + c];
    y[y_off + i] = gamma[gamma_off + c] * xhat + beta[beta_off + c];
}

__kernel void kernel_batchnorm_backward_reduce_f32(__global const float *dy, const int dy_off,
                                                   __global const float *x, const int x_off,
                                                   __global const float *mean, const int mean_off,
                                                   __global const float *invstd, const int invstd_off,
                                                   __global float *dgamma, const int dgamma_off,
                                                   __global float *dbeta, const int dbeta_off,
                                                   const int rows, const int cols) {
    __local float partial[ROW_LANES][COL_TILE];
    const int lx = get_local_id(0), ly = get_local_id(1);
    const int c = get_group_id(0) * COL_TILE + lx;
    const bool active = c < cols;
    const float m = active ? mean[mean_off + c] : 0.0f;
    const float s = active ? invstd[invstd_off + c] : 0.0f;

    float sum_dy = 0.0f, sum_dy_xhat = 0.0f;
    if (active)
        for (int r = ly; r < rows; r += ROW_LANES) {
            const float g = dy[dy_off + r * cols + c];
            sum_dy += g;
            sum_dy_xhat += g * (x[x_off + r * cols + c] - m) * s;
        }
    partial[ly][lx] = sum_dy;
    tree_sum(partial, lx, ly);
    if (ly == 0 && active) dbeta[dbeta_off + c] = partial[0][lx];
    barrier(CLK_LOCAL_MEM_FENCE);
    partial[ly][lx] = sum_dy_xhat;
    tree_sum(partial, lx, ly);
    if (ly == 0 && active) dgamma[dgamma_off + c] = partial[0][lx];
}

// Uses dgamma (= sum dy*xhat) and dbeta (= sum dy) written by the reduce kernel.
__kernel void kernel_batchnorm_backward_dx_f32(__global const float *dy, const int dy_off,
                                               __global const float *x, const int x_off,
                                               __global const float *mean, const int mean_off,
                                               __global const float *invstd, const int invstd_off,
                                               __global const float *gamma, const int gamma_off,
                                               __global const float *dgamma, const int dgamma_off,
                                               __global const float *dbeta, const int dbeta_off,
                                               __global float *dx, const int dx_off,
                                               const int rows, const int cols) {
    const int i = get_global_id(0);
    if (i >= rows * cols) return;
    const int c = i % cols;
    const float s = invstd[invstd_off + c];
    const float xhat = (x[x_off + i] - mean[mean_off + c]) * s;
    const float n = (float)rows;
    dx[dx_off + i] = gamma[gamma_off + c] * s / n *
                     (n * dy[dy_off + i] - dbeta[dbeta_off + c] - xhat * dgamma[dgamma_off + c]);
}
