#define _GNU_SOURCE
#include "CPUShim.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

void cpushim_query_features(cpushim_features *out) {
    memset(out, 0, sizeof *out);
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return;
    unsigned max_leaf = a;
    memcpy(out->vendor, &b, 4);
    memcpy(out->vendor + 4, &d, 4);
    memcpy(out->vendor + 8, &c, 4);
    out->vendor[12] = 0;
    __get_cpuid(1, &a, &b, &c, &d);
    unsigned base_family = (a >> 8) & 0xf, base_model = (a >> 4) & 0xf;
    out->family = (int)(base_family == 0xf ? base_family + ((a >> 20) & 0xff) : base_family);
    out->model = (int)(base_family == 0x6 || base_family == 0xf ? base_model | (((a >> 16) & 0xf) << 4) : base_model);
    out->stepping = (int)(a & 0xf);
    out->sse3 = (c >> 0) & 1;
    out->fma = (c >> 12) & 1;
    int osxsave = (c >> 27) & 1;
    out->avx = (c >> 28) & 1;
    if (osxsave) {
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        out->os_avx = (lo & 0x6) == 0x6;
        out->os_avx512 = (lo & 0xe6) == 0xe6;
    }
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        out->avx2 = (b >> 5) & 1;
        out->avx512f = (b >> 16) & 1;
        out->avx512dq = (b >> 17) & 1;
        out->avx512cd = (b >> 28) & 1;
        out->avx512bw = (b >> 30) & 1;
        out->avx512vl = (b >> 31) & 1;
        __cpuid_count(7, 1, a, b, c, d);
        out->avx512bf16 = (a >> 5) & 1;
    }
#endif
}

typedef void (*cblas_sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float,
                               float *, int);
static cblas_sgemm_fn blas_sgemm;
static int blas_kind;
static int (*blis_arch_query_id)(void);
static const char *(*blis_arch_string)(int);
static void (*blis_set_threads)(long);
static void (*blis_set_ways)(long, long, long, long, long);
static void (*blis_init)(void);
typedef int (*dnnl_sgemm_fn)(char, char, long long, long long, long long, float, const float *, long long,
                             const float *, long long, float, float *, long long);
static dnnl_sgemm_fn onednn_sgemm;
static int (*onednn_set_max_isa)(int);
static int (*onednn_effective_isa)(void);
static int blas_threads = 1;
static char *(*openblas_corename)(void);
static char *(*openblas_config)(void);
static void (*openblas_set_threads)(int);

int cpushim_library_loaded(const char *path) {
    void *handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (handle) dlclose(handle);
    return handle != NULL;
}

int cpushim_blas_open(const char *path, int kind, char *error, int error_length) {
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        snprintf(error, (size_t)error_length, "%s", dlerror());
        return -1;
    }
    if (kind == CPUSHIM_BLAS_ONEDNN) {
        onednn_sgemm = (dnnl_sgemm_fn)dlsym(handle, "dnnl_sgemm");
        onednn_set_max_isa = (int (*)(int))dlsym(handle, "dnnl_set_max_cpu_isa");
        onednn_effective_isa = (int (*)(void))dlsym(handle, "dnnl_get_effective_cpu_isa");
        if (!onednn_sgemm || !onednn_set_max_isa || !onednn_effective_isa) {
            snprintf(error, (size_t)error_length, "%s does not export oneDNN's dnnl_sgemm and dnnl_set_max_cpu_isa",
                     path);
            return -1;
        }
        blas_kind = kind;
        return 0;
    }
    cblas_sgemm_fn sgemm = (cblas_sgemm_fn)dlsym(handle, "cblas_sgemm");
    if (!sgemm) {
        snprintf(error, (size_t)error_length, "%s has no cblas_sgemm", path);
        return -1;
    }
    if (kind == CPUSHIM_BLAS_BLIS) {
        blis_arch_query_id = (int (*)(void))dlsym(handle, "bli_arch_query_id");
        blis_arch_string = (const char *(*)(int))dlsym(handle, "bli_arch_string");
        blis_set_threads = (void (*)(long))dlsym(handle, "bli_thread_set_num_threads");
        blis_init = (void (*)(void))dlsym(handle, "bli_init");
        blis_set_ways = (void (*)(long, long, long, long, long))dlsym(handle, "bli_thread_set_ways");
        if (!blis_arch_query_id || !blis_arch_string || !blis_set_threads || !blis_init) {
            snprintf(error, (size_t)error_length, "%s does not export BLIS's bli_arch_query_id", path);
            return -1;
        }
    } else {
        openblas_corename = (char *(*)(void))dlsym(handle, "openblas_get_corename");
        openblas_config = (char *(*)(void))dlsym(handle, "openblas_get_config");
        openblas_set_threads = (void (*)(int))dlsym(handle, "openblas_set_num_threads");
        if (!openblas_corename || !openblas_set_threads) {
            snprintf(error, (size_t)error_length, "%s does not export OpenBLAS's openblas_get_corename", path);
            return -1;
        }
    }
    blas_sgemm = sgemm;
    blas_kind = kind;
    return 0;
}

int cpushim_onednn_set_max_isa(int isa) {
    if (blas_kind != CPUSHIM_BLAS_ONEDNN) return -1;
    return onednn_set_max_isa(isa);
}

/// oneDNN 2.x's dnnl_cpu_isa_t values and their names (dnnl_types.h).
static const char *onednn_isa_name(int isa) {
    switch (isa) {
    case 0x0: return "all";
    case 0x1: return "sse41";
    case 0x3: return "avx";
    case 0x7: return "avx2";
    case 0xf: return "avx512_mic";
    case 0x1f: return "avx512_mic_4ops";
    case 0x27: return "avx512_core";
    case 0x67: return "avx512_core_vnni";
    case 0xe7: return "avx512_core_bf16";
    case 0x3e7: return "avx512_core_amx";
    case 0x407: return "avx2_vnni";
    default: return "unknown";
    }
}

int cpushim_blis_arch_id(const char *name) {
    if (blas_kind != CPUSHIM_BLAS_BLIS) return -1;
    // bli_arch_string indexes BLIS's table of configuration names without a bounds check, and "generic" is the
    // table's last entry in every BLIS release: stop there rather than read past its end.
    for (int id = 0; id < 64; ++id) {
        const char *s = blis_arch_string(id);
        if (!s) return -1;
        if (strcmp(s, name) == 0) return id;
        if (strcmp(s, "generic") == 0) return -1;
    }
    return -1;
}

void cpushim_blas_kernels(char *out, int length) {
    const char *name = "";
    if (blas_kind == CPUSHIM_BLAS_BLIS) {
        blis_init();  // reads BLIS_ARCH_TYPE; querying before it aborts when the variable is set
        name = blis_arch_string(blis_arch_query_id());
    }
    if (blas_kind == CPUSHIM_BLAS_OPENBLAS) name = openblas_corename();
    if (blas_kind == CPUSHIM_BLAS_ONEDNN) name = onednn_isa_name(onednn_effective_isa());
    snprintf(out, (size_t)length, "%s", name ? name : "");
}

void cpushim_blas_config(char *out, int length) {
    const char *text = "";
    if (blas_kind == CPUSHIM_BLAS_OPENBLAS && openblas_config) text = openblas_config();
    snprintf(out, (size_t)length, "%s", text ? text : "");
}

void cpushim_blas_set_threads(int threads) {
    blas_threads = threads;
    if (blas_kind == CPUSHIM_BLAS_BLIS) blis_set_threads(threads);
    if (blas_kind == CPUSHIM_BLAS_OPENBLAS) openblas_set_threads(threads);
}

void cpushim_blas_set_split(int threads, int split) {
    if (blas_kind != CPUSHIM_BLAS_BLIS || !blis_set_ways || threads <= 1 || split == CPUSHIM_SPLIT_LIBRARY) {
        cpushim_blas_set_threads(threads);
    } else if (split == CPUSHIM_SPLIT_JC) {
        blis_set_ways(threads, 1, 1, 1, 1);  // jc, pc, ic, jr, ir; pc (the k loop) stays 1
    } else {
        blis_set_ways(1, 1, threads, 1, 1);
    }
}

void cpushim_onednn_tile(int m, int n, int *tile_rows, int *tile_columns) {
    long rows = CPUSHIM_TILE_ROWS, columns = CPUSHIM_TILE_COLUMNS;
    while (((m + rows - 1L) / rows) * ((n + columns - 1L) / columns) < CPUSHIM_TILES_WANTED
           && (rows > CPUSHIM_TILE_MINIMUM || columns > CPUSHIM_TILE_MINIMUM)) {
        if (rows >= columns && rows > CPUSHIM_TILE_MINIMUM)
            rows /= 2;
        else
            columns /= 2;
    }
    *tile_rows = (int)rows;
    *tile_columns = (int)columns;
}

typedef struct {
    int transpose_a, transpose_b, m, n, k, lda, ldb, ldc, tile_rows, tile_columns;
    long column_tiles;
    const float *a, *b;
    float *c;
    int status;  // the first non-zero dnnl_status_t of a tile, else 0
} tile_job;

static void (*omp_set_threads)(int);

/// One tile of C through a one-thread dnnl_sgemm over the whole of k (row-major: op(A)'s rows r0.., op(B)'s
/// columns c0..).
static void run_tile(void *context, int item) {
    tile_job *j = context;
    long r0 = (long)item / j->column_tiles * j->tile_rows, c0 = (long)item % j->column_tiles * j->tile_columns;
    long rows = j->m - r0 < j->tile_rows ? j->m - r0 : j->tile_rows;
    long columns = j->n - c0 < j->tile_columns ? j->n - c0 : j->tile_columns;
    const float *a = j->transpose_a ? j->a + r0 : j->a + r0 * j->lda;
    const float *b = j->transpose_b ? j->b + c0 * j->ldb : j->b + c0;
    // Outside an active parallel region (one thread, or one tile) oneDNN would use libgomp's default team.
    if (omp_set_threads) omp_set_threads(1);
    int status = onednn_sgemm(j->transpose_a ? 'T' : 'N', j->transpose_b ? 'T' : 'N', rows, columns, j->k, 1.0f, a,
                              j->lda, b, j->ldb, 0.0f, j->c + r0 * j->ldc + c0, j->ldc);
    if (status != 0) {
        int none = 0;
        __atomic_compare_exchange_n(&j->status, &none, status, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    }
}

int cpushim_sgemm(int transpose_a, int transpose_b, int m, int n, int k, const float *a, int lda, const float *b,
                  int ldb, float *c, int ldc) {
    enum { row_major = 101, no_trans = 111, trans = 112 };
    if (blas_kind == CPUSHIM_BLAS_ONEDNN) {
        if (m <= 0 || n <= 0) return 0;
        int tile_rows, tile_columns;
        cpushim_onednn_tile(m, n, &tile_rows, &tile_columns);
        long row_tiles = (m + tile_rows - 1L) / tile_rows, column_tiles = (n + tile_columns - 1L) / tile_columns;
        tile_job job = {transpose_a, transpose_b, m, n, k, lda, ldb, ldc, tile_rows, tile_columns, column_tiles,
                        a, b, c, 0};
        // C's size passed the backend's memory check, so its tiles (at least 64 × 64 values each) fit an int.
        cpushim_parallel_for(blas_threads, (int)(row_tiles * column_tiles), run_tile, &job);
        return job.status;
    }
    blas_sgemm(row_major, transpose_a ? trans : no_trans, transpose_b ? trans : no_trans, m, n, k, 1.0f, a, lda, b,
               ldb, 0.0f, c, ldc);
    return 0;
}

// libgomp's entry points (the ABI GCC emits for `#pragma omp parallel`), resolved at run time so that this
// file builds without -fopenmp.
static void (*gomp_parallel)(void (*)(void *), void *, unsigned, unsigned);
static int gomp_resolved;

static void resolve_gomp(void) {
    if (gomp_resolved) return;
    void *handle = dlopen("libgomp.so.1", RTLD_NOW | RTLD_LOCAL);
    if (handle) {
        gomp_parallel = (void (*)(void (*)(void *), void *, unsigned, unsigned))dlsym(handle, "GOMP_parallel");
        omp_set_threads = (void (*)(int))dlsym(handle, "omp_set_num_threads");
    }
    __atomic_store_n(&gomp_resolved, 1, __ATOMIC_RELEASE);
}

int cpushim_parallel_available(void) {
    resolve_gomp();
    return gomp_parallel != NULL;
}

typedef struct {
    void (*body)(void *, int);
    void *context;
    int items;
    int next;
} parallel_job;

static void run_items(void *data) {
    parallel_job *job = data;
    for (;;) {
        int item = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
        if (item >= job->items) return;
        job->body(job->context, item);
    }
}

void cpushim_parallel_for(int threads, int items, void (*body)(void *context, int item), void *context) {
    if (items <= 0) return;
    resolve_gomp();
    parallel_job job = {body, context, items, 0};
    if (threads <= 1 || items == 1 || !gomp_parallel) {
        run_items(&job);
        return;
    }
    gomp_parallel(run_items, &job, (unsigned)(threads < items ? threads : items), 0);
}
