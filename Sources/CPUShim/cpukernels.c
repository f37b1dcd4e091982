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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef int i16 __attribute__((vector_size(64), aligned(4)));

enum { SUM_BLOCK = 64 };
/// The widest narrow dimension kernels/narrow.h handles, its fixed block of summed rows, the 16-lane vectors
/// of A's columns one work item of C = Aᵀ·B covers, and so its columns.
enum { NARROW_WIDTH = 4, NARROW_BLOCK = 256, NARROW_VECTORS = 4, NARROW_COLUMNS = 16 * NARROW_VECTORS };

/// limit, p0…p6, q0…q3, tiny of CPUKernels.tanh (set from Swift, so both use the same Float constants).
static float tanh_constants[13];

void cpushim_set_tanh_constants(const float *constants) { memcpy(tanh_constants, constants, sizeof tanh_constants); }

#define splat(value) ((v16){0} + (float)(value))
#define select(mask, a, b) ((v16)(((i16)(mask) & (i16)(a)) | (~(i16)(mask) & (i16)(b))))
#define vsqrt(v) __builtin_elementwise_sqrt(v)

#define KERNEL(name) name##_sse
#include "kernels/strips.h"
#include "kernels/narrow.h"
#undef KERNEL

#if defined(__x86_64__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#define KERNEL(name) name##_avx2
#include "kernels/strips.h"
#include "kernels/narrow.h"
#undef KERNEL
#pragma clang attribute pop

#pragma clang attribute push(__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl"))), apply_to = function)
#define KERNEL(name) name##_avx512
#include "kernels/strips.h"
#include "kernels/narrow.h"
#undef KERNEL
#pragma clang attribute pop
#define DISPATCH(level, name, ...)                                                                                  \
    (level >= CPUSHIM_LEVEL_AVX512 ? name##_avx512(__VA_ARGS__)                                                     \
     : level >= CPUSHIM_LEVEL_AVX2 ? name##_avx2(__VA_ARGS__)                                                       \
                                   : name##_sse(__VA_ARGS__))
#else
#define DISPATCH(level, name, ...) name##_sse(__VA_ARGS__)
#endif

void cpushim_block_inference_rows(int level, int tanh_first, const float *z, const float *bias, int r0, int r1,
                                  int cols, const cpushim_batch_norm *bn, float *norm_input, float *y) {
    DISPATCH(level, block_inference_rows, tanh_first, z, bias, r0, r1, cols, bn, norm_input, y);
}

// MARK: the row-major forward and backward of a hidden block (whole operation, parallel over row chunks)

/// Rows per work item: a multiple of SUM_BLOCK, fixed (the results do not depend on it anyway).
enum { ROW_CHUNK = 4 * SUM_BLOCK };

/// A growing scratch buffer per calling thread (no allocation per call: large mallocs are mmaps here). The kernels
/// have no error path, and the buffer is small beside the tensors the backend checked against the memory there is
/// (the block sums: a 64th of a block's matrix), so running out here ends the process with a message, never a NULL.
static float *scratch(size_t count) {
    static __thread float *buffer;
    static __thread size_t capacity;
    if (count > capacity) {
        free(buffer);
        size_t wanted = count + count / 4;
        buffer = malloc(wanted * sizeof(float));
        if (!buffer) {
            fprintf(stderr, "hrtrain: out of memory for %zu bytes of the CPU kernels' scratch\n",
                    wanted * sizeof(float));
            abort();
        }
        capacity = wanted;
    }
    return buffer;
}

/// Column totals 0 + B0 + B1 + … of the block sums, in block order (as the Swift strips add them).
static void add_blocks(const float *sums, long blocks, long cols, float *total) {
    for (long c = 0; c < cols; ++c) total[c] = 0;
    for (long b = 0; b < blocks; ++b)
        for (long c = 0; c < cols; ++c) total[c] += sums[b * cols + c];
}

typedef struct {
    int level, tanh_first, phase;
    const float *z, *bias, *mean, *g, *shift, *k, *sum_g, *sum_gx;
    long rows, cols;
    float *saved, *y, *sums, *sums2;
    const cpushim_block_backward *backward;
} row_job;

static void run_rows(void *context, int item) {
    const row_job *j = context;
    long r0 = (long)item * ROW_CHUNK, r1 = r0 + ROW_CHUNK < j->rows ? r0 + ROW_CHUNK : j->rows;
    int level = j->level;
    switch (j->phase) {
    case 0: DISPATCH(level, forward_rows, j->tanh_first, j->z, j->bias, r0, r1, j->cols, j->saved, j->sums); break;
    case 1: DISPATCH(level, variance_rows, j->saved, j->mean, r0, r1, j->cols, j->sums); break;
    case 2:
        DISPATCH(level, output_rows, j->tanh_first, j->saved, j->mean, j->g, j->shift, r0, r1, j->cols, j->y);
        break;
    case 3: DISPATCH(level, backward_sums_rows, j->backward, r0, r1, j->cols, j->sums, j->sums2); break;
    default:
        DISPATCH(level, backward_rows, j->backward, j->k, j->sum_g, j->sum_gx, j->rows, r0, r1, j->cols, j->sums);
        break;
    }
}

void cpushim_hidden_block_forward(int level, int threads, int tanh_first, const float *z, const float *bias, int rows,
                           int cols, const cpushim_batch_norm *bn, float *saved, float *y) {
    long blocks = ((long)rows + SUM_BLOCK - 1) / SUM_BLOCK, items = ((long)rows + ROW_CHUNK - 1) / ROW_CHUNK;
    float *sums = scratch((size_t)(blocks + 4) * cols), *mean = sums + blocks * cols, *variance = mean + cols;
    float *g = variance + cols, *total = g + cols;
    row_job job = {.level = level, .tanh_first = tanh_first, .z = z, .bias = bias, .rows = rows, .cols = cols,
                   .saved = saved, .y = y, .sums = sums, .mean = mean, .g = g, .shift = bn->beta};
    float count = (float)rows;
    cpushim_parallel_for(threads, (int)items, run_rows, &job);
    add_blocks(sums, blocks, cols, total);
    for (long c = 0; c < cols; ++c) mean[c] = total[c] / count;
    job.phase = 1;
    cpushim_parallel_for(threads, (int)items, run_rows, &job);
    add_blocks(sums, blocks, cols, total);
    float f = bn->update_factor, keep = 1 - f, unbias = count / (float)(rows - 1);
    for (long c = 0; c < cols; ++c) {
        variance[c] = total[c] / count;
        float inverse_std = 1 / sqrtf(variance[c] + bn->epsilon);
        float stored = bn->unbiased ? variance[c] * unbias : variance[c];
        bn->saved_mean[c] = mean[c];
        bn->saved_inverse_std[c] = inverse_std;
        bn->running_mean[c] = keep * bn->running_mean[c] + f * mean[c];
        bn->running_variance[c] = keep * bn->running_variance[c] + f * stored;
        g[c] = bn->gamma[c] * inverse_std;
    }
    job.phase = 2;
    cpushim_parallel_for(threads, (int)items, run_rows, &job);
}

void cpushim_hidden_block_backward(int level, int threads, const cpushim_block_backward *arguments, int rows,
                                   int cols) {
    long blocks = ((long)rows + SUM_BLOCK - 1) / SUM_BLOCK, items = ((long)rows + ROW_CHUNK - 1) / ROW_CHUNK;
    float *sums = scratch((size_t)(2 * blocks + 4) * cols), *sums2 = sums + blocks * cols;
    float *sum_g = sums2 + blocks * cols, *sum_gx = sum_g + cols, *k = sum_gx + cols, *total = k + cols;
    row_job job = {.level = level, .phase = 3, .rows = rows, .cols = cols, .sums = sums, .sums2 = sums2,
                   .backward = arguments, .k = k, .sum_g = sum_g, .sum_gx = sum_gx};
    float count = (float)rows;
    cpushim_parallel_for(threads, (int)items, run_rows, &job);
    add_blocks(sums, blocks, cols, sum_g);
    add_blocks(sums2, blocks, cols, sum_gx);
    for (long c = 0; c < cols; ++c) {
        arguments->beta_gradient[c] = sum_g[c];
        arguments->gamma_gradient[c] = sum_gx[c];
        k[c] = arguments->gamma[c] * arguments->saved_inverse_std[c] / count;
    }
    job.phase = 4;
    cpushim_parallel_for(threads, (int)items, run_rows, &job);
    add_blocks(sums, blocks, cols, total);
    if (arguments->bias_gradient)
        for (long c = 0; c < cols; ++c) arguments->bias_gradient[c] = total[c];
}

// MARK: the narrow GEMMs of the output layer (kernels/narrow.h)

typedef struct {
    int level, form;
    const float *a, *b, *bt;
    long lda, ldb, ldc, m, n, k;
    float *c;
} narrow_job;

static void run_narrow(void *context, int item) {
    const narrow_job *j = context;
    int level = j->level;
    if (j->form == 1) {
        long i0 = (long)item * NARROW_COLUMNS;
        int w = j->m - i0 < NARROW_COLUMNS ? (int)(j->m - i0) : NARROW_COLUMNS;
        DISPATCH(level, narrow_transposed, j->a, j->lda, j->b, j->ldb, j->k, j->n, i0, w, j->c, j->ldc);
        return;
    }
    long r0 = (long)item * ROW_CHUNK, r1 = r0 + ROW_CHUNK < j->m ? r0 + ROW_CHUNK : j->m;
    if (j->form == 0)
        DISPATCH(level, narrow_rows, j->a, j->lda, j->bt, j->k, j->n, r0, r1, j->c, j->ldc);
    else
        DISPATCH(level, narrow_outer, j->a, j->lda, j->bt, j->k, j->n, r0, r1, j->c, j->ldc);
}

int cpushim_narrow_sgemm(int level, int threads, int transpose_a, int transpose_b, int m, int n, int k,
                         const float *a, int lda, const float *b, int ldb, float *c, int ldc) {
    narrow_job job = {.level = level, .a = a, .b = b, .lda = lda, .ldb = ldb, .ldc = ldc, .m = m, .n = n, .k = k,
                      .c = c};
    if (m <= 0 || n <= 0) return 1;
    long items;
    if (!transpose_a && !transpose_b && n <= NARROW_WIDTH) {
        float *bt = scratch((size_t)NARROW_WIDTH * (size_t)k);
        for (long j = 0; j < NARROW_WIDTH; ++j)
            for (long p = 0; p < k; ++p) bt[j * k + p] = j < n ? b[p * ldb + j] : 0;
        job.form = 0;
        job.bt = bt;
        items = ((long)m + ROW_CHUNK - 1) / ROW_CHUNK;
    } else if (transpose_a && !transpose_b && n <= NARROW_WIDTH) {
        job.form = 1;
        items = (m + NARROW_COLUMNS - 1) / NARROW_COLUMNS;
    } else if (!transpose_a && transpose_b && k <= NARROW_WIDTH) {
        float *bt = scratch((size_t)k * (size_t)n);
        for (long p = 0; p < k; ++p)
            for (long i = 0; i < n; ++i) bt[p * n + i] = b[i * ldb + p];
        job.form = 2;
        job.bt = bt;
        items = ((long)m + ROW_CHUNK - 1) / ROW_CHUNK;
    } else {
        return 0;
    }
    cpushim_parallel_for(threads, (int)items, run_narrow, &job);
    return 1;
}
