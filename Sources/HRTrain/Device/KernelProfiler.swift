import CLShim

/// Collects OpenCL profiling events per kernel name and sums their device time.
public final class KernelProfiler {
    private var pending: [(String, cl_event)] = []
    /// Total device nanoseconds and launch count per kernel name.
    public private(set) var totals: [String: (nanoseconds: UInt64, calls: Int)] = [:]

    /// Creates an empty profiler.
    public init() {}

    deinit { for (_, event) in pending { clReleaseEvent(event) } }

    func record(_ name: String, _ event: cl_event) { pending.append((name, event)) }

    /// Waits for the recorded events and adds their durations to `totals`.
    public func collect() throws {
        defer {
            for (_, event) in pending { clReleaseEvent(event) }
            pending.removeAll()
        }
        for (name, event) in pending {
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
            let previous = totals[name] ?? (0, 0)
            totals[name] = (previous.nanoseconds + (end > start ? end - start : 0), previous.calls + 1)
        }
    }

    /// Forgets everything collected so far.
    public func reset() throws {
        try collect()
        totals.removeAll()
    }
}
