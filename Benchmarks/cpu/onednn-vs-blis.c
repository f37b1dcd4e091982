// The step's big SGEMMs through BLIS (blis-openmp, CBLAS) and oneDNN (dnnl_sgemm, Debian's libdnnl2), timed
// alternately in one process: best of R calls per shape, summed with each shape's count per step, per round.
//
//   apt-get install libdnnl2 libblis4-openmp
//   cc -O2 -o onednn-vs-blis Benchmarks/cpu/onednn-vs-blis.c -ldl
//   ./onednn-vs-blis THREADS [R] [ROUNDS]
//   ONEDNN_MAX_CPU_ISA=AVX2 ./onednn-vs-blis 2     # oneDNN held to AVX2 kernels
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
typedef int (*dnnl_fn)(char, char, long, long, long, float, const float *, long, const float *, long, float, float *, long);
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
int main(int argc, char **argv) {
    int threads = atoi(argv[1]), batch = 4000, repeats = argc > 2 ? atoi(argv[2]) : 30, rounds = argc > 3 ? atoi(argv[3]) : 3;
    void *hb = dlopen("/usr/lib/x86_64-linux-gnu/blis-openmp/libblis.so.4", RTLD_NOW | RTLD_LOCAL);
    void *hd = dlopen("/usr/lib/x86_64-linux-gnu/libdnnl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!hb || !hd) return fprintf(stderr, "%s\n", dlerror()), 1;
    sgemm_fn sgemm = (sgemm_fn)dlsym(hb, "cblas_sgemm");
    dnnl_fn dsgemm = (dnnl_fn)dlsym(hd, "dnnl_sgemm");
    void (*blis_threads)(long) = (void (*)(long))dlsym(hb, "bli_thread_set_num_threads");
    blis_threads(threads);
    int shapes[8][6] = {{batch, 256, 38, 0, 0, 1}, {batch, 256, 256, 0, 0, 2}, {batch, 2, 256, 0, 0, 1},
                        {256, 2, batch, 1, 0, 1},  {batch, 256, 2, 0, 1, 1},   {256, 256, batch, 1, 0, 2},
                        {batch, 256, 256, 0, 1, 2}, {38, 256, batch, 1, 0, 1}};
    size_t big = (size_t)batch * 256;
    float *a = aligned_alloc(64, big * 4), *b = aligned_alloc(64, big * 4), *c = aligned_alloc(64, big * 4);
    for (size_t i = 0; i < big; ++i) a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.2f;
    for (int round = 0; round < rounds; ++round) {
        double tot[2] = {0, 0};
        for (int s = 0; s < 8; ++s) {
            int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], ta = shapes[s][3], tb = shapes[s][4];
            int lda = ta ? m : k, ldb = tb ? k : n;
            double best[2] = {1e9, 1e9};
            for (int r = 0; r < repeats + 2; ++r) {
                for (int lib = 0; lib < 2; ++lib) {
                    double w0 = now();
                    if (lib == 0) sgemm(101, ta ? 112 : 111, tb ? 112 : 111, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
                    else dsgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
                    double w = now() - w0;
                    if (r >= 2 && w < best[lib]) best[lib] = w;
                }
            }
            printf("%5dx%3dx%4d %s%s  blis %.3f ms (%.0f GF/s)  dnnl %.3f ms (%.0f GF/s)\n", m, n, k, ta ? "At" : "  ", tb ? "Bt" : "  ",
                   best[0] * 1e3, 2.0 * m * n * k / best[0] / 1e9, best[1] * 1e3, 2.0 * m * n * k / best[1] / 1e9);
            tot[0] += best[0] * shapes[s][5]; tot[1] += best[1] * shapes[s][5];
        }
        printf("round %d: step GEMMs blis %.2f ms, dnnl %.2f ms, blis/dnnl %.3f\n", round, tot[0] * 1e3, tot[1] * 1e3, tot[0] / tot[1]);
    }
}
