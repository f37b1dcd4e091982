// hrtrain Adam update over one flat parameter buffer (Kingma & Ba 2014), both epsilon forms:
//
//   m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2,   theta <- theta - a * m / (sqrt(v) * c + eps)
//
// 1 - b1 and 1 - b2 arrive from the host: 1.0f - 0.999f in float is off by 1.3e-5 relative.
// with the host computing, for step t (1-based), in double precision:
//   keras   ("epsilon hat"):  a = lr * sqrt(1 - b2^t) / (1 - b1^t),  c = 1,                    eps = 1e-7
//   pytorch (Algorithm 1):    a = lr / (1 - b1^t),                   c = 1 / sqrt(1 - b2^t),  eps = 1e-8
// Global: n (any size).

__kernel void kernel_adam_update_f32(__global float *theta, __global const float *grad,
                                     __global float *m, __global float *v, const int n,
                                     const float beta1, const float one_minus_beta1,
                                     const float beta2, const float one_minus_beta2, const float a,
                                     const float c, const float eps) {
    const int i = get_global_id(0);
    if (i >= n) return;
    const float g = grad[i];
    const float mi = beta1 * m[i] + one_minus_beta1 * g;
    const float vi = beta2 * v[i] + one_minus_beta2 * g * g;
    m[i] = mi;
    v[i] = vi;
    theta[i] -= a * mi / (sqrt(vi) * c + eps);
}
