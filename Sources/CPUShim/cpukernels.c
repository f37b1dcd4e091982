// The fused hidden-block kernels of the CPU backend at three vector levels (SSE2, AVX2, AVX-512), chosen at
// run time by the caller from cpuid (CPUFeatures in Swift). Swift compiles its SIMD types for the baseline
// x86-64 target (SSE2) and has no per-function target attribute, so the three hottest loops of a step are
// compiled here once per level from one source (kernels/strips.h). No multiply-add is contracted into an FMA
// and the operations are those of the Swift twins in CPUKernels.swift, in the same order: every level gives
// bitwise the Swift results (CPUBackendTests checks it on every level the CPU has).
#pragma clang fp contract(off)
#pragma STDC FP_CONTRACT OFF
// The 64-byte vectors are passed only between always-inlined functions of one level: no ABI crosses levels.
#pragma clang diagnostic ignored "-Wpsabi"

#include "CPUShim.h"

#include <math.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef int i16 __attribute__((vector_size(64), aligned(4)));

enum { SUM_BLOCK = 64 };

/// limit, p0…p6, q0…q3, tiny of CPUKernels.tanh (set from Swift, so both use the same Float constants).
static float tanh_constants[13];

void cpushim_set_tanh_constants(const float *constants) { memcpy(tanh_constants, constants, sizeof tanh_constants); }

#define splat(value) ((v16){0} + (float)(value))
#define select(mask, a, b) ((v16)(((i16)(mask) & (i16)(a)) | (~(i16)(mask) & (i16)(b))))
#define vsqrt(v) __builtin_elementwise_sqrt(v)

#define KERNEL(name) name##_sse
#include "kernels/strips.h"
#undef KERNEL

#if defined(__x86_64__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#define KERNEL(name) name##_avx2
#include "kernels/strips.h"
#undef KERNEL
#pragma clang attribute pop

#pragma clang attribute push(__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl"))), apply_to = function)
#define KERNEL(name) name##_avx512
#include "kernels/strips.h"
#undef KERNEL
#pragma clang attribute pop
#define DISPATCH(level, name, ...)                                                                                  \
    (level >= CPUSHIM_LEVEL_AVX512 ? name##_avx512(__VA_ARGS__)                                                     \
     : level >= CPUSHIM_LEVEL_AVX2 ? name##_avx2(__VA_ARGS__)                                                       \
                                   : name##_sse(__VA_ARGS__))
#else
#define DISPATCH(level, name, ...) name##_sse(__VA_ARGS__)
#endif

void cpushim_block_forward_strip(int level, int tanh_first, const float *z, const float *bias, int rows, int cols,
                                 int c0, int n, const cpushim_batch_norm *bn, float *saved, float *y) {
    DISPATCH(level, block_forward_strip, tanh_first, z, bias, rows, cols, c0, n, bn, saved, y);
}

void cpushim_block_backward_strip(int level, const cpushim_block_backward *arguments, int rows, int cols, int c0,
                                  int n) {
    DISPATCH(level, block_backward_strip, arguments, rows, cols, c0, n);
}

void cpushim_block_inference_rows(int level, int tanh_first, const float *z, const float *bias, int r0, int r1,
                                  int cols, const cpushim_batch_norm *bn, float *norm_input, float *y) {
    DISPATCH(level, block_inference_rows, tanh_first, z, bias, r0, r1, cols, bn, norm_input, y);
}
