#ifndef CPUSHIM_H
#define CPUSHIM_H

// The native CPU backend's C side: the CPU's features from cpuid, a BLAS library opened with dlopen
// (after its kernel selection has been fixed through the environment), and a parallel-for over
// libgomp's thread team (the same threads BLIS's OpenMP build runs its GEMMs on).

/// What cpuid and xgetbv say about the processor (1 = present and enabled by the OS).
typedef struct {
    char vendor[13];
    int family, model, stepping;
    int sse3, avx, fma, avx2;
    int avx512f, avx512dq, avx512cd, avx512bw, avx512vl, avx512bf16;
    /// XCR0 enables the AVX (YMM) and AVX-512 (opmask, ZMM) register state.
    int os_avx, os_avx512;
} cpushim_features;

/// Fills `out` from cpuid (x86-64; all zero elsewhere).
void cpushim_query_features(cpushim_features *out);

/// Which library `cpushim_blas_open` opened.
enum { CPUSHIM_BLAS_NONE = 0, CPUSHIM_BLAS_BLIS = 1, CPUSHIM_BLAS_OPENBLAS = 2, CPUSHIM_BLAS_ONEDNN = 3 };

/// Opens the BLAS shared library at `path` (kind: BLIS, OpenBLAS or oneDNN) and resolves its SGEMM (cblas_sgemm;
/// oneDNN's dnnl_sgemm) and the library's own kernel-report functions. Returns 0, or -1 with a message in `error`.
int cpushim_blas_open(const char *path, int kind, char *error, int error_length);

/// oneDNN: caps the instruction set its JIT kernels use (dnnl_set_max_cpu_isa: 0x27 avx512_core, 0x7 avx2, 0x3
/// avx, 0x1 sse41), before its first GEMM. Returns oneDNN's status (0: success); -1 when oneDNN is not open.
int cpushim_onednn_set_max_isa(int isa);

/// Whether a library with this soname is already loaded in the process (then its environment was read).
int cpushim_library_loaded(const char *path);

/// BLIS: the id of the configuration called `name` (what BLIS_ARCH_TYPE takes), or -1 if the library has none.
int cpushim_blis_arch_id(const char *name);

/// The kernel configuration the opened library runs (BLIS: its arch name; OpenBLAS: its core name; oneDNN: the
/// name of its effective instruction set, e.g. "avx512_core").
/// Forces BLIS's lazy initialisation. Writes "" when nothing is open.
void cpushim_blas_kernels(char *out, int length);

/// The library's own version/configuration string ("" when unknown).
void cpushim_blas_config(char *out, int length);

/// Sets the number of threads the BLAS uses.
void cpushim_blas_set_threads(int threads);

/// How BLIS divides a GEMM among its threads: its own factorisation of the count, or all threads on one loop of
/// its column-major view of the call (row-major C = A·B is BLIS's Cᵀ = Bᵀ·Aᵀ): JC over its columns (the rows
/// of our C), IC over its rows (our C's columns). No split divides k; on BLIS's packed path every split gives the
/// same bits, its small-matrix kernels may not (BLASThreadSplit in Swift).
enum { CPUSHIM_SPLIT_LIBRARY = 0, CPUSHIM_SPLIT_JC = 1, CPUSHIM_SPLIT_IC = 2 };

/// Sets `threads` threads with `split` for the calls that follow. BLIS only (others, or a BLIS without
/// bli_thread_set_ways: the thread count alone).
void cpushim_blas_set_split(int threads, int split);

/// Row-major C = op(A)·op(B) (alpha 1, beta 0) through the opened library's SGEMM. oneDNN's own threading splits
/// the work by its thread count, so with oneDNN C is cut into tiles that depend on its shape alone
/// (`cpushim_onednn_tile`), computed by one-thread calls over the whole of k, in parallel on the threads set last:
/// bitwise the same for any thread count. Returns 0, or the first non-zero status a dnnl_sgemm call returned (C is
/// then not to be used).
int cpushim_sgemm(int transpose_a, int transpose_b, int m, int n, int k, const float *a, int lda, const float *b,
                  int ldb, float *c, int ldc);

/// The largest tile of C one oneDNN call computes (see cpushim_sgemm), the smallest, and how many tiles a GEMM is
/// cut into where C is big enough: `cpushim_onednn_tile`.
enum { CPUSHIM_TILE_ROWS = 256, CPUSHIM_TILE_COLUMNS = 128, CPUSHIM_TILE_MINIMUM = 64, CPUSHIM_TILES_WANTED = 8 };

/// The tile of an m × n C under oneDNN, a function of m and n alone (never of the thread count, so the bits do
/// not depend on it): CPUSHIM_TILE_ROWS × CPUSHIM_TILE_COLUMNS, halved (the larger side first, rows on a tie) down
/// to CPUSHIM_TILE_MINIMUM while C has fewer than CPUSHIM_TILES_WANTED tiles: a 4000 × 256 C keeps 256 × 128 tiles
/// (32), a 256 × 256 weight gradient gets 8 tiles of 64 × 128 (2 tiles before: 2 threads at most), 38 × 256 gets 4
/// of 64 × 64. On 2 threads 8 tiles measured best (RESULTS, session 10).
void cpushim_onednn_tile(int m, int n, int *tile_rows, int *tile_columns);

/// Calls body(context, item) for every item in 0..<items on up to `threads` threads of libgomp's team
/// (items are handed out in order through an atomic counter); serial when threads ≤ 1 or libgomp is absent.
void cpushim_parallel_for(int threads, int items, void (*body)(void *context, int item), void *context);

/// Whether cpushim_parallel_for runs on libgomp (1) or serially (0).
int cpushim_parallel_available(void);

// MARK: fused hidden-block kernels (cpukernels.c)

/// The vector level a kernel call is compiled for (the caller checks it against cpuid).
enum { CPUSHIM_LEVEL_SSE2 = 0, CPUSHIM_LEVEL_AVX2 = 1, CPUSHIM_LEVEL_AVX512 = 2 };

/// The per-column vectors and settings of one batch norm (training: all; inference: gamma, beta, running).
typedef struct {
    const float *gamma, *beta;
    float *running_mean, *running_variance, *saved_mean, *saved_inverse_std;
    float epsilon, update_factor;
    int unbiased;
} cpushim_batch_norm;

/// The tensors of a fused batch-norm (+ tanh) backward; tanh_output and bias_gradient may be NULL.
typedef struct {
    const float *output_gradient, *input, *gamma, *saved_mean, *saved_inverse_std, *tanh_output;
    int tanh_input;
    float *input_gradient, *gamma_gradient, *beta_gradient, *bias_gradient;
} cpushim_block_backward;

/// The 13 Float constants of CPUKernels.tanh: limit, p0…p6, q0…q3, tiny. Call once before the kernels.
void cpushim_set_tanh_constants(const float *constants);

/// CPUKernels.hiddenBlockForward, the whole operation on up to `threads` threads: the same results bitwise, row
/// by row instead of strip by strip (whole rows stream through the cache; a 16-column strip of a 256-wide
/// matrix walks 1 KiB strides, which map to an eighth of the L2 cache's sets).
void cpushim_hidden_block_forward(int level, int threads, int tanh_first, const float *z, const float *bias, int rows,
                           int cols, const cpushim_batch_norm *bn, float *saved, float *y);

/// CPUKernels.batchNormBackward, the whole operation on up to `threads` threads, row by row (bitwise the same).
void cpushim_hidden_block_backward(int level, int threads, const cpushim_block_backward *arguments, int rows,
                                   int cols);

/// The output layer's narrow GEMMs (row-major, C = op(A)·op(B), alpha 1, beta 0) without the BLAS: A·B and Aᵀ·B
/// with n ≤ 4, A·Bᵀ with k ≤ 4, on up to `threads` threads, results independent of the thread count. Returns 0
/// (nothing done) for any other form, which the caller passes to the BLAS.
int cpushim_narrow_sgemm(int level, int threads, int transpose_a, int transpose_b, int m, int n, int k,
                         const float *a, int lda, const float *b, int ldb, float *c, int ldc);

/// CPUKernels.hiddenBlockInference on rows r0..<r1.
void cpushim_block_inference_rows(int level, int tanh_first, const float *z, const float *bias, int r0, int r1,
                                  int cols, const cpushim_batch_norm *bn, float *norm_input, float *y);

#endif
