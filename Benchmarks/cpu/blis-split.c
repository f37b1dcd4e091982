// How BLIS divides one SGEMM among its threads, on the training step's large shapes (batch B, 256-wide hidden
// layers): BLIS's own factorisation of the thread count (`bli_thread_set_num_threads`) against all threads on one
// loop (`bli_thread_set_ways`: JC, IC or JR). Operands cycle through six 4-MiB-per-operand sets (about 24 MiB per
// operand kind) so that they come from memory, as in a step. GFLOP/s per configuration: median and range over
// ROUNDS alternating rounds, each the mean of 10 calls after 2 warm-up calls.
//
//   cc -O2 -o blis-split Benchmarks/cpu/blis-split.c -ldl
//   BLIS_ARCH_TYPE=<id> ./blis-split [/usr/lib/x86_64-linux-gnu/blis-openmp/libblis.so.4] [THREADS] [B] [ROUNDS]
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *,
                         int);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/usr/lib/x86_64-linux-gnu/blis-openmp/libblis.so.4";
    long threads = argc > 2 ? atol(argv[2]) : 2;
    int batch = argc > 3 ? atoi(argv[3]) : 4000, rounds = argc > 4 ? atoi(argv[4]) : 7;
    if (rounds < 1 || rounds > 64 || batch < 1 || threads < 1) return fprintf(stderr, "bad arguments\n"), 2;
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) return fprintf(stderr, "%s\n", dlerror()), 1;
    sgemm_fn sgemm = (sgemm_fn)dlsym(h, "cblas_sgemm");
    void (*set_ways)(long, long, long, long, long) =
        (void (*)(long, long, long, long, long))dlsym(h, "bli_thread_set_ways");
    void (*set_threads)(long) = (void (*)(long))dlsym(h, "bli_thread_set_num_threads");
    const char *(*arch_string)(int) = (const char *(*)(int))dlsym(h, "bli_arch_string");
    int (*arch_id)(void) = (int (*)(void))dlsym(h, "bli_arch_query_id");
    if (!sgemm || !set_ways || !set_threads) return fprintf(stderr, "%s is not BLIS\n", path), 1;
    size_t operand = (size_t)batch * 256, set = 3 * operand;
    float *pool = aligned_alloc(64, set * 6 * sizeof(float));
    if (!pool) return fprintf(stderr, "out of memory\n"), 1;
    for (size_t i = 0; i < set * 6; ++i) pool[i] = (float)(i % 7) * 0.1f;
    // m, n, k, transpose A, transpose B (row-major, as the CPU backend calls them)
    int shapes[4][5] = {{256, 256, batch, 1, 0}, {batch, 256, 256, 0, 0}, {batch, 256, 256, 0, 1},
                        {38, 256, batch, 1, 0}};
    const char *names[4] = {"library", "JC", "IC", "JR"};
    double rates[4][4][64];
    for (int round = 0; round < rounds; ++round) {
        for (int s = 0; s < 4; ++s) {
            int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], ta = shapes[s][3], tb = shapes[s][4];
            int lda = ta ? m : k, ldb = tb ? k : n;
            for (int q = 0; q < 4; ++q) {
                if (q == 0) set_threads(threads);
                if (q == 1) set_ways(threads, 1, 1, 1, 1);
                if (q == 2) set_ways(1, 1, threads, 1, 1);
                if (q == 3) set_ways(1, 1, 1, threads, 1);
                double total = 0;
                for (int r = 0; r < 12; ++r) {
                    float *a = pool + (size_t)(r % 6) * set, *b = a + operand, *c = b + operand;
                    double t0 = now();
                    sgemm(101, ta ? 112 : 111, tb ? 112 : 111, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
                    if (r >= 2) total += now() - t0;
                }
                rates[s][q][round] = 2.0 * m * n * k / (total / 10) / 1e9;
            }
        }
    }
    printf("%s kernels=%s threads=%ld batch=%d rounds=%d (GFLOP/s: median [min-max])\n", path,
           arch_string && arch_id ? arch_string(arch_id()) : "?", threads, batch, rounds);
    for (int s = 0; s < 4; ++s) {
        printf("%5dx%3dx%5d%s%s", shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3] ? " Aᵀ" : "   ",
               shapes[s][4] ? " Bᵀ" : "   ");
        for (int q = 0; q < 4; ++q) {
            qsort(rates[s][q], (size_t)rounds, sizeof(double), compare);
            printf("  %s %.1f [%.0f-%.0f]", names[q], rates[s][q][rounds / 2], rates[s][q][0], rates[s][q][rounds - 1]);
        }
        printf("\n");
    }
    return 0;
}
