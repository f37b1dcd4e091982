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
    partial[l] = acc;
    for (int stride = LOSS_LANES / 2; stride > 0; stride >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (l < stride) partial[l] += partial[l + stride];
    }
    if (l == 0) loss[loss_off] = partial[0] / (float)n;
}
