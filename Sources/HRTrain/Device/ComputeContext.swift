import CLShim
import Foundation
import HRTrainKernels

/// One OpenCL device in use: its context, one in-order command queue (profiling enabled) and the
/// built kernel program. A run creates one and keeps it for its whole life.
///
/// OpenCL handles are not thread-safe in the way Swift's `Sendable` means, so a context is confined to
/// the thread that uses it; nothing in hrtrain shares one across threads.
public final class ComputeContext {
    /// The device's description.
    public let device: DeviceInfo
    let deviceID: cl_device_id
    let context: cl_context
    /// The in-order queue every command goes to.
    var queue: cl_command_queue?
    /// The built program holding every kernel of `Kernels/*.cl`.
    let program: cl_program
    private var kernels: [String: Kernel] = [:]
    /// How the kernel program was obtained this run (for `verify`, `bench` and the cache test).
    public let programBuild: ProgramBuildReport
    /// The tuned GEMM parameters applied to CLBlast for this device, if any.
    public private(set) var gemmTuning: StoredGEMMTuning?
    /// Which GEMM parameters CLBlast runs with: "tuned" (stored by `hrtrain tune`), "built-in" (hrtrain's
    /// defaults for the device, see `CLBlastParameters.builtIn`) or "CLBlast's defaults".
    public private(set) var gemmParametersOrigin = "CLBlast's defaults"
    /// The GEMM parameters applied when the context opened (stored or built-in; nil: CLBlast's defaults), by
    /// which `OpenCLBackend.matmul` routes each call (see `GEMMKernelPlan`).
    public internal(set) var gemmParameters: GEMMParameters?
    /// When non-nil, every launch records its profiling event here (see `bench`).
    public var profiler: KernelProfiler?
    /// Device memory held by this context's buffers.
    public let memory = DeviceMemoryTracker()
    /// The buffer pool of this context.
    public private(set) lazy var pool = BufferPool(context: self)

    /// Opens the device chosen by `deviceIndex` (or `$HRTRAIN_DEVICE`, or the first GPU, or the first device),
    /// builds (or loads from the on-disk cache) the kernel program, and applies the GEMM parameters that
    /// `hrtrain tune` stored for this device (unless `tunedGEMM` is false).
    public convenience init(deviceIndex: Int? = nil, cache: ProgramCache = .standard, tunedGEMM: Bool = true) throws {
        try self.init(handle: DeviceCatalog.select(deviceIndex), cache: cache, tunedGEMM: tunedGEMM)
    }

    init(handle: DeviceHandle, cache: ProgramCache, tunedGEMM: Bool = true) throws {
        device = handle.info
        deviceID = handle.id
        var status: cl_int = 0
        var id: cl_device_id? = handle.id
        guard let ctx = clCreateContext(nil, 1, &id, nil, nil, &status) else {
            try clCheck(status, "clCreateContext", detail: "device \(handle.info.name)")
            throw DeviceError("clCreateContext returned no context for \(handle.info.name)")
        }
        try clCheck(status, "clCreateContext", detail: "device \(handle.info.name)")
        context = ctx
        let q = clCreateCommandQueue(ctx, handle.id, cl_command_queue_properties(CL_QUEUE_PROFILING_ENABLE), &status)
        guard status == CL_SUCCESS, let q else {
            // Released here, once: the initialiser throws before `context` is owned by a finished object, so
            // deinit does not run.
            clReleaseContext(ctx)
            try clCheck(status, "clCreateCommandQueue", detail: "device \(handle.info.name)")
            throw DeviceError("clCreateCommandQueue returned no queue (and CL_SUCCESS) for \(handle.info.name)")
        }
        queue = q
        do {
            (program, programBuild) = try cache.program(
                sources: KernelSourceSet.current(), options: KernelSourceSet.buildOptions, context: ctx,
                device: handle)
        } catch {
            clReleaseCommandQueue(q)
            clReleaseContext(ctx)
            throw error
        }
        if tunedGEMM {
            if let directory = cache.directory {
                gemmTuning = try CLBlastParameters.applyStored(for: self, cache: directory)
            }
            if let gemmTuning {
                gemmParametersOrigin = "tuned (stored by hrtrain tune)"
                gemmParameters = gemmTuning.parameters
            } else if let builtIn = CLBlastParameters.builtIn(for: device) {
                try CLBlastParameters.apply(builtIn.parameters, to: self)
                gemmParametersOrigin = "built-in (\(builtIn.source))"
                gemmParameters = builtIn.parameters
            }
        }
    }

    deinit {
        kernels.removeAll()
        clReleaseProgram(program)
        if let queue {
            clFinish(queue)
            clReleaseCommandQueue(queue)
        }
        clReleaseContext(context)
    }

    /// The kernel called `name` (built once per run, then reused).
    func kernel(_ name: String) throws -> Kernel {
        if let k = kernels[name] { return k }
        var status: cl_int = 0
        let handle = name.withCString { clCreateKernel(program, $0, &status) }
        try clCheck(status, "clCreateKernel", detail: "kernel \(name)")
        let k = Kernel(name: name, handle: handle!)
        kernels[name] = k
        return k
    }

    /// Blocks until every queued command has finished.
    public func finish() throws {
        try clCheck(clFinish(queue), "clFinish")
    }

    /// Enqueues `kernel` over `global` work-items (rounded up to a multiple of `local`); `bytes` is the
    /// global-memory traffic it causes, for the profile.
    func launch(_ kernel: Kernel, global: [Int], local: [Int]? = nil, bytes: Int = 0) throws {
        var globalSize = global
        if let local {
            for d in global.indices { globalSize[d] = (global[d] + local[d] - 1) / local[d] * local[d] }
        }
        if globalSize.contains(0) { return }
        let status = recordingEvent(kernel.name, bytes: Double(bytes)) { event in
            globalSize.withUnsafeBufferPointer { g in
                (local ?? []).withUnsafeBufferPointer { l in
                    clEnqueueNDRangeKernel(
                        queue, kernel.handle, cl_uint(global.count), nil, g.baseAddress,
                        local == nil ? nil : l.baseAddress, 0, nil, event)
                }
            }
        }
        try clCheck(
            status, "clEnqueueNDRangeKernel",
            detail: "kernel \(kernel.name), global \(globalSize), local \(local ?? [])")
    }

    /// Runs `enqueue` with an event pointer when profiling (nil otherwise) and records the event as `name`.
    func recordingEvent<R>(
        _ name: String, flops: Double = 0, bytes: Double = 0, _ enqueue: (UnsafeMutablePointer<cl_event?>?) -> R
    ) -> R {
        guard let profiler else { return enqueue(nil) }
        var event: cl_event? = nil
        let result = enqueue(&event)
        if let event { profiler.record(name, event, flops: flops, bytes: bytes) }
        return result
    }
}

/// A kernel handle and the typed argument setters.
final class Kernel {
    let name: String
    let handle: cl_kernel
    init(name: String, handle: cl_kernel) {
        self.name = name
        self.handle = handle
    }
    deinit { clReleaseKernel(handle) }

    /// The largest work-group this kernel can be launched with on `device` (`CL_KERNEL_WORK_GROUP_SIZE`).
    func maximumWorkGroupSize(on device: cl_device_id) throws -> Int {
        if let known = maximumWorkGroup { return known }
        var size = 0
        try clCheck(
            clGetKernelWorkGroupInfo(
                handle, device, cl_kernel_work_group_info(CL_KERNEL_WORK_GROUP_SIZE), MemoryLayout<Int>.size, &size,
                nil), "clGetKernelWorkGroupInfo", detail: "kernel \(name)")
        maximumWorkGroup = size
        return size
    }
    private var maximumWorkGroup: Int?

    /// The argument values of one launch, in order.
    enum Argument {
        /// A tensor: its buffer, then its element offset (two kernel arguments, in that order).
        case tensor(DeviceTensor)
        case buffer(cl_mem)
        case int(Int32)
        case float(Float)
        /// Local memory of this many bytes (a `__local` pointer argument).
        case local(bytes: Int)
    }

    /// Sets all arguments, in order.
    func setArguments(_ arguments: [Argument]) throws {
        let expanded = arguments.flatMap { argument -> [Argument] in
            if case .tensor(let tensor) = argument { return [.buffer(tensor.buffer.mem), .int(Int32(tensor.offset))] }
            return [argument]
        }
        for (i, argument) in expanded.enumerated() {
            let status: cl_int
            switch argument {
            case .tensor: preconditionFailure("tensor arguments are expanded above")
            case .buffer(let mem):
                var m: cl_mem? = mem
                status = clSetKernelArg(handle, cl_uint(i), MemoryLayout<cl_mem?>.size, &m)
            case .int(var v):
                status = clSetKernelArg(handle, cl_uint(i), MemoryLayout<Int32>.size, &v)
            case .float(var v):
                status = clSetKernelArg(handle, cl_uint(i), MemoryLayout<Float>.size, &v)
            case .local(let bytes):
                status = clSetKernelArg(handle, cl_uint(i), bytes, nil)
            }
            try clCheck(status, "clSetKernelArg", detail: "kernel \(name), argument \(i)")
        }
    }
}

/// The kernel sources in use: the embedded ones, or those of `$HRTRAIN_KERNELS_DIR` when set (to iterate on
/// kernels without rebuilding hrtrain).
enum KernelSourceSet {
    /// Build options for every kernel program. No fast-math: `verify` compares against a Double reference.
    static let buildOptions = "-cl-std=CL1.2"

    static func current(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        if let dir = environment["HRTRAIN_KERNELS_DIR"], !dir.isEmpty {
            return try KernelSources.files.map { file in
                let url = URL(fileURLWithPath: dir).appendingPathComponent(file.name)
                do { return try String(contentsOf: url, encoding: .utf8) } catch {
                    throw DeviceError(
                        "HRTRAIN_KERNELS_DIR=\(dir): cannot read \(url.path): \(error.localizedDescription)")
                }
            }.joined(separator: "\n")
        }
        return KernelSources.files.map { "// ---- \($0.name)\n" + $0.source }.joined(separator: "\n")
    }
}
