#ifndef CLSHIM_H
#define CLSHIM_H

// hrtrain targets the OpenCL 1.2 API: it is what PoCL, NVIDIA, AMD and Intel all implement.
#define CL_TARGET_OPENCL_VERSION 120
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS

#include <CL/cl.h>
#include <clblast_c.h>

/// The symbolic name of an OpenCL or CLBlast status code ("CL_OUT_OF_RESOURCES",
/// "CLBlastInsufficientMemoryC", ...). CLBlast reuses OpenCL's numbers for the codes they share,
/// so one table covers both. Never returns NULL.
const char *clshim_status_name(int code);

/// Commands enqueued and host waits since the process started, by every caller (hrtrain and CLBlast): see
/// commands.c for how CLBlast's calls are counted too.
struct clshim_command_counts {
    /// clEnqueueNDRangeKernel calls.
    unsigned long kernels;
    /// clEnqueueReadBuffer, clEnqueueWriteBuffer, clEnqueueCopyBuffer and clEnqueueFillBuffer calls.
    unsigned long transfers;
    /// clFinish, clWaitForEvents, and blocking reads and writes: each one makes the host wait for the device.
    unsigned long synchronisations;
};

/// The counts so far.
void clshim_command_counts(struct clshim_command_counts *out);

#endif
