// hrtrain mean squared error over all elements of a [rows, outputs] prediction.
//
//   loss = (1/n) sum_i (p_i - t_i)^2,      grad_i = 2 (p_i - t_i) / n,      n = rows * outputs
//
// One work-group of LOSS_LANES work-items: lane l handles i = l, l + LOSS_LANES, ... in order, then a
// fixed tree combines the lanes: deterministic. The loss is written to loss[loss_off], so a whole epoch's
// per-step losses can stay on the device and be read back once.
// Launch: global = local = LOSS_LANES (a power of two).

#ifndef LOSS_LANES
#define LOSS_LANES 256
#endif

// Sums one value per lane over the LOSS_LANES lanes of the work-group by a fixed tree (deterministic). Every lane
// must call it; the total is returned in lane 0 (0 elsewhere, which never reads the other lanes' slots).
inline float lane_total(__local float *partial, const float value) {
    const int l = get_local_id(0);
    partial[l] = value;
    for (int stride = LOSS_LANES / 2; stride > 0; stride >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (l < stride) partial[l] += partial[l + stride];
    }
    return l == 0 ? partial[0] : 0.0f;
}

__kernel void kernel_mse_loss_grad_f32(__global const float *p, const int p_off,
                                       __global const float *t, const int t_off,
                                       __global float *grad, const int grad_off,
                                       __global float *loss, const int loss_off, const int n) {
    __local float partial[LOSS_LANES];
    const int l = get_local_id(0);
    const float scale = 2.0f / (float)n;
    float acc = 0.0f;
    for (int i = l; i < n; i += LOSS_LANES) {
        const float d = p[p_off + i] - t[t_off + i];
        grad[grad_off + i] = scale * d;
        acc += d * d;
    }
    const float total = lane_total(partial, acc);
    if (l == 0) loss[loss_off] = total / (float)n;
}

// The output layer's bias, the MSE and the output bias gradient of a training step in one launch:
//
//   p = z + b (row-wise; p may be z),   loss and grad as kernel_mse_loss_grad_f32,   bias_grad[c] = sum_r grad[r, c]
//
// One work-group of LOSS_LANES work-items: the loss as above (same lanes, same tree), then per column the lanes
// take rows l, l + LOSS_LANES, ... of the gradient the group has just written (after a barrier) and a fixed tree
// combines them: deterministic. Launch: global = local = LOSS_LANES.
__kernel void kernel_bias_mse_loss_grad_f32(__global const float *z, const int z_off,
                                            __global const float *b, const int b_off,
                                            __global const float *t, const int t_off,
                                            __global float *p, const int p_off,
                                            __global float *grad, const int grad_off,
                                            __global float *bias_grad, const int bias_grad_off,
                                            __global float *loss, const int loss_off,
                                            const int rows, const int cols) {
    __local float partial[LOSS_LANES];
    const int l = get_local_id(0);
    const int n = rows * cols;
    const float scale = 2.0f / (float)n;
    float acc = 0.0f;
    for (int i = l; i < n; i += LOSS_LANES) {
        const float prediction = z[z_off + i] + b[b_off + i % cols];
        p[p_off + i] = prediction;
        const float d = prediction - t[t_off + i];
        grad[grad_off + i] = scale * d;
        acc += d * d;
    }
    const float total = lane_total(partial, acc);
    if (l == 0) loss[loss_off] = total / (float)n;
    for (int c = 0; c < cols; ++c) {
        barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);
        float sum = 0.0f;
        for (int r = l; r < rows; r += LOSS_LANES) sum += grad[grad_off + r * cols + c];
        const float column_total = lane_total(partial, sum);
        if (l == 0) bias_grad[bias_grad_off + c] = column_total;
    }
}

// Weighted mean squared error of a [rows, cols] prediction with one weight per row:
//
//   W = sum_r w_r,   loss = sum_r w_r sum_c (p_rc - t_rc)^2 / (cols W),   grad_rc = 2 w_r (p_rc - t_rc) / (cols W)
//
// One work-group of LOSS_LANES work-items. Pass 1: lane l takes rows l, l + LOSS_LANES, ... in order and sums
// w_r and w_r * sum_c d^2; a fixed tree combines both sums (deterministic). Pass 2: every lane writes the
// gradient of its rows with the combined W. Launch: global = local = LOSS_LANES.
__kernel void kernel_weighted_mse_loss_grad_f32(__global const float *p, const int p_off,
                                                __global const float *t, const int t_off,
                                                __global const float *w, const int w_off,
                                                __global float *grad, const int grad_off,
                                                __global float *loss, const int loss_off,
                                                const int rows, const int cols) {
    __local float partial[LOSS_LANES];
    __local float weight_partial[LOSS_LANES];
    const int l = get_local_id(0);
    float acc = 0.0f;
    float weight_acc = 0.0f;
    for (int r = l; r < rows; r += LOSS_LANES) {
        float row_acc = 0.0f;
        for (int c = 0; c < cols; ++c) {
            const float d = p[p_off + r * cols + c] - t[t_off + r * cols + c];
            row_acc += d * d;
        }
        const float wr = w[w_off + r];
        acc += wr * row_acc;
        weight_acc += wr;
    }
    partial[l] = acc;
    weight_partial[l] = weight_acc;
    for (int stride = LOSS_LANES / 2; stride > 0; stride >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (l < stride) {
            partial[l] += partial[l + stride];
            weight_partial[l] += weight_partial[l + stride];
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const float normalisation = (float)cols * weight_partial[0];
    const float scale = 2.0f / normalisation;
    for (int r = l; r < rows; r += LOSS_LANES) {
        const float wr = scale * w[w_off + r];
        for (int c = 0; c < cols; ++c) {
            const int i = r * cols + c;
            grad[grad_off + i] = wr * (p[p_off + i] - t[t_off + i]);
        }
    }
    if (l == 0) loss[loss_off] = partial[0] / normalisation;
}
