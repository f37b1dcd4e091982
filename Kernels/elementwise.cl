// hrtrain elementwise kernels: bias add, tanh (fused with the bias), tanh backward, row gather,
// StandardScaler transform, fill and copy.
//
// Conventions for every kernel in Kernels/*.cl:
//   * tensors are Float32, row-major; a matrix argument `x` of shape [rows, cols] comes with an
//     element offset `x_off` into its buffer (parameters and gradients live in one flat buffer);
//   * the launch size may be rounded up to a multiple of the work-group size, so every kernel checks
//     its index against the true size;
//   * no fast-math: the verify path compares against a Double reference.

// y[r, c] = z[r, c] + b[c]                                   global: rows * cols (1-D)
__kernel void kernel_bias_add_f32(__global const float *z, const int z_off,
                                  __global const float *b, const int b_off,
                                  __global float *y, const int y_off,
                                  const int rows, const int cols) {
    const int i = get_global_id(0);
    if (i >= rows * cols) return;
    y[y_off + i] = z[z_off + i] + b[b_off + i % cols];
}

// y[r, c] = tanh(z[r, c] + b[c])   (bias add fused with the activation)
__kernel void kernel_bias_tanh_f32(__global const float *z, const int z_off,
                                   __global const float *b, const int b_off,
                                   __global float *y, const int y_off,
                                   const int rows, const int cols) {
    const int i = get_global_id(0);
    if (i >= rows * cols) return;
    y[y_off + i] = tanh(z[z_off + i] + b[b_off + i % cols]);
}

// y = tanh(x), elementwise over n values
__kernel void kernel_tanh_f32(__global const float *x, const int x_off,
                              __global float *y, const int y_off, const int n) {
    const int i = get_global_id(0);
    if (i >= n) return;
    y[y_off + i] = tanh(x[x_off + i]);
}

// dz = dy * (1 - y^2), with y the stored tanh output
__kernel void kernel_tanh_backward_f32(__global const float *dy, const int dy_off,
                                       __global const float *y, const int y_off,
                                       __global float *dz, const int dz_off, const int n) {
    const int i = get_global_id(0);
    if (i >= n) return;
    const float t = y[y_off + i];
    dz[dz_off + i] = dy[dy_off + i] * (1.0f - t * t);
}

// out[r, :] = src[idx[r], :]     (shuffled minibatch rows)     global: rows * cols (1-D)
__kernel void kernel_gather_rows_f32(__global const float *src, const int src_off,
                                     __global const int *idx, const int idx_off,
                                     __global float *out, const int out_off,
                                     const int rows, const int cols) {
    const int i = get_global_id(0);
    if (i >= rows * cols) return;
    const int r = i / cols;
    const int c = i - r * cols;
    const long s = (long)idx[idx_off + r] * cols + c;
    out[out_off + i] = src[src_off + s];
}

// The same rows of up to three sources in one launch (a batch's features, targets and weights):
//   out_j[r, c] = src_j[idx[idx_off + r], c]   for j = 0, 1, 2 with cols_j columns (cols_j = 0: slot unused).
// One work-item per (row, column of the three side by side).
__kernel void kernel_gather_rows3_f32(__global const float *src0, const int src0_off,
                                      __global float *out0, const int out0_off, const int cols0,
                                      __global const float *src1, const int src1_off,
                                      __global float *out1, const int out1_off, const int cols1,
                                      __global const float *src2, const int src2_off,
                                      __global float *out2, const int out2_off, const int cols2,
                                      __global const int *idx, const int idx_off, const int rows) {
    const int width = cols0 + cols1 + cols2;
    const int i = get_global_id(0);
    if (i >= rows * width) return;
    const int r = i / width;
    int c = i - r * width;
    const long s = (long)idx[idx_off + r];
    if (c < cols0) {
        out0[out0_off + r * cols0 + c] = src0[src0_off + s * cols0 + c];
        return;
    }
    c -= cols0;
    if (c < cols1) {
        out1[out1_off + r * cols1 + c] = src1[src1_off + s * cols1 + c];
        return;
    }
    c -= cols1;
    out2[out2_off + r * cols2 + c] = src2[src2_off + s * cols2 + c];
}

// StandardScaler: out[r, c] = (x[r, c] - mean[c]) / scale[c]   (scikit-learn divides; so do we)
__kernel void kernel_standard_scale_f32(__global const float *x, const int x_off,
                                        __global const float *mean, const int mean_off,
                                        __global const float *scale, const int scale_off,
                                        __global float *out, const int out_off,
                                        const int rows, const int cols) {
    const int i = get_global_id(0);
    if (i >= rows * cols) return;
    const int c = i % cols;
    out[out_off + i] = (x[x_off + i] - mean[mean_off + c]) / scale[scale_off + c];
}

// x[i] = value
__kernel void kernel_fill_f32(__global float *x, const int x_off, const float value, const int n) {
    const int i = get_global_id(0);
    if (i >= n) return;
    x[x_off + i] = value;
}
