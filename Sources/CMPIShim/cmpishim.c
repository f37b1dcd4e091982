// dlopen/dlsym binding of MPI for hrtrain (see CMPIShim.h). Open MPI ABI only.
#include "CMPIShim.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

typedef void *handle;  // MPI_Comm, MPI_Datatype, MPI_Op, MPI_Errhandler in Open MPI: pointers

static void *library = NULL;
static int (*p_init_thread)(int *, char ***, int, int *);
static int (*p_finalize)(void);
static int (*p_comm_rank)(handle, int *);
static int (*p_comm_size)(handle, int *);
static int (*p_allreduce)(const void *, void *, int, handle, handle, handle);
static int (*p_bcast)(void *, int, handle, int, handle);
static int (*p_alltoallv)(const void *, const int *, const int *, handle, void *, const int *, const int *, handle,
                          handle);
static int (*p_barrier)(handle);
static int (*p_abort)(handle, int);
static int (*p_error_string)(int, char *, int *);
static int (*p_comm_set_errhandler)(handle, handle);
static handle comm_world, type_float, type_double, type_byte, op_sum, op_max, errors_return;

/// MPI_IN_PLACE in Open MPI: ((void *) 1).
#define CMPI_IN_PLACE ((void *)1)

static int resolve(void **slot, const char *name, char *err, size_t errlen) {
    *slot = dlsym(library, name);
    if (*slot == NULL) {
        snprintf(err, errlen, "the MPI library has no symbol %s (hrtrain needs Open MPI's ABI, 4.x or 5.x)", name);
        return -1;
    }
    return 0;
}

int cmpi_load(const char *path, char *err, size_t errlen) {
    if (library != NULL) return 0;
    const char *candidates[] = {path, "libmpi.so.40", "libmpi.so"};
    int first = (path != NULL && path[0] != '\0') ? 0 : 1;
    int last = first == 0 ? 0 : 2;  // an explicit path is the only one tried
    const char *reason = "no library tried";
    for (int i = first; i <= last && library == NULL; i++) {
        library = dlopen(candidates[i], RTLD_NOW | RTLD_GLOBAL);
        if (library == NULL) reason = dlerror();
    }
    if (library == NULL) {
        snprintf(err, errlen, "cannot load the MPI library: %s", reason);
        return -1;
    }
    struct {
        void **slot;
        const char *name;
    } symbols[] = {
        {(void **)&p_init_thread, "MPI_Init_thread"},
        {(void **)&p_finalize, "MPI_Finalize"},
        {(void **)&p_comm_rank, "MPI_Comm_rank"},
        {(void **)&p_comm_size, "MPI_Comm_size"},
        {(void **)&p_allreduce, "MPI_Allreduce"},
        {(void **)&p_bcast, "MPI_Bcast"},
        {(void **)&p_alltoallv, "MPI_Alltoallv"},
        {(void **)&p_barrier, "MPI_Barrier"},
        {(void **)&p_abort, "MPI_Abort"},
        {(void **)&p_error_string, "MPI_Error_string"},
        {(void **)&p_comm_set_errhandler, "MPI_Comm_set_errhandler"},
        {&comm_world, "ompi_mpi_comm_world"},
        {&type_float, "ompi_mpi_float"},
        {&type_double, "ompi_mpi_double"},
        {&type_byte, "ompi_mpi_byte"},
        {&op_sum, "ompi_mpi_op_sum"},
        {&op_max, "ompi_mpi_op_max"},
        {&errors_return, "ompi_mpi_errors_return"},
    };
    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
        if (resolve(symbols[i].slot, symbols[i].name, err, errlen) != 0) {
            dlclose(library);
            library = NULL;
            return -1;
        }
    }
    return 0;
}

int cmpi_is_loaded(void) { return library != NULL; }

int cmpi_init(int required, int *provided) {
    if (library == NULL) return -1;
    int code = p_init_thread(NULL, NULL, required, provided);
    if (code != 0) return code;
    return p_comm_set_errhandler(comm_world, errors_return);
}

int cmpi_finalize(void) { return library == NULL ? -1 : p_finalize(); }
int cmpi_rank(int *rank) { return library == NULL ? -1 : p_comm_rank(comm_world, rank); }
int cmpi_size(int *size) { return library == NULL ? -1 : p_comm_size(comm_world, size); }

int cmpi_allreduce_sum_float(float *values, int count) {
    return library == NULL ? -1 : p_allreduce(CMPI_IN_PLACE, values, count, type_float, op_sum, comm_world);
}

int cmpi_allreduce_sum_double(double *values, int count) {
    return library == NULL ? -1 : p_allreduce(CMPI_IN_PLACE, values, count, type_double, op_sum, comm_world);
}

int cmpi_allreduce_max_double(double *values, int count) {
    return library == NULL ? -1 : p_allreduce(CMPI_IN_PLACE, values, count, type_double, op_max, comm_world);
}

int cmpi_alltoallv_float(const float *send, const int *send_counts, const int *send_offsets, float *receive,
                         const int *receive_counts, const int *receive_offsets) {
    if (library == NULL) return -1;
    return p_alltoallv(send, send_counts, send_offsets, type_float, receive, receive_counts, receive_offsets,
                       type_float, comm_world);
}

int cmpi_broadcast_bytes(void *bytes, int count, int root) {
    return library == NULL ? -1 : p_bcast(bytes, count, type_byte, root, comm_world);
}

int cmpi_barrier(void) { return library == NULL ? -1 : p_barrier(comm_world); }
int cmpi_abort(int code) { return library == NULL ? -1 : p_abort(comm_world, code); }

void cmpi_error_string(int code, char *out, size_t outlen) {
    if (outlen == 0) return;
    out[0] = '\0';
    if (library == NULL) {
        snprintf(out, outlen, "MPI is not loaded");
        return;
    }
    char text[512];  // MPI_MAX_ERROR_STRING is 256 in Open MPI
    int length = 0;
    if (p_error_string(code, text, &length) != 0) {
        snprintf(out, outlen, "MPI error %d", code);
        return;
    }
    snprintf(out, outlen, "%.*s", length, text);
}
