import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A size that cannot be allocated: it overflows, or exceeds the host's or the device's memory.
///
/// The description names what was to be allocated, its size and the limit:
/// `dataset "data" of shape (1000000000000, 40) needs 149 TiB as Float32, more than this machine's 11.1 GiB`.
public struct SizeLimitError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What was to be allocated, e.g. `dataset "data" of shape (10, 40)`.
    public var what: String
    /// The bytes it needs; nil when the size overflows 64-bit arithmetic.
    public var bytes: Int?
    /// The limit it exceeds, in bytes (nil on overflow).
    public var limit: Int?
    /// The name of the limit, e.g. `this machine's memory`.
    public var limitName: String

    /// Creates the error.
    public init(what: String, bytes: Int?, limit: Int?, limitName: String) {
        self.what = what
        self.bytes = bytes
        self.limit = limit
        self.limitName = limitName
    }

    /// `<what> needs <size>, more than <limit name> (<limit>)`, or `<what> is too large (its size overflows)`.
    public var description: String {
        if limitName == "invalid" { return what }
        guard let bytes, let limit else {
            return "\(what) is too large: its size in bytes overflows 64-bit arithmetic"
        }
        return "\(what) needs \(bytes) bytes (\(formatBytes(bytes))), more than \(limitName) (\(formatBytes(limit)))"
    }
}

/// The one place that bounds sizes read from flags, file headers, model metadata and checkpoints before
/// anything is allocated: overflow-safe products and sums, checked against the host's memory and, where a
/// device is involved, against the device's global memory and largest allocation.
public enum SizeLimits {
    /// The host memory an allocation may use: the physical memory (or `RLIMIT_AS` when lower), or
    /// `$HRTRAIN_MEMORY_LIMIT` bytes when set (to test the limit).
    public static var hostMemoryBytes: Int {
        if let text = ProcessInfo.processInfo.environment["HRTRAIN_MEMORY_LIMIT"], let value = Int(text), value > 0 {
            return value
        }
        var physical = Int(ProcessInfo.processInfo.physicalMemory)
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_AS.rawValue), &limit) == 0, limit.rlim_cur < UInt64(Int.max) {
            physical = min(physical, Int(limit.rlim_cur))
        }
        return physical
    }

    /// The product of `factors`, or a SizeLimitError naming `what` if it overflows or a factor is negative.
    public static func product(_ factors: [Int], what: @autoclosure () -> String) throws -> Int {
        var result = 1
        for factor in factors {
            guard factor >= 0 else { throw SizeLimitError(what: what(), bytes: nil, limit: nil, limitName: "") }
            let (next, overflow) = result.multipliedReportingOverflow(by: factor)
            guard !overflow else { throw SizeLimitError(what: what(), bytes: nil, limit: nil, limitName: "") }
            result = next
        }
        return result
    }

    /// The sum of `terms`, or a SizeLimitError naming `what` if it overflows.
    public static func sum(_ terms: [Int], what: @autoclosure () -> String) throws -> Int {
        var result = 0
        for term in terms {
            let (next, overflow) = result.addingReportingOverflow(term)
            guard !overflow, term >= 0 else {
                throw SizeLimitError(what: what(), bytes: nil, limit: nil, limitName: "")
            }
            result = next
        }
        return result
    }

    /// Checks that `bytes` fit in the host's memory.
    public static func requireHost(bytes: Int, what: @autoclosure () -> String) throws {
        let limit = hostMemoryBytes
        guard bytes <= limit else {
            throw SizeLimitError(what: what(), bytes: bytes, limit: limit, limitName: "this machine's memory")
        }
    }

    /// The bytes of an array of `shape` with elements of `elementSize` bytes, checked against the host's
    /// memory; returns the element count.
    @discardableResult
    public static func requireHostArray(shape: [Int], elementSize: Int, what: @autoclosure () -> String) throws -> Int {
        let description = what()
        let count = try product(shape, what: description)
        let bytes = try product([count, elementSize], what: description)
        try requireHost(bytes: bytes, what: description)
        return count
    }

    /// Checks a device allocation plan: the largest buffer against the device's largest allocation and the
    /// total against its global memory.
    public static func requireDevice(
        totalBytes: Int, largestBufferBytes: Int, device: DeviceInfo, what: @autoclosure () -> String
    ) throws {
        let description = what()
        guard largestBufferBytes <= device.maxAllocationBytes else {
            throw SizeLimitError(
                what: description + " (its largest buffer)", bytes: largestBufferBytes,
                limit: device.maxAllocationBytes, limitName: "the largest allocation of \(device.name)")
        }
        guard totalBytes <= device.globalMemoryBytes else {
            throw SizeLimitError(
                what: description, bytes: totalBytes, limit: device.globalMemoryBytes,
                limitName: "the memory of \(device.name)")
        }
    }

    /// What a network of `spec` needs to train or run with batches of `batch` rows.
    public struct NetworkFootprint: Sendable, Equatable {
        /// Trainable parameters.
        public var parameterCount: Int
        /// Batch-norm running statistics.
        public var runningCount: Int
        /// Host bytes: parameters, Adam moments and their copies (Double and Float32), the Double reference's
        /// activations when it runs the batch.
        public var hostBytes: Int
        /// Device bytes (Float32): parameters, gradients, two moments, and the activations of one batch.
        public var deviceBytes: Int
        /// The largest single device buffer.
        public var largestDeviceBufferBytes: Int
    }

    /// The footprint of `spec` with batches of `batch` rows, every size overflow-checked; throws a
    /// SizeLimitError when a size overflows or the host's memory is exceeded.
    public static func network(_ spec: NetworkSpec, batch: Int, what: String = "the network") throws
        -> NetworkFootprint
    {
        let widths = [spec.inputSize] + spec.hiddenSizes + [spec.outputSize]
        let shape = "\(what) \(widths.map(String.init).joined(separator: "→")) with batch \(batch)"
        guard widths.allSatisfy({ $0 > 0 }), batch > 0 else {
            throw SizeLimitError(what: shape + " has a size ≤ 0", bytes: nil, limit: nil, limitName: "invalid")
        }
        var parameters = 0
        for layer in 0..<(widths.count - 1) {
            let weights = try product([widths[layer], widths[layer + 1]], what: shape)
            let perLayer = layer < spec.hiddenSizes.count ? 3 : 1  // bias, γ, β for hidden blocks
            parameters = try sum(
                [parameters, weights, try product([perLayer, widths[layer + 1]], what: shape)], what: shape)
        }
        let running = try product([2, try sum(spec.hiddenSizes, what: shape)], what: shape)
        let activationWidth = try sum(
            [
                spec.inputSize, try product([6, try sum(spec.hiddenSizes, what: shape)], what: shape),
                2 * spec.outputSize,
            ],
            what: shape)
        let activations = try product([batch, activationWidth], what: shape)
        let largestWidth = widths.max() ?? 1
        let deviceBytes = try product(
            [4, try sum([try product([4, parameters], what: shape), running, activations], what: shape)], what: shape)
        let largest = try product([4, max(parameters, try product([batch, largestWidth], what: shape))], what: shape)
        let hostBytes = try product(
            [8, try sum([try product([6, parameters], what: shape), running], what: shape)], what: shape)
        try requireHost(bytes: hostBytes, what: shape)
        return NetworkFootprint(
            parameterCount: parameters, runningCount: running, hostBytes: hostBytes, deviceBytes: deviceBytes,
            largestDeviceBufferBytes: largest)
    }

    /// Checks that `spec` with batches of `batch` rows fits on `device` (and on the host).
    public static func requireNetwork(_ spec: NetworkSpec, batch: Int, on device: DeviceInfo) throws {
        let footprint = try network(spec, batch: batch)
        let widths = ([spec.inputSize] + spec.hiddenSizes + [spec.outputSize]).map(String.init)
        try requireDevice(
            totalBytes: footprint.deviceBytes, largestBufferBytes: footprint.largestDeviceBufferBytes, device: device,
            what: "the network \(widths.joined(separator: "→")) with batch \(batch)")
    }

    /// Checks that the Double reference can run `spec` with batches of `batch` rows on the host.
    public static func requireReferenceNetwork(_ spec: NetworkSpec, batch: Int) throws {
        let footprint = try network(spec, batch: batch)
        let widths = ([spec.inputSize] + spec.hiddenSizes + [spec.outputSize]).map(String.init)
        // Double activations and their gradients (×2) next to the parameters.
        let what = "the Double reference of the network \(widths.joined(separator: "→")) with batch \(batch)"
        let bytes = try sum([footprint.hostBytes, try product([4, footprint.deviceBytes], what: what)], what: what)
        try requireHost(bytes: bytes, what: what)
    }

    /// Checks, before a model's tensors are gathered, that the network its metadata declares is no larger
    /// than the tensors the file holds (`tensorBytes`): metadata cannot make hrtrain allocate more than the
    /// file itself.
    public static func requireModel(_ spec: NetworkSpec, tensorBytes: Int) throws {
        let widths = ([spec.inputSize] + spec.hiddenSizes + [spec.outputSize]).map(String.init)
        let what = "the network \(widths.joined(separator: "→")) declared in the metadata"
        let footprint = try network(spec, batch: 1, what: "the network declared in the metadata")
        let bytes = try product(
            [4, try sum([footprint.parameterCount, footprint.runningCount], what: what)], what: what)
        guard bytes <= tensorBytes else {
            throw SizeLimitError(what: what, bytes: bytes, limit: tensorBytes, limitName: "the tensors in the file")
        }
    }
}
