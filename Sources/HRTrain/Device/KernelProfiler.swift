import CLShim

/// Device time, launches and work of one kernel (or GEMM shape) summed over the profiled launches.
public struct KernelTotals: Sendable, Equatable {
    public var nanoseconds: UInt64 = 0
    public var calls = 0
    /// Floating-point operations done (GEMMs: 2·m·n·k).
    public var flops = 0.0
    /// Bytes read and written in global memory (estimated from the tensor sizes).
    public var bytes = 0.0
}

/// Collects OpenCL profiling events per kernel name and sums their device time.
public final class KernelProfiler {
    private var pending: [(name: String, event: cl_event, flops: Double, bytes: Double)] = []
    /// Totals per kernel name.
    public private(set) var totals: [String: KernelTotals] = [:]

    /// Creates an empty profiler.
    public init() {}

    deinit { for p in pending { clReleaseEvent(p.event) } }

    func record(_ name: String, _ event: cl_event, flops: Double, bytes: Double) {
        pending.append((name, event, flops, bytes))
    }

    /// Waits for the recorded events and adds their durations to `totals`.
    public func collect() throws {
        defer {
            for p in pending { clReleaseEvent(p.event) }
            pending.removeAll()
        }
        for (name, event, flops, bytes) in pending {
            var event: cl_event? = event
            try clCheck(clWaitForEvents(1, &event), "clWaitForEvents", detail: name)
            var start: cl_ulong = 0
            var end: cl_ulong = 0
            try clCheck(
                clGetEventProfilingInfo(
                    event, cl_profiling_info(CL_PROFILING_COMMAND_START), MemoryLayout<cl_ulong>.size, &start, nil),
                "clGetEventProfilingInfo", detail: name)
            try clCheck(
                clGetEventProfilingInfo(
                    event, cl_profiling_info(CL_PROFILING_COMMAND_END), MemoryLayout<cl_ulong>.size, &end, nil),
                "clGetEventProfilingInfo", detail: name)
            var t = totals[name] ?? KernelTotals()
            t.nanoseconds += end > start ? end - start : 0
            t.calls += 1
            t.flops += flops
            t.bytes += bytes
            totals[name] = t
        }
    }

    /// Forgets everything collected so far.
    public func reset() throws {
        try collect()
        totals.removeAll()
    }
}
