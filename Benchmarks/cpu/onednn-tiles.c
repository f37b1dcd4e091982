// oneDNN's SGEMM on the step's big shapes: its own OpenMP threading against fixed tiles of C (rows x 128
// columns, or column strips), each tile a 1-thread dnnl_sgemm inside one OpenMP parallel loop. Prints the best
// of R per shape and configuration, and marks any configuration whose C differs bitwise from one 1-thread call
// (the CPU backend's rule: results the same for any --threads).
//
//   apt-get install libdnnl2
//   cc -O2 -fopenmp -o onednn-tiles Benchmarks/cpu/onednn-tiles.c -ldl
//   ./onednn-tiles [R]
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>
typedef int (*dnnl_fn)(char, char, long, long, long, float, const float *, long, const float *, long, float, float *, long);
static dnnl_fn g;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
// C (m×n, ldc n) = op(A)·op(B); slices of C's rows (by=0) or columns (by=1) of `size`, each a 1-thread call.
static void tiled(int threads, int R, int C, char ta, char tb, long m, long n, long k, const float *a, long lda,
                   const float *b, long ldb, float *c) {
    int rt = (int)((m + R - 1) / R), ct = (int)((n + C - 1) / C), items = rt * ct;
    #pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int i = 0; i < items; ++i) {
        long r0 = (long)(i / ct) * R, c0 = (long)(i % ct) * C;
        long rc = m - r0 < R ? m - r0 : R, cc = n - c0 < C ? n - c0 : C;
        const float *ap = ta == 'T' ? a + r0 : a + r0 * lda;
        const float *bp = tb == 'T' ? b + c0 * ldb : b + c0;
        g(ta, tb, rc, cc, k, 1.0f, ap, lda, bp, ldb, 0.0f, c + r0 * n + c0, n);
    }
}
static void sliced(int threads, int by, int size, char ta, char tb, long m, long n, long k, const float *a, long lda,
                   const float *b, long ldb, float *c) {
    long extent = by == 0 ? m : n;
    int items = (int)((extent + size - 1) / size);
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int i = 0; i < items; ++i) {
        long lo = (long)i * size, cnt = extent - lo < size ? extent - lo : size;
        if (by == 0) {  // rows of C: rows of op(A)
            const float *ap = ta == 'T' ? a + lo : a + lo * lda;
            g(ta, tb, cnt, n, k, 1.0f, ap, lda, b, ldb, 0.0f, c + lo * n, n);
        } else {        // columns of C: columns of op(B)
            const float *bp = tb == 'T' ? b + lo * ldb : b + lo;
            g(ta, tb, m, cnt, k, 1.0f, a, lda, bp, ldb, 0.0f, c + lo, n);
        }
    }
}
int main(int argc, char **argv) {
    int repeats = argc > 1 ? atoi(argv[1]) : 30;
    void *hd = dlopen("/usr/lib/x86_64-linux-gnu/libdnnl.so.2", RTLD_NOW | RTLD_LOCAL);
    g = (dnnl_fn)dlsym(hd, "dnnl_sgemm");
    int B = 4000;
    long shapes[5][6] = {{B, 256, 38, 0, 0, 1}, {B, 256, 256, 0, 0, 2}, {256, 256, B, 1, 0, 2}, {B, 256, 256, 0, 1, 2}, {38, 256, B, 1, 0, 1}};
    size_t big = (size_t)B * 256;
    float *a = aligned_alloc(64, big * 4), *b = aligned_alloc(64, big * 4), *c = aligned_alloc(64, big * 4), *c1 = aligned_alloc(64, big * 4);
    for (size_t i = 0; i < big; ++i) a[i] = rand() / (float)RAND_MAX - 0.5f, b[i] = rand() / (float)RAND_MAX - 0.5f;
    int configs[][2] = {{-1, 0}, {1, 128}, {2, 128}, {3, 256}, {4, 512}, {5, 1024}, {6,64}};
    const char *names[] = {"dnnl threads", "cols/128", "t128x128", "t256x128", "t512x128", "t1024x128", "t64x128"};
    double totals[7] = {0};
    for (int s = 0; s < 5; ++s) {
        long m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        char ta = shapes[s][3] ? 'T' : 'N', tb = shapes[s][4] ? 'T' : 'N';
        long lda = ta == 'T' ? m : k, ldb = tb == 'T' ? k : n;
        omp_set_num_threads(1);
        g(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c1, n);
        omp_set_num_threads(2);
        printf("%ldx%ldx%ld %c%c:", m, n, k, ta, tb);
        double best[7];
        for (int j = 0; j < 7; ++j) best[j] = 1e9;
        for (int r = 0; r < repeats; ++r)
            for (int j = 0; j < 7; ++j) {
                
                memset(c, 0, m * n * 4);
                double t0 = now();
                if (configs[j][0] < 0) g(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
                else if (configs[j][0] == 1) sliced(2, configs[j][0], configs[j][1], ta, tb, m, n, k, a, lda, b, ldb, c);
                else tiled(2, configs[j][1], 128, ta, tb, m, n, k, a, lda, b, ldb, c);
                double t = now() - t0;
                if (t < best[j]) best[j] = t;
                if (r == 0 && memcmp(c, c1, m * n * 4)) printf(" [%s differs from 1 thread]", names[j]);
            }
        for (int j = 0; j < 7; ++j) { printf(" %s %.3f", names[j], best[j] * 1e3); totals[j] += best[j] * shapes[s][5]; }
        printf("\n");
    }
    for (int j = 0; j < 7; ++j) printf("%s: %.2f ms\n", names[j], totals[j] * 1e3);
}
