// The 11 SGEMMs of one thesis training step (batch B, 38 -> 256x3 -> 2) through a BLAS opened with dlopen,
// as the CPU backend calls them (row-major CBLAS, alpha 1, beta 0). Prints, per configuration, the step's
// GEMM time as the sum over shapes of the best of R calls, by wall clock and (1 thread) by the calling
// thread's CPU time, which a busy shared machine does not inflate.
//
//   cc -O2 -o step-gemms Benchmarks/cpu/step-gemms.c -ldl
//   BLIS_ARCH_TYPE=<id> ./step-gemms /usr/lib/x86_64-linux-gnu/blis-openmp/libblis.so.4 THREADS [B] [R]
//   OPENBLAS_CORETYPE=SkylakeX ./step-gemms /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 THREADS
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *,
                         int);

static double now(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) return fprintf(stderr, "usage: %s LIBRARY THREADS [BATCH] [REPEATS]\n", argv[0]), 2;
    int threads = atoi(argv[2]), batch = argc > 3 ? atoi(argv[3]) : 4000, repeats = argc > 4 ? atoi(argv[4]) : 30;
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) return fprintf(stderr, "%s\n", dlerror()), 1;
    sgemm_fn sgemm = (sgemm_fn)dlsym(h, "cblas_sgemm");
    void (*blis_threads)(long) = (void (*)(long))dlsym(h, "bli_thread_set_num_threads");
    void (*openblas_threads)(int) = (void (*)(int))dlsym(h, "openblas_set_num_threads");
    char *(*corename)(void) = (char *(*)(void))dlsym(h, "openblas_get_corename");
    const char *(*arch_string)(int) = (const char *(*)(int))dlsym(h, "bli_arch_string");
    int (*arch_id)(void) = (int (*)(void))dlsym(h, "bli_arch_query_id");
    if (blis_threads) blis_threads(threads);
    if (openblas_threads) openblas_threads(threads);
    // m, n, k, transpose A, transpose B, calls per step
    int shapes[8][6] = {{batch, 256, 38, 0, 0, 1}, {batch, 256, 256, 0, 0, 2}, {batch, 2, 256, 0, 0, 1},
                        {256, 2, batch, 1, 0, 1},  {batch, 256, 2, 0, 1, 1},   {256, 256, batch, 1, 0, 2},
                        {batch, 256, 256, 0, 1, 2}, {38, 256, batch, 1, 0, 1}};
    size_t big = (size_t)batch * 256;
    float *a = aligned_alloc(64, big * 4), *b = aligned_alloc(64, big * 4), *c = aligned_alloc(64, big * 4);
    for (size_t i = 0; i < big; ++i) a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.2f;
    double wall = 0, cpu = 0, flops = 0;
    for (int s = 0; s < 8; ++s) {
        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], ta = shapes[s][3], tb = shapes[s][4];
        int lda = ta ? m : k, ldb = tb ? k : n;
        double best_wall = 1e9, best_cpu = 1e9;
        for (int r = 0; r < repeats + 2; ++r) {
            double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_THREAD_CPUTIME_ID);
            sgemm(101, ta ? 112 : 111, tb ? 112 : 111, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
            double w = now(CLOCK_MONOTONIC) - w0, t = now(CLOCK_THREAD_CPUTIME_ID) - c0;
            if (r >= 2 && w < best_wall) best_wall = w;
            if (r >= 2 && t < best_cpu) best_cpu = t;
        }
        wall += best_wall * shapes[s][5];
        cpu += best_cpu * shapes[s][5];
        flops += 2.0 * m * n * k * shapes[s][5];
    }
    const char *kernels = corename ? corename() : arch_string && arch_id ? arch_string(arch_id()) : "?";
    printf("%s kernels=%s threads=%d batch=%d: step GEMMs wall %.2f ms (%.1f GFLOP/s)", argv[1], kernels, threads,
           batch, wall * 1e3, flops / wall / 1e9);
    if (threads == 1) printf("; thread CPU %.2f ms (%.1f GFLOP/s per core)", cpu * 1e3, flops / cpu / 1e9);
    printf("\n");
    return 0;
}
