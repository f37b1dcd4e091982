/// Batch normalisation over a batch that is spread across ranks (`--sync-batchnorm`).
///
/// A rank holds `n_r` of the batch's `N = Σ n_r` rows. The statistics are computed in Double on the host in
/// two passes, each a sum over the rank's rows all-reduced over the ranks — first `(n, Σx)`, giving μ, then
/// `Σ(x − μ)²`, giving the biased σ² — so every rank normalises with the statistics one process would compute
/// from the whole batch (up to the order of the additions). The backward pass all-reduces `Σdy` and `Σdy·x̂`.
///
/// Gradients stay in each rank's own scale: a rank's loss is the mean over its share, so its `dy` is `1/w` times
/// its part of the whole batch's `dy`, with `w = n_r/N` (`Sharding.gradientWeight`); the caller multiplies the
/// parameter gradients by `w` before summing them over ranks. Here the all-reduced sums are of `w·Σdy` (the
/// true sums), and `dx = γ/(N√(σ²+ε)) · (N·dy − G₁/w − x̂·G₂/w)` is `dx` of the whole batch divided
/// by `w`,
/// like every other gradient on the rank. `dβ = Σdy` and `dγ = Σdy·x̂` are the rank's own sums (in its scale),
/// which the gradient all-reduce turns into the batch's.
///
/// These run on the host through `read`/`write` (any backend; on a device they cost a round trip per block
/// and pass, measured in `Benchmarks/RESULTS.md`). With one rank and `w = 1` they compute exactly what
/// `batchNormTraining`/`batchNormBackward` define (tested against the reference).
public enum SynchronizedBatchNorm {
    /// Sums a Double vector element by element over the ranks, in place (`Communicator.allReduceSum`).
    public typealias Reduction = (inout [Double]) throws -> Void

    /// Training-mode forward over the rank's rows `x [n_r, F]`: global μ and σ², `y = γ x̂ + β`, saved μ and
    /// `1/√(σ²+ε)`, and the running statistics updated with the global values (identical on every rank).
    /// Returns the batch's total row count `N`.
    @discardableResult
    public static func forward<B: Backend>(
        _ backend: B, input x: B.Tensor, gamma: B.Tensor, beta: B.Tensor, runningMean: B.Tensor,
        runningVariance: B.Tensor, savedMean: B.Tensor, savedInverseStd: B.Tensor, settings: BatchNormSettings,
        output y: B.Tensor, reduce: Reduction
    ) throws -> Int {
        let (rows, columns) = matrixShape(backend.shape(of: x))
        let values = try backend.read(x)
        let g = try backend.read(gamma)
        let b = try backend.read(beta)
        try require(g.count == columns && b.count == columns, "sync batch norm: γ/β do not match \(columns) features")
        var sums = [Double](repeating: 0, count: columns + 1)
        for r in 0..<rows { for c in 0..<columns { sums[c] += values[r * columns + c] } }
        sums[columns] = Double(rows)
        try reduce(&sums)
        let total = sums[columns]
        try require(total >= 2, "batch normalisation in training mode needs at least 2 rows, got \(Int(total))")
        let mean = (0..<columns).map { sums[$0] / total }
        var squares = [Double](repeating: 0, count: columns)
        for r in 0..<rows {
            for c in 0..<columns {
                let d = values[r * columns + c] - mean[c]
                squares[c] += d * d
            }
        }
        try reduce(&squares)
        let variance = squares.map { $0 / total }
        let inverseStd = variance.map { 1 / ($0 + settings.epsilon).squareRoot() }
        var out = [Double](repeating: 0, count: rows * columns)
        for r in 0..<rows {
            for c in 0..<columns {
                out[r * columns + c] = g[c] * (values[r * columns + c] - mean[c]) * inverseStd[c] + b[c]
            }
        }
        try backend.write(out, to: y)
        try backend.write(mean, to: savedMean)
        try backend.write(inverseStd, to: savedInverseStd)
        let f = settings.runningUpdateFactor
        var runMean = try backend.read(runningMean)
        var runVariance = try backend.read(runningVariance)
        for c in 0..<columns {
            let stored = settings.unbiasedRunningVariance ? variance[c] * total / (total - 1) : variance[c]
            runMean[c] = (1 - f) * runMean[c] + f * mean[c]
            runVariance[c] = (1 - f) * runVariance[c] + f * stored
        }
        try backend.write(runMean, to: runningMean)
        try backend.write(runVariance, to: runningVariance)
        return Int(total)
    }

    /// Backward over the rank's rows with the batch's total `rows` and this rank's gradient weight `w`
    /// (see the type's description): `dβ`, `dγ` (the rank's sums) and `dx` (in the rank's scale).
    public static func backward<B: Backend>(
        _ backend: B, outputGradient dy: B.Tensor, input x: B.Tensor, gamma: B.Tensor, savedMean: B.Tensor,
        savedInverseStd: B.Tensor, totalRows: Int, gradientWeight w: Double, inputGradient dx: B.Tensor,
        gammaGradient: B.Tensor, betaGradient: B.Tensor, reduce: Reduction
    ) throws {
        let (rows, columns) = matrixShape(backend.shape(of: x))
        try require(w > 0 && totalRows >= rows, "sync batch norm backward: weight \(w), \(totalRows) rows in all")
        let values = try backend.read(x)
        let gradients = try backend.read(dy)
        let g = try backend.read(gamma)
        let mean = try backend.read(savedMean)
        let inverseStd = try backend.read(savedInverseStd)
        var local = [Double](repeating: 0, count: 2 * columns)  // Σdy, then Σdy·x̂
        for r in 0..<rows {
            for c in 0..<columns {
                let i = r * columns + c
                local[c] += gradients[i]
                local[columns + c] += gradients[i] * (values[i] - mean[c]) * inverseStd[c]
            }
        }
        var global = local.map { $0 * w }
        try reduce(&global)
        let n = Double(totalRows)
        var out = [Double](repeating: 0, count: rows * columns)
        for r in 0..<rows {
            for c in 0..<columns {
                let i = r * columns + c
                let xhat = (values[i] - mean[c]) * inverseStd[c]
                out[i] = g[c] * inverseStd[c] / n * (n * gradients[i] - global[c] / w - xhat * global[columns + c] / w)
            }
        }
        try backend.write(out, to: dx)
        try backend.write(Array(local[0..<columns]), to: betaGradient)
        try backend.write(Array(local[columns...]), to: gammaGradient)
    }

    /// The hidden block's training-mode forward (`HiddenBlock.composedForward`) with the batch norm
    /// synchronised; returns the batch's total row count.
    @discardableResult
    public static func forward<B: Backend>(_ block: HiddenBlock<B.Tensor>, on backend: B, reduce: Reduction) throws
        -> Int
    {
        switch block.order {
        case .denseTanhBatchNorm: try backend.biasTanh(block.preActivation, bias: block.bias, into: block.normInput)
        case .denseBatchNormTanh: try backend.biasAdd(block.preActivation, bias: block.bias, into: block.normInput)
        }
        let total = try forward(
            backend, input: block.normInput, gamma: block.gamma, beta: block.beta, runningMean: block.runningMean,
            runningVariance: block.runningVariance, savedMean: block.savedMean,
            savedInverseStd: block.savedInverseStd, settings: block.settings, output: block.output, reduce: reduce)
        if block.order == .denseBatchNormTanh { try backend.tanh(block.output, into: block.output) }
        return total
    }

    /// The hidden block's backward (`HiddenBlock.composedBackward`) with the batch norm synchronised.
    public static func backward<B: Backend>(
        _ block: HiddenBlock<B.Tensor>, on backend: B, totalRows: Int, gradientWeight: Double, reduce: Reduction
    ) throws {
        let (dy, dz) = (block.outputGradient, block.preActivationGradient)
        if block.order == .denseBatchNormTanh {
            try backend.tanhBackward(outputGradient: dy, output: block.output, into: dy)
        }
        try backward(
            backend, outputGradient: dy, input: block.normInput, gamma: block.gamma, savedMean: block.savedMean,
            savedInverseStd: block.savedInverseStd, totalRows: totalRows, gradientWeight: gradientWeight,
            inputGradient: dz, gammaGradient: block.gammaGradient, betaGradient: block.betaGradient, reduce: reduce)
        if block.order == .denseTanhBatchNorm {
            try backend.tanhBackward(outputGradient: dz, output: block.normInput, into: dz)
        }
        try backend.columnSums(dz, into: block.biasGradient)
    }
}

/// What `Network` needs to synchronise its batch norms across ranks during one training step.
public struct BatchNormSynchronization {
    /// The all-reduce of the statistics (`Communicator.allReduceSum`).
    public var reduce: SynchronizedBatchNorm.Reduction
    /// This rank's weight `n_r/N` in the current batch (`Sharding.gradientWeight`).
    public var gradientWeight: Double
    /// Creates the settings of one step.
    public init(reduce: @escaping SynchronizedBatchNorm.Reduction, gradientWeight: Double) {
        self.reduce = reduce
        self.gradientWeight = gradientWeight
    }
}
