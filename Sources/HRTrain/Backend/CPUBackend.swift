import CPUShim
import Foundation

/// Float32 storage of the CPU backend, 64-byte aligned, shared by a tensor and its views.
public final class CPUStorage {
    /// The first element.
    let base: UnsafeMutablePointer<Float>
    /// Number of elements.
    public let count: Int

    init(count: Int) {
        var raw: UnsafeMutableRawPointer?
        precondition(posix_memalign(&raw, 64, max(count, 1) * 4) == 0, "out of memory for \(count) Float32 values")
        base = raw!.bindMemory(to: Float.self, capacity: max(count, 1))
        self.count = count
    }

    deinit { free(base) }
}

/// A tensor of the CPU backend: a shape and an offset into shared Float32 storage.
public final class CPUTensor {
    /// The storage (shared with views).
    public let storage: CPUStorage
    /// Elements before the first one of this tensor.
    public let offset: Int
    /// Row-major shape.
    public let shape: [Int]

    init(storage: CPUStorage, offset: Int, shape: [Int]) {
        self.storage = storage
        self.offset = offset
        self.shape = shape
    }

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
    /// Rows of the matrix view (a vector is one row).
    var rows: Int { matrixShape(shape).rows }
    /// Columns of the matrix view.
    var columns: Int { matrixShape(shape).columns }
    /// The first element.
    var pointer: UnsafeMutablePointer<Float> { storage.base + offset }
    /// The first element, read-only.
    var constPointer: UnsafePointer<Float> { UnsafePointer(storage.base + offset) }
}

/// Row indices on the host (Int32), for `gatherRows`.
public final class CPUIndices {
    let values: [Int32]
    /// Number of indices.
    public var count: Int { values.count }
    init(_ values: [Int32]) { self.values = values }
}

/// Float32 on the host's cores: SGEMMs through a BLAS (see `BLASSelection`), everything else through the
/// vectorised, fused functions of `CPUKernels` on a fixed partition of the work, so that results are bitwise
/// the same for any number of threads. Operations run synchronously.
public final class CPUBackend: Backend {
    public typealias Tensor = CPUTensor
    public typealias Indices = CPUIndices

    /// The BLAS in use.
    public let blas: BLASSelection
    /// Whether the output layer's narrow GEMMs (n ≤ 4; k ≤ 4 for A·Bᵀ) run on the C shim's kernels, not on
    /// the BLAS: yes unless `$HRTRAIN_NARROW_GEMM=blas` (for comparisons). A BLAS spends most of such a call
    /// packing (BLIS: 6–22 GFLOP/s on the step's 4000×2×256 shapes).
    static let narrowGEMMs = ProcessInfo.processInfo.environment["HRTRAIN_NARROW_GEMM"] != "blas"

    /// Threads for the BLAS and for the kernels.
    public let threads: Int
    /// Why `threads`, when it is the default (nil: given by the caller).
    public let threadReason: String?
    private let parallel: CPUParallel
    /// The thread count and split (`BLASThreadSplit`) last given to the BLAS: a process-wide setting of the
    /// library, so a call racing another backend's setting may run with that backend's threads or split.
    nonisolated(unsafe) private static var blasSetting: (threads: Int, split: Int32) = (0, -1)
    private static let blasLock = NSLock()

    /// The cores this process can have to itself: among the ranks of an Open MPI job on this node
    /// (`OMPI_COMM_WORLD_LOCAL_SIZE`), the cores divided among them; else the cores free as the backend first
    /// opened (`BLASSelection.freeCoresAtStart`, rounded, at least 1), every core where that is unknown. A step
    /// has ~30 parallel regions and barriers, each as slow as its slowest thread: measured on the 2-core Zen 5
    /// with another process busy on one core, 2 threads trained at 9,500–112,000 events/s, 1 thread at 110,000.
    public static var defaultThreads: Int { defaultThreadChoice.threads }

    /// `defaultThreads` and why.
    public static var defaultThreadChoice: (threads: Int, reason: String) {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let environment = ProcessInfo.processInfo.environment
        if let ranks = environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init), ranks > 1 {
            return (max(1, cores / ranks), "\(cores) cores for \(ranks) ranks on this node")
        }
        guard let free = BLASSelection.freeCoresAtStart else { return (cores, "every core") }
        return (
            max(1, min(cores, Int((free + 0.5).rounded(.down)))),
            String(format: "%.1f of %d cores free at start", free, cores)
        )
    }

    /// The instruction set of the fused hidden-block kernels.
    public let kernelLevel: CPUKernelLevel
    /// How the BLAS divides each GEMM among the threads, as asked for.
    public let threadSplit: BLASThreadSplit
    /// `threadSplit` resolved for the library and kernels in use (`BLASThreadSplit.resolved(for:)`).
    private let blasSplit: BLASThreadSplit

    /// Opens the BLAS (once per process) and uses `threads` threads (default: `defaultThreads`) and the fused
    /// kernels at `kernelLevel` (default: `$HRTRAIN_CPU_KERNELS`, else the widest the CPU runs), the BLAS's
    /// threads split by `threadSplit` (default: `BLASThreadSplit.fromEnvironment()`).
    public init(threads: Int? = nil, kernelLevel: CPUKernelLevel? = nil, threadSplit: BLASThreadSplit? = nil) throws {
        // The free cores are measured (0.1 s) only when the caller leaves the count to the backend.
        let choice = threads == nil ? Self.defaultThreadChoice : nil
        let count = threads ?? choice!.threads
        try require(count >= 1, "the CPU backend needs at least 1 thread, got \(count)")
        threadReason = choice?.reason
        switch BLASSelection.shared {
        case .success(let selection): blas = selection
        case .failure(let error): throw error
        }
        let level = try kernelLevel ?? CPUKernelLevel.selected()
        try require(
            level.isSupported(by: CPUFeatures.current),
            "the CPU backend's \(level.rawValue) kernels need a CPU with them; this one has "
                + CPUFeatures.current.level)
        CPUKernels.installTanhConstants
        self.kernelLevel = level
        self.threadSplit = try threadSplit ?? BLASThreadSplit.fromEnvironment()
        blasSplit = self.threadSplit.resolved(for: blas)
        self.threads = count
        parallel = CPUParallel(threads: count)
    }

    public var name: String {
        "CPU: \(threads) thread\(threads == 1 ? "" : "s")\(threadReason.map { " (\($0))" } ?? ""), \(blas.summary), "
            + "\(kernelLevel.rawValue) kernels"
            + (threadSplit == .measured ? "" : ", BLAS threads split: \(threadSplit.rawValue)")
    }

    // MARK: Memory

    public func tensor(_ values: [Double], shape: [Int]) throws -> CPUTensor {
        try require(values.count == shape.reduce(1, *), "tensor: \(values.count) values for shape \(shape)")
        let t = CPUTensor(storage: CPUStorage(count: values.count), offset: 0, shape: shape)
        for i in 0..<values.count { t.pointer[i] = Float(values[i]) }
        return t
    }
    public func tensor(_ values: [Float], shape: [Int]) throws -> CPUTensor {
        try require(values.count == shape.reduce(1, *), "tensor: \(values.count) values for shape \(shape)")
        let t = CPUTensor(storage: CPUStorage(count: values.count), offset: 0, shape: shape)
        values.withUnsafeBufferPointer { t.pointer.update(from: $0.baseAddress!, count: values.count) }
        return t
    }
    /// Filled with NaN, so that reading an element before writing it shows.
    public func scratch(_ shape: [Int]) throws -> CPUTensor {
        let t = CPUTensor(storage: CPUStorage(count: shape.reduce(1, *)), offset: 0, shape: shape)
        t.pointer.initialize(repeating: .nan, count: t.count)
        return t
    }
    public func view(_ tensor: CPUTensor, offset: Int, shape: [Int]) -> CPUTensor {
        precondition(offset >= 0 && offset + shape.reduce(1, *) <= tensor.count, "view out of range")
        return CPUTensor(storage: tensor.storage, offset: tensor.offset + offset, shape: shape)
    }
    public func shape(of tensor: CPUTensor) -> [Int] { tensor.shape }
    public func read(_ tensor: CPUTensor) throws -> [Double] {
        (0..<tensor.count).map { Double(tensor.pointer[$0]) }
    }
    public func readFloats(_ tensor: CPUTensor) throws -> [Float] {
        Array(UnsafeBufferPointer(start: tensor.constPointer, count: tensor.count))
    }
    public func write(_ values: [Double], to tensor: CPUTensor) throws {
        try require(values.count == tensor.count, "write: \(values.count) values for \(tensor.count) elements")
        for i in 0..<values.count { tensor.pointer[i] = Float(values[i]) }
    }
    public func write(_ values: [Float], to tensor: CPUTensor) throws {
        try require(values.count == tensor.count, "write: \(values.count) values for \(tensor.count) elements")
        values.withUnsafeBufferPointer { tensor.pointer.update(from: $0.baseAddress!, count: values.count) }
    }
    public func copy(_ source: CPUTensor, to destination: CPUTensor) throws {
        try require(source.count == destination.count, "copy: element counts differ")
        destination.pointer.update(from: source.constPointer, count: source.count)
    }
    public func fill(_ tensor: CPUTensor, with value: Double) throws {
        tensor.pointer.update(repeating: Float(value), count: tensor.count)
    }
    public func indices(_ values: [Int32]) throws -> CPUIndices { CPUIndices(values) }
    public func synchronize() throws {}

    // MARK: Dense layer

    public func matmul(_ a: CPUTensor, transposeA: Bool, _ b: CPUTensor, transposeB: Bool, into c: CPUTensor) throws {
        let (m, n, k) = try matmulDimensions(a.shape, transposeA, b.shape, transposeB, c.shape)
        try require(
            Swift.max(m, n, k, a.columns, b.columns, c.columns) <= Int(Int32.max), "matmul: dimensions exceed Int32")
        if k == 0 { return try fill(c, with: 0) }
        if Self.narrowGEMMs
            && CPUKernels.narrowGEMM(
                level: kernelLevel, threads: threads, transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k,
                a.constPointer, a.columns, b.constPointer, b.columns, into: c.pointer, c.columns)
        {
            return
        }
        let split = blasSplit.shimValue(transposeA: transposeA, m: m, n: n, k: k)
        Self.blasLock.lock()
        if Self.blasSetting != (threads, split) {
            cpushim_blas_set_split(Int32(threads), split)
            Self.blasSetting = (threads, split)
        }
        Self.blasLock.unlock()
        let status = cpushim_sgemm(
            transposeA ? 1 : 0, transposeB ? 1 : 0, Int32(m), Int32(n), Int32(k), a.constPointer, Int32(a.columns),
            b.constPointer, Int32(b.columns), c.pointer, Int32(c.columns))
        // Only oneDNN reports a status (cblas_sgemm returns nothing): e.g. out of memory for its packing buffers.
        try require(
            status == 0,
            "matmul \(m)×\(n)×\(k): \(blas.library.displayName)'s SGEMM failed (status \(status))")
    }

    public func biasAdd(_ z: CPUTensor, bias: CPUTensor, into y: CPUTensor) throws {
        try rowwise("biasAdd", z, bias, y)
        CPUKernels.biasAdd(
            z.constPointer, bias: bias.constPointer, rows: z.rows, cols: z.columns, tanh: false, into: y.pointer,
            parallel: parallel)
    }

    public func columnSums(_ x: CPUTensor, into sums: CPUTensor) throws {
        try require(sums.count == x.columns, "columnSums: \(x.columns) columns into \(sums.count) sums")
        CPUKernels.columnSums(x.constPointer, rows: x.rows, cols: x.columns, into: sums.pointer, parallel: parallel)
    }

    // MARK: tanh

    public func biasTanh(_ z: CPUTensor, bias: CPUTensor, into y: CPUTensor) throws {
        try rowwise("biasTanh", z, bias, y)
        CPUKernels.biasAdd(
            z.constPointer, bias: bias.constPointer, rows: z.rows, cols: z.columns, tanh: true, into: y.pointer,
            parallel: parallel)
    }

    public func tanh(_ x: CPUTensor, into y: CPUTensor) throws {
        try require(x.count == y.count, "tanh: element counts differ")
        CPUKernels.tanh(x.constPointer, count: x.count, into: y.pointer, parallel: parallel)
    }

    public func tanhBackward(outputGradient dy: CPUTensor, output y: CPUTensor, into dz: CPUTensor) throws {
        try require(dy.count == y.count && dz.count == y.count, "tanhBackward: element counts differ")
        CPUKernels.tanhBackward(
            outputGradient: dy.constPointer, output: y.constPointer, count: y.count, into: dz.pointer,
            parallel: parallel)
    }

    // MARK: Batch normalisation

    public func batchNormTraining(
        _ x: CPUTensor, gamma: CPUTensor, beta: CPUTensor, runningMean: CPUTensor, runningVariance: CPUTensor,
        savedMean: CPUTensor, savedInverseStd: CPUTensor, settings: BatchNormSettings, into y: CPUTensor
    ) throws {
        let (rows, cols) = (x.rows, x.columns)
        try require(rows >= 2, "batch normalisation in training mode needs at least 2 rows, got \(rows)")
        try require(
            [gamma, beta, runningMean, runningVariance, savedMean, savedInverseStd].allSatisfy { $0.count == cols }
                && y.count == x.count, "batchNormTraining: per-feature tensors must have \(cols) elements")
        CPUKernels.batchNormTraining(
            x.constPointer, rows: rows, cols: cols,
            vectors: vectors(gamma, beta, runningMean, runningVariance, savedMean, savedInverseStd),
            settings: settings, into: y.pointer, parallel: parallel)
    }

    public func batchNormInference(
        _ x: CPUTensor, gamma: CPUTensor, beta: CPUTensor, runningMean: CPUTensor, runningVariance: CPUTensor,
        epsilon: Double, into y: CPUTensor
    ) throws {
        let cols = x.columns
        try require(
            [gamma, beta, runningMean, runningVariance].allSatisfy { $0.count == cols } && y.count == x.count,
            "batchNormInference: per-feature tensors must have \(cols) elements")
        CPUKernels.batchNormInference(
            x.constPointer, rows: x.rows, cols: cols, gamma: gamma.constPointer, beta: beta.constPointer,
            runningMean: runningMean.constPointer, runningVariance: runningVariance.constPointer,
            epsilon: Float(epsilon), into: y.pointer, parallel: parallel)
    }

    public func batchNormBackward(
        outputGradient dy: CPUTensor, input x: CPUTensor, gamma: CPUTensor, savedMean: CPUTensor,
        savedInverseStd: CPUTensor, inputGradient dx: CPUTensor, gammaGradient: CPUTensor, betaGradient: CPUTensor
    ) throws {
        let cols = x.columns
        try require(dy.count == x.count && dx.count == x.count, "batchNormBackward: dy/dx must match x")
        try require(
            [gamma, savedMean, savedInverseStd, gammaGradient, betaGradient].allSatisfy { $0.count == cols },
            "batchNormBackward: per-feature tensors must have \(cols) elements")
        CPUKernels.batchNormBackward(
            outputGradient: dy.constPointer, input: x.constPointer, rows: x.rows, cols: cols,
            saved: .init(
                gamma: gamma.constPointer, savedMean: savedMean.constPointer,
                savedInverseStd: savedInverseStd.constPointer),
            tanhOutput: nil, tanhInput: false, inputGradient: dx.pointer, gammaGradient: gammaGradient.pointer,
            betaGradient: betaGradient.pointer, biasGradient: nil, level: kernelLevel, parallel: parallel)
    }

    // MARK: Hidden block (fused)

    public func hiddenBlockForward(_ block: HiddenBlock<CPUTensor>) throws {
        let (rows, cols) = try blockShape(block)
        try require(rows >= 2, "batch normalisation in training mode needs at least 2 rows, got \(rows)")
        CPUKernels.hiddenBlockForward(
            order: block.order, z: block.preActivation.constPointer, bias: block.bias.constPointer, rows: rows,
            cols: cols,
            vectors: vectors(
                block.gamma, block.beta, block.runningMean, block.runningVariance, block.savedMean,
                block.savedInverseStd),
            settings: block.settings, saved: block.normInput.pointer, output: block.output.pointer,
            level: kernelLevel, parallel: parallel)
    }

    public func hiddenBlockInference(_ block: HiddenBlock<CPUTensor>) throws {
        let (rows, cols) = try blockShape(block)
        CPUKernels.hiddenBlockInference(
            order: block.order, z: block.preActivation.constPointer, bias: block.bias.constPointer, rows: rows,
            cols: cols, gamma: block.gamma.constPointer, beta: block.beta.constPointer,
            runningMean: block.runningMean.constPointer, runningVariance: block.runningVariance.constPointer,
            epsilon: Float(block.settings.epsilon), normInput: block.normInput.pointer, output: block.output.pointer,
            level: kernelLevel, parallel: parallel)
    }

    public func hiddenBlockBackward(_ block: HiddenBlock<CPUTensor>) throws {
        let (rows, cols) = try blockShape(block)
        try require(
            [block.gammaGradient, block.betaGradient, block.biasGradient].allSatisfy { $0.count == cols }
                && [block.outputGradient, block.preActivationGradient].allSatisfy { $0.count == rows * cols },
            "hiddenBlockBackward: gradient shapes differ")
        CPUKernels.batchNormBackward(
            outputGradient: block.outputGradient.constPointer, input: block.normInput.constPointer, rows: rows,
            cols: cols,
            saved: .init(
                gamma: block.gamma.constPointer, savedMean: block.savedMean.constPointer,
                savedInverseStd: block.savedInverseStd.constPointer),
            tanhOutput: block.order == .denseBatchNormTanh ? block.output.constPointer : nil,
            tanhInput: block.order == .denseTanhBatchNorm, inputGradient: block.preActivationGradient.pointer,
            gammaGradient: block.gammaGradient.pointer, betaGradient: block.betaGradient.pointer,
            biasGradient: block.biasGradient.pointer, level: kernelLevel, parallel: parallel)
    }

    /// `(rows, cols)` of a block, its per-column and activation tensors checked.
    private func blockShape(_ block: HiddenBlock<CPUTensor>) throws -> (Int, Int) {
        let (rows, cols) = (block.preActivation.rows, block.preActivation.columns)
        try require(
            [
                block.bias, block.gamma, block.beta, block.runningMean, block.runningVariance, block.savedMean,
                block.savedInverseStd,
            ].allSatisfy { $0.count == cols }
                && [block.normInput, block.output].allSatisfy { $0.count == rows * cols },
            "hidden block \(block.index): per-column tensors must have \(cols) elements, activations \(rows)×\(cols)")
        return (rows, cols)
    }

    // MARK: Loss, optimizer, data

    public func meanSquaredError(prediction: CPUTensor, target: CPUTensor, gradient: CPUTensor, loss: CPUTensor)
        throws
    {
        try require(
            prediction.count == target.count && gradient.count == target.count && loss.count >= 1,
            "meanSquaredError: prediction \(prediction.shape), target \(target.shape), gradient \(gradient.shape)")
        loss.pointer[0] = CPUKernels.meanSquaredError(
            prediction: prediction.constPointer, target: target.constPointer, count: prediction.count,
            gradient: gradient.pointer)
    }

    /// `Σ_r w_r Σ_c d² / (C Σ w)` and its gradient `2 w_r d / (C Σ w)`, on fixed blocks of rows in parallel:
    /// each block sums in Double in row order, the block sums are added in block order (the same for any thread
    /// count; one block, the plain row-order sum, up to `CPUKernels.chunk` elements).
    public func weightedMeanSquaredError(
        prediction: CPUTensor, target: CPUTensor, weights: CPUTensor, gradient: CPUTensor, loss: CPUTensor
    ) throws {
        let (rows, columns) = (prediction.rows, prediction.columns)
        try require(
            prediction.shape.count == 2 && prediction.count == target.count && gradient.count == target.count
                && weights.count == rows && loss.count >= 1,
            "weightedMeanSquaredError: prediction \(prediction.shape), target \(target.shape), weights "
                + "\(weights.shape), gradient \(gradient.shape)")
        loss.pointer[0] = CPUKernels.weightedMeanSquaredError(
            prediction: prediction.constPointer, target: target.constPointer, weights: weights.constPointer,
            rows: rows, cols: columns, gradient: gradient.pointer, parallel: parallel)
    }

    public func adamUpdate(
        parameters: CPUTensor, gradients: CPUTensor, m: CPUTensor, v: CPUTensor, coefficients: AdamCoefficients
    ) throws {
        try require(
            [gradients, m, v].allSatisfy { $0.count == parameters.count }, "adamUpdate: element counts differ")
        CPUKernels.adam(
            parameters: parameters.pointer, gradients: gradients.constPointer, m: m.pointer, v: v.pointer,
            count: parameters.count, coefficients: coefficients, parallel: parallel)
    }

    public func gatherRows(_ source: CPUTensor, indices: CPUIndices, indexOffset: Int, into out: CPUTensor) throws {
        let (sourceRows, cols) = (source.rows, source.columns)
        let rows = out.rows
        try require(out.columns == cols, "gatherRows: source has \(cols) columns, output \(out.columns)")
        try require(
            indexOffset >= 0 && indexOffset + rows <= indices.count, "gatherRows: index range out of bounds")
        try indices.values.withUnsafeBufferPointer { all in
            let selected = all.baseAddress! + indexOffset
            for r in 0..<rows {
                let s = Int(selected[r])
                try require(s >= 0 && s < sourceRows, "gatherRows: row index \(s) outside 0..<\(sourceRows)")
            }
            CPUKernels.gatherRows(
                source.constPointer, cols: cols, indices: selected, rows: rows, into: out.pointer, parallel: parallel)
        }
    }

    public func standardScale(_ x: CPUTensor, mean: CPUTensor, scale: CPUTensor, into out: CPUTensor) throws {
        try require(
            mean.count == x.columns && scale.count == x.columns && out.count == x.count, "standardScale: shapes differ")
        CPUKernels.standardScale(
            x.constPointer, mean: mean.constPointer, scale: scale.constPointer, rows: x.rows, cols: x.columns,
            into: out.pointer, parallel: parallel)
    }

    // MARK: Helpers

    private func rowwise(_ name: String, _ z: CPUTensor, _ bias: CPUTensor, _ y: CPUTensor) throws {
        try require(
            bias.count == z.columns && y.count == z.count,
            "\(name): bias has \(bias.count) elements for \(z.columns) columns")
    }

    private func vectors(
        _ gamma: CPUTensor, _ beta: CPUTensor, _ runningMean: CPUTensor, _ runningVariance: CPUTensor,
        _ savedMean: CPUTensor, _ savedInverseStd: CPUTensor
    ) -> CPUKernels.BatchNormVectors {
        CPUKernels.BatchNormVectors(
            gamma: gamma.constPointer, beta: beta.constPointer, runningMean: runningMean.pointer,
            runningVariance: runningVariance.pointer, savedMean: savedMean.pointer,
            savedInverseStd: savedInverseStd.pointer)
    }
}
