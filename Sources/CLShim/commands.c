// Command counting: the OpenCL calls that enqueue work or wait for it, wrapped so that every caller in the
// process -- hrtrain's own code and CLBlast alike -- goes through a counter before the real function.
//
// How: these definitions live in the executable (CLShim is linked into it statically). The linker exports a
// symbol of the executable that a shared library linked with it (libclblast, libOpenCL) references, and the
// dynamic loader searches the executable first, so CLBlast's calls bind here too. Each wrapper forwards to the
// next definition in the search order (dlsym(RTLD_NEXT): the ICD loader's). clshim_commands_interposed() tells
// whether CLBlast's calls really arrive here (hrtrain checks it on a GEMM and says so when they do not).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "CLShim.h"

static atomic_ulong kernels, transfers, synchronisations;

void clshim_command_counts(struct clshim_command_counts *out) {
    out->kernels = atomic_load(&kernels);
    out->transfers = atomic_load(&transfers);
    out->synchronisations = atomic_load(&synchronisations);
}

// The next definition of `name` after this one (the ICD loader's); aborts with a message if there is none.
static void *next_definition(const char *name) {
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) {
        fprintf(stderr, "hrtrain: CLShim cannot find the OpenCL function %s after its counting wrapper\n", name);
        abort();
    }
    return f;
}

#define NEXT(name) \
    static name##_fn real = NULL; \
    if (!real) real = (name##_fn)next_definition(#name)

typedef cl_int (*clEnqueueNDRangeKernel_fn)(cl_command_queue, cl_kernel, cl_uint, const size_t *, const size_t *,
                                            const size_t *, cl_uint, const cl_event *, cl_event *);
cl_int clEnqueueNDRangeKernel(cl_command_queue q, cl_kernel k, cl_uint dims, const size_t *offset,
                              const size_t *global, const size_t *local, cl_uint n, const cl_event *wait,
                              cl_event *event) {
    NEXT(clEnqueueNDRangeKernel);
    atomic_fetch_add(&kernels, 1);
    return real(q, k, dims, offset, global, local, n, wait, event);
}

typedef cl_int (*clEnqueueReadBuffer_fn)(cl_command_queue, cl_mem, cl_bool, size_t, size_t, void *, cl_uint,
                                         const cl_event *, cl_event *);
cl_int clEnqueueReadBuffer(cl_command_queue q, cl_mem b, cl_bool blocking, size_t offset, size_t size, void *p,
                           cl_uint n, const cl_event *wait, cl_event *event) {
    NEXT(clEnqueueReadBuffer);
    atomic_fetch_add(&transfers, 1);
    if (blocking) atomic_fetch_add(&synchronisations, 1);
    return real(q, b, blocking, offset, size, p, n, wait, event);
}

typedef cl_int (*clEnqueueWriteBuffer_fn)(cl_command_queue, cl_mem, cl_bool, size_t, size_t, const void *, cl_uint,
                                          const cl_event *, cl_event *);
cl_int clEnqueueWriteBuffer(cl_command_queue q, cl_mem b, cl_bool blocking, size_t offset, size_t size,
                            const void *p, cl_uint n, const cl_event *wait, cl_event *event) {
    NEXT(clEnqueueWriteBuffer);
    atomic_fetch_add(&transfers, 1);
    if (blocking) atomic_fetch_add(&synchronisations, 1);
    return real(q, b, blocking, offset, size, p, n, wait, event);
}

typedef cl_int (*clEnqueueCopyBuffer_fn)(cl_command_queue, cl_mem, cl_mem, size_t, size_t, size_t, cl_uint,
                                         const cl_event *, cl_event *);
cl_int clEnqueueCopyBuffer(cl_command_queue q, cl_mem src, cl_mem dst, size_t src_offset, size_t dst_offset,
                           size_t size, cl_uint n, const cl_event *wait, cl_event *event) {
    NEXT(clEnqueueCopyBuffer);
    atomic_fetch_add(&transfers, 1);
    return real(q, src, dst, src_offset, dst_offset, size, n, wait, event);
}

typedef cl_int (*clEnqueueFillBuffer_fn)(cl_command_queue, cl_mem, const void *, size_t, size_t, size_t, cl_uint,
                                         const cl_event *, cl_event *);
cl_int clEnqueueFillBuffer(cl_command_queue q, cl_mem b, const void *pattern, size_t pattern_size, size_t offset,
                           size_t size, cl_uint n, const cl_event *wait, cl_event *event) {
    NEXT(clEnqueueFillBuffer);
    atomic_fetch_add(&transfers, 1);
    return real(q, b, pattern, pattern_size, offset, size, n, wait, event);
}

typedef cl_int (*clFinish_fn)(cl_command_queue);
cl_int clFinish(cl_command_queue q) {
    NEXT(clFinish);
    atomic_fetch_add(&synchronisations, 1);
    return real(q);
}

typedef cl_int (*clWaitForEvents_fn)(cl_uint, const cl_event *);
cl_int clWaitForEvents(cl_uint n, const cl_event *events) {
    NEXT(clWaitForEvents);
    atomic_fetch_add(&synchronisations, 1);
    return real(n, events);
}
