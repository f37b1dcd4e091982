// A run-time binding of the few MPI calls hrtrain's data-parallel training needs.
//
// hrtrain does not link libmpi: the plain binary must run where no MPI is installed (the GPU bundle, a
// laptop). cmpi_load() dlopen()s the library (RTLD_GLOBAL, as Open MPI's plugins need) and resolves the
// functions and predefined handles with dlsym. It targets **Open MPI's ABI** (4.x and 5.x): handles are
// pointers, and MPI_COMM_WORLD, MPI_FLOAT, MPI_DOUBLE, MPI_SUM, MPI_MAX and MPI_ERRORS_RETURN are the addresses
// of the global symbols ompi_mpi_comm_world, ompi_mpi_float, ... (in mpi.h they are macros that Swift cannot
// import). MPICH-ABI libraries (MPICH, Intel MPI, Cray MPICH) use integer handles and are refused with a
// message. Every function returns MPI's error code (0 = MPI_SUCCESS) or -1 when the library is not loaded.
#ifndef CMPISHIM_H
#define CMPISHIM_H

#include <stddef.h>

/// MPI_THREAD_MULTIPLE (the same value, 3, in Open MPI and MPICH).
#define CMPI_THREAD_MULTIPLE 3
/// MPI_THREAD_FUNNELED.
#define CMPI_THREAD_FUNNELED 1

/// Loads the MPI library at `path` (or, when NULL or empty, libmpi.so.40, then libmpi.so) and resolves
/// every symbol; 0 on success, -1 with a one-line reason in `err` (NUL-terminated, `errlen` bytes).
int cmpi_load(const char *path, char *err, size_t errlen);

/// 1 once cmpi_load succeeded.
int cmpi_is_loaded(void);

/// MPI_Init_thread(NULL, NULL, required, &provided), then MPI_Comm_set_errhandler(MPI_COMM_WORLD,
/// MPI_ERRORS_RETURN) so failures come back as error codes instead of aborting inside the library.
int cmpi_init(int required, int *provided);

/// MPI_Finalize.
int cmpi_finalize(void);

/// MPI_Comm_rank / MPI_Comm_size of MPI_COMM_WORLD.
int cmpi_rank(int *rank);
int cmpi_size(int *size);

/// MPI_Allreduce(MPI_IN_PLACE, values, count, MPI_FLOAT / MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD).
int cmpi_allreduce_sum_float(float *values, int count);
int cmpi_allreduce_sum_double(double *values, int count);
/// The same with MPI_MAX (doubles).
int cmpi_allreduce_max_double(double *values, int count);

/// MPI_Alltoallv(send, send_counts, send_offsets, MPI_FLOAT, receive, receive_counts, receive_offsets, MPI_FLOAT,
/// MPI_COMM_WORLD): counts and offsets in floats, one entry per rank.
int cmpi_alltoallv_float(const float *send, const int *send_counts, const int *send_offsets, float *receive,
                         const int *receive_counts, const int *receive_offsets);

/// MPI_Bcast(bytes, count, MPI_BYTE, root, MPI_COMM_WORLD).
int cmpi_broadcast_bytes(void *bytes, int count, int root);

/// MPI_Barrier(MPI_COMM_WORLD).
int cmpi_barrier(void);

/// MPI_Abort(MPI_COMM_WORLD, code): ends every rank of the job.
int cmpi_abort(int code);

/// MPI_Error_string into `out` (`outlen` bytes, NUL-terminated).
void cmpi_error_string(int code, char *out, size_t outlen);

#endif
