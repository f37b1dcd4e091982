import Foundation

/// A backend that runs every operation on `base` and adds its wall time to a per-operation table. Meant for
/// synchronous backends (`CPUBackend`, `ReferenceBackend`), where an operation's wall time is its cost; GEMMs are
/// recorded per shape (`gemm 4000x256x256 Bᵀ`).
public final class TimedBackend<Base: Backend>: Backend {
    public typealias Tensor = Base.Tensor
    public typealias Indices = Base.Indices

    /// The backend doing the work.
    public let base: Base
    /// Calls, wall seconds and CPU seconds of the calling thread per operation, while `recording` is on.
    public private(set) var totals: [String: (calls: Int, seconds: Double, flops: Double, cpuSeconds: Double)] = [:]
    /// Whether operations are timed.
    public var recording = false

    /// Wraps `base`.
    public init(_ base: Base) { self.base = base }

    /// Forgets the table.
    public func reset() { totals = [:] }

    public var name: String { base.name }

    @inline(__always) private func timed<T>(
        _ label: @autoclosure () -> String, flops: Double = 0, _ body: () throws -> T
    )
        rethrows -> T
    {
        guard recording else { return try body() }
        let cpuStart = threadCPUSeconds()
        let start = DispatchTime.now()
        let result = try body()
        let seconds = elapsed(since: start)
        let cpu = threadCPUSeconds() - cpuStart
        let key = label()
        let old = totals[key] ?? (0, 0, 0, 0)
        totals[key] = (old.calls + 1, old.seconds + seconds, old.flops + flops, old.cpuSeconds + cpu)
        return result
    }

    public func tensor(_ values: [Double], shape: [Int]) throws -> Tensor { try base.tensor(values, shape: shape) }
    public func tensor(_ values: [Float], shape: [Int]) throws -> Tensor { try base.tensor(values, shape: shape) }
    public func scratch(_ shape: [Int]) throws -> Tensor { try base.scratch(shape) }
    public func view(_ tensor: Tensor, offset: Int, shape: [Int]) -> Tensor {
        base.view(tensor, offset: offset, shape: shape)
    }
    public func shape(of tensor: Tensor) -> [Int] { base.shape(of: tensor) }
    public func read(_ tensor: Tensor) throws -> [Double] { try timed("read") { try base.read(tensor) } }
    public func readFloats(_ tensor: Tensor) throws -> [Float] { try timed("read") { try base.readFloats(tensor) } }
    public func write(_ values: [Double], to tensor: Tensor) throws {
        try timed("write") { try base.write(values, to: tensor) }
    }
    public func write(_ values: [Float], to tensor: Tensor) throws {
        try timed("write") { try base.write(values, to: tensor) }
    }
    public func copy(_ source: Tensor, to destination: Tensor) throws {
        try timed("copy") { try base.copy(source, to: destination) }
    }
    public func fill(_ tensor: Tensor, with value: Double) throws {
        try timed("fill") { try base.fill(tensor, with: value) }
    }
    public func indices(_ values: [Int32]) throws -> Indices { try base.indices(values) }
    public func synchronize() throws { try base.synchronize() }

    public func matmul(_ a: Tensor, transposeA: Bool, _ b: Tensor, transposeB: Bool, into c: Tensor) throws {
        let (m, n, k) = try matmulDimensions(
            base.shape(of: a), transposeA, base.shape(of: b), transposeB, base.shape(of: c))
        try timed(
            "gemm \(m)x\(n)x\(k)\(transposeA ? " Aᵀ" : "")\(transposeB ? " Bᵀ" : "")",
            flops: 2 * Double(m) * Double(n) * Double(k)
        ) {
            try base.matmul(a, transposeA: transposeA, b, transposeB: transposeB, into: c)
        }
    }
    public func biasAdd(_ z: Tensor, bias: Tensor, into y: Tensor) throws {
        try timed("bias add") { try base.biasAdd(z, bias: bias, into: y) }
    }
    public func columnSums(_ x: Tensor, into sums: Tensor) throws {
        try timed("column sums") { try base.columnSums(x, into: sums) }
    }
    public func biasTanh(_ z: Tensor, bias: Tensor, into y: Tensor) throws {
        try timed("bias + tanh") { try base.biasTanh(z, bias: bias, into: y) }
    }
    public func tanh(_ x: Tensor, into y: Tensor) throws { try timed("tanh") { try base.tanh(x, into: y) } }
    public func tanhBackward(outputGradient dy: Tensor, output y: Tensor, into dz: Tensor) throws {
        try timed("tanh backward") { try base.tanhBackward(outputGradient: dy, output: y, into: dz) }
    }
    public func batchNormTraining(
        _ x: Tensor, gamma: Tensor, beta: Tensor, runningMean: Tensor, runningVariance: Tensor, savedMean: Tensor,
        savedInverseStd: Tensor, settings: BatchNormSettings, into y: Tensor
    ) throws {
        try timed("batch norm (training)") {
            try base.batchNormTraining(
                x, gamma: gamma, beta: beta, runningMean: runningMean, runningVariance: runningVariance,
                savedMean: savedMean, savedInverseStd: savedInverseStd, settings: settings, into: y)
        }
    }
    public func batchNormInference(
        _ x: Tensor, gamma: Tensor, beta: Tensor, runningMean: Tensor, runningVariance: Tensor, epsilon: Double,
        into y: Tensor
    ) throws {
        try timed("batch norm (inference)") {
            try base.batchNormInference(
                x, gamma: gamma, beta: beta, runningMean: runningMean, runningVariance: runningVariance,
                epsilon: epsilon, into: y)
        }
    }
    public func batchNormBackward(
        outputGradient dy: Tensor, input x: Tensor, gamma: Tensor, savedMean: Tensor, savedInverseStd: Tensor,
        inputGradient dx: Tensor, gammaGradient: Tensor, betaGradient: Tensor
    ) throws {
        try timed("batch norm backward") {
            try base.batchNormBackward(
                outputGradient: dy, input: x, gamma: gamma, savedMean: savedMean, savedInverseStd: savedInverseStd,
                inputGradient: dx, gammaGradient: gammaGradient, betaGradient: betaGradient)
        }
    }
    public func hiddenBlockForward(_ block: HiddenBlock<Tensor>) throws {
        try timed("hidden block forward: bias + tanh + batch norm (fused)") { try base.hiddenBlockForward(block) }
    }
    public func hiddenBlockInference(_ block: HiddenBlock<Tensor>) throws {
        try timed("hidden block inference (fused)") { try base.hiddenBlockInference(block) }
    }
    public func hiddenBlockBackward(_ block: HiddenBlock<Tensor>) throws {
        try timed("hidden block backward: batch norm + tanh + bias gradient (fused)") {
            try base.hiddenBlockBackward(block)
        }
    }
    public func biasMeanSquaredError(
        _ z: Tensor, bias: Tensor, target: Tensor, prediction: Tensor, gradient: Tensor, biasGradient: Tensor,
        loss: Tensor
    ) throws {
        try timed("output bias + MSE + bias gradient") {
            try base.biasMeanSquaredError(
                z, bias: bias, target: target, prediction: prediction, gradient: gradient, biasGradient: biasGradient,
                loss: loss)
        }
    }
    public func meanSquaredError(prediction: Tensor, target: Tensor, gradient: Tensor, loss: Tensor) throws {
        try timed("mse loss + gradient") {
            try base.meanSquaredError(prediction: prediction, target: target, gradient: gradient, loss: loss)
        }
    }
    public func weightedMeanSquaredError(
        prediction: Tensor, target: Tensor, weights: Tensor, gradient: Tensor, loss: Tensor
    ) throws {
        try timed("weighted mse loss + gradient") {
            try base.weightedMeanSquaredError(
                prediction: prediction, target: target, weights: weights, gradient: gradient, loss: loss)
        }
    }
    public func adamUpdate(parameters: Tensor, gradients: Tensor, m: Tensor, v: Tensor, coefficients: AdamCoefficients)
        throws
    {
        try timed("adam (flat buffer)") {
            try base.adamUpdate(parameters: parameters, gradients: gradients, m: m, v: v, coefficients: coefficients)
        }
    }
    public func gatherRows(_ source: Tensor, indices: Indices, indexOffset: Int, into out: Tensor) throws {
        try timed("gather rows") { try base.gatherRows(source, indices: indices, indexOffset: indexOffset, into: out) }
    }
    public func gatherRows(_ sources: [Tensor], indices: Indices, indexOffset: Int, into outputs: [Tensor]) throws {
        try timed("gather rows") {
            try base.gatherRows(sources, indices: indices, indexOffset: indexOffset, into: outputs)
        }
    }
    public func standardScale(_ x: Tensor, mean: Tensor, scale: Tensor, into out: Tensor) throws {
        try timed("standard scale") { try base.standardScale(x, mean: mean, scale: scale, into: out) }
    }
}

/// CPU seconds the calling thread has run (not counting time other processes had the core: on a busy shared
/// machine the cost of single-threaded work that wall time overstates).
func threadCPUSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
    return Double(t.tv_sec) + 1e-9 * Double(t.tv_nsec)
}
