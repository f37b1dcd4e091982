import CLShim

/// Device memory held by one context's buffers: now and at the peak.
public final class DeviceMemoryTracker {
    /// Bytes allocated now.
    public private(set) var currentBytes = 0
    /// The most bytes allocated at once.
    public private(set) var peakBytes = 0
    func add(_ bytes: Int) {
        currentBytes += bytes
        peakBytes = max(peakBytes, currentBytes)
    }
    func remove(_ bytes: Int) { currentBytes -= bytes }
}

/// An OpenCL buffer: owns its `cl_mem` and releases it on deinit.
public final class CLBuffer {
    let mem: cl_mem
    /// Size in bytes.
    public let byteCount: Int
    private let tracker: DeviceMemoryTracker

    init(context: ComputeContext, byteCount: Int) throws {
        let device = context.device
        let requested = max(byteCount, 4)
        if requested > device.maxAllocationBytes {
            throw DeviceError(
                "cannot allocate \(formatBytes(requested)) on \(device.name): its largest single allocation is "
                    + "\(formatBytes(device.maxAllocationBytes)) (global memory "
                    + "\(formatBytes(device.globalMemoryBytes)))"
            )
        }
        var status: cl_int = 0
        let mem = clCreateBuffer(context.context, cl_mem_flags(CL_MEM_READ_WRITE), requested, nil, &status)
        try clCheck(
            status, "clCreateBuffer",
            detail:
                "asked for \(formatBytes(requested)) on \(device.name), which has "
                + "\(formatBytes(device.globalMemoryBytes)) of global memory (largest allocation "
                + "\(formatBytes(device.maxAllocationBytes)))"
        )
        self.mem = mem!
        self.byteCount = requested
        tracker = context.memory
        tracker.add(requested)
    }

    deinit {
        clReleaseMemObject(mem)
        tracker.remove(byteCount)
    }
}

/// A Float32 row-major tensor on an OpenCL device: a shape and an element offset into a `CLBuffer`.
///
/// Views (`view(offset:shape:)`) share the buffer; this is how every parameter and gradient tensor lives
/// inside one flat buffer that Adam updates in a single launch. A tensor made by `BufferPool.tensor`
/// hands its buffer back to the pool when the last reference goes.
public final class DeviceTensor {
    /// The storage; shared by views.
    public let buffer: CLBuffer
    /// Offset of element 0 in the buffer, in elements.
    public let offset: Int
    /// The shape, row-major.
    public let shape: [Int]
    private weak var pool: BufferPool?

    init(buffer: CLBuffer, offset: Int, shape: [Int], pool: BufferPool?) {
        self.buffer = buffer
        self.offset = offset
        self.shape = shape
        self.pool = pool
    }

    deinit { pool?.recycle(buffer) }

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
    /// Rows of a matrix (the first dimension).
    public var rows: Int { shape.first ?? 1 }
    /// Columns of a matrix (the product of the remaining dimensions).
    public var columns: Int { shape.dropFirst().reduce(1, *) }

    /// A view of `shape.product` elements starting `offset` elements into this tensor.
    public func view(offset: Int, shape: [Int]) -> DeviceTensor {
        precondition(offset >= 0 && offset + shape.reduce(1, *) <= count, "DeviceTensor.view out of range")
        return DeviceTensor(buffer: buffer, offset: self.offset + offset, shape: shape, pool: nil)
    }
}

/// Reuses device buffers across training steps: a released buffer goes back to a free list keyed by its
/// byte size and is handed out again for the next request of that size.
public final class BufferPool {
    private unowned let context: ComputeContext
    private var free: [Int: [CLBuffer]] = [:]

    init(context: ComputeContext) { self.context = context }

    /// A tensor of `shape` whose contents are undefined until written.
    public func tensor(_ shape: [Int]) throws -> DeviceTensor {
        let bytes = max(shape.reduce(1, *), 1) * MemoryLayout<Float>.size
        if var list = free[bytes], let buffer = list.popLast() {
            free[bytes] = list
            return DeviceTensor(buffer: buffer, offset: 0, shape: shape, pool: self)
        }
        let buffer = try CLBuffer(context: context, byteCount: bytes)
        return DeviceTensor(buffer: buffer, offset: 0, shape: shape, pool: self)
    }

    func recycle(_ buffer: CLBuffer) { free[buffer.byteCount, default: []].append(buffer) }
}

extension ComputeContext {
    /// Copies host values into `tensor` (blocking).
    public func upload(_ values: [Float], to tensor: DeviceTensor) throws {
        precondition(values.count == tensor.count, "upload: \(values.count) values for a tensor of \(tensor.count)")
        try values.withUnsafeBytes { raw in
            try clCheck(
                clEnqueueWriteBuffer(
                    queue, tensor.buffer.mem, cl_bool(CL_TRUE), tensor.offset * 4, raw.count, raw.baseAddress, 0, nil,
                    nil),
                "clEnqueueWriteBuffer", detail: "\(formatBytes(raw.count))")
        }
    }

    /// Copies `tensor` back to the host (blocking).
    public func download(_ tensor: DeviceTensor) throws -> [Float] {
        var values = [Float](repeating: 0, count: tensor.count)
        try values.withUnsafeMutableBytes { raw in
            try clCheck(
                clEnqueueReadBuffer(
                    queue, tensor.buffer.mem, cl_bool(CL_TRUE), tensor.offset * 4, raw.count, raw.baseAddress, 0, nil,
                    nil),
                "clEnqueueReadBuffer", detail: "\(formatBytes(raw.count))")
        }
        return values
    }

    /// Device-to-device copy of `source` into `destination` (same element count).
    public func copy(_ source: DeviceTensor, to destination: DeviceTensor) throws {
        precondition(source.count == destination.count, "copy: element counts differ")
        let status = recordingEvent("copy", bytes: Double(2 * source.count * 4)) { event in
            clEnqueueCopyBuffer(
                queue, source.buffer.mem, destination.buffer.mem, source.offset * 4, destination.offset * 4,
                source.count * 4, 0, nil, event)
        }
        try clCheck(status, "clEnqueueCopyBuffer")
    }
}
