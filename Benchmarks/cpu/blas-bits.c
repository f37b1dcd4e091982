// Whether a BLAS's SGEMM gives bitwise the same C for every thread count and (BLIS) every split of the threads:
// the training step's shapes and a 131/257-wide network's, at several batch sizes (short last batches included),
// each configuration against one thread. Prints ok or DIFF per configuration.
//
//   cc -O2 -o blas-bits Benchmarks/cpu/blas-bits.c -ldl
//   BLIS_ARCH_TYPE=<id> ./blas-bits /usr/lib/x86_64-linux-gnu/blis-openmp/libblis.so.4
//   OPENBLAS_CORETYPE=SkylakeX ./blas-bits /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *,
                         int);

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: %s LIBRARY\n", argv[0]), 2;
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) return fprintf(stderr, "%s\n", dlerror()), 1;
    sgemm_fn sgemm = (sgemm_fn)dlsym(h, "cblas_sgemm");
    void (*blis_ways)(long, long, long, long, long) =
        (void (*)(long, long, long, long, long))dlsym(h, "bli_thread_set_ways");
    void (*blis_threads)(long) = (void (*)(long))dlsym(h, "bli_thread_set_num_threads");
    void (*openblas_threads)(int) = (void (*)(int))dlsym(h, "openblas_set_num_threads");
    if (!sgemm || !(blis_threads || openblas_threads)) return fprintf(stderr, "no cblas_sgemm / thread setter\n"), 1;
    size_t big = 5000 * 300;
    float *a = malloc(big * 4), *b = malloc(big * 4), *reference = malloc(big * 4), *c = malloc(big * 4);
    if (!a || !b || !reference || !c) return fprintf(stderr, "out of memory\n"), 1;
    srand(1);
    for (size_t i = 0; i < big; ++i) a[i] = rand() / (float)RAND_MAX - 0.5f, b[i] = rand() / (float)RAND_MAX - 0.5f;
    // name, threads, (jc, ic, jr) ways for BLIS (0: the library's own split of `threads`)
    struct { const char *name; int threads, jc, ic, jr; } configs[] = {
        {"2", 2, 0, 0, 0}, {"3", 3, 0, 0, 0}, {"jc2", 2, 2, 1, 1}, {"ic2", 2, 1, 2, 1},
        {"jc3", 3, 3, 1, 1}, {"ic3", 3, 1, 3, 1}, {"jr2", 2, 1, 1, 2},
    };
    int count = blis_ways ? 7 : 2, rows[] = {4000, 4001, 1001, 722, 601, 300, 37};
    for (int ri = 0; ri < 7; ++ri) {
        int r = rows[ri];
        // m, n, k, transpose A, transpose B (row-major)
        int shapes[8][5] = {{r, 256, 38, 0, 0},  {r, 256, 256, 0, 0},  {256, 256, r, 1, 0}, {r, 256, 256, 0, 1},
                            {38, 256, r, 1, 0}, {r, 131, 257, 0, 1}, {r, 257, 131, 0, 0}, {131, 257, r, 1, 0}};
        for (int s = 0; s < 8; ++s) {
            int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], ta = shapes[s][3], tb = shapes[s][4];
            int lda = ta ? m : k, ldb = tb ? k : n;
            if (blis_threads) blis_threads(1);
            if (openblas_threads) openblas_threads(1);
            sgemm(101, ta ? 112 : 111, tb ? 112 : 111, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, reference, n);
            printf("%5dx%3dx%4d %s%s:", m, n, k, ta ? "Aᵀ" : "  ", tb ? "Bᵀ" : "  ");
            for (int q = 0; q < count; ++q) {
                if (openblas_threads) openblas_threads(configs[q].threads);
                if (blis_threads && configs[q].jc == 0) blis_threads(configs[q].threads);
                if (blis_ways && configs[q].jc > 0) blis_ways(configs[q].jc, 1, configs[q].ic, configs[q].jr, 1);
                memset(c, 0, (size_t)m * n * 4);
                sgemm(101, ta ? 112 : 111, tb ? 112 : 111, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
                printf(" %s:%s", configs[q].name, memcmp(c, reference, (size_t)m * n * 4) ? "DIFF" : "ok");
            }
            printf("\n");
        }
    }
    return 0;
}
