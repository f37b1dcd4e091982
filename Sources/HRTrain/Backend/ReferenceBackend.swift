import Foundation

/// The CPU reference: plain Double loops, written to be read, with no tricks.
///
/// Every kernel of the OpenCL backend has its twin here; the tests and `hrtrain verify` run the same
/// network code on both and compare. Shapes are given as `[rows, columns]` in the comments; `N` is the
/// batch (rows), `F` the features (columns).
public final class ReferenceBackend: Backend {
    /// Double storage shared by a tensor and its views.
    public final class Storage {
        public var values: [Double]
        init(_ values: [Double]) { self.values = values }
    }

    /// A reference tensor: a shape and an offset into shared Double storage.
    public final class Tensor {
        public let storage: Storage
        public let offset: Int
        public let shape: [Int]
        init(storage: Storage, offset: Int, shape: [Int]) {
            self.storage = storage
            self.offset = offset
            self.shape = shape
        }
        /// Number of elements.
        public var count: Int { shape.reduce(1, *) }
        subscript(i: Int) -> Double {
            get { storage.values[offset + i] }
            set { storage.values[offset + i] = newValue }
        }
    }

    /// Row indices, on the host.
    public typealias Indices = [Int32]

    /// Creates the reference backend.
    public init() {}

    public var name: String { "reference (Double)" }

    // MARK: Memory

    public func tensor(_ values: [Double], shape: [Int]) throws -> Tensor {
        try require(values.count == shape.reduce(1, *), "tensor: \(values.count) values for shape \(shape)")
        return Tensor(storage: Storage(values), offset: 0, shape: shape)
    }
    public func tensor(_ values: [Float], shape: [Int]) throws -> Tensor {
        try tensor(values.map(Double.init), shape: shape)
    }
    public func scratch(_ shape: [Int]) throws -> Tensor {
        Tensor(storage: Storage([Double](repeating: .nan, count: shape.reduce(1, *))), offset: 0, shape: shape)
    }
    public func view(_ tensor: Tensor, offset: Int, shape: [Int]) -> Tensor {
        precondition(offset >= 0 && offset + shape.reduce(1, *) <= tensor.count, "view out of range")
        return Tensor(storage: tensor.storage, offset: tensor.offset + offset, shape: shape)
    }
    public func shape(of tensor: Tensor) -> [Int] { tensor.shape }
    public func read(_ tensor: Tensor) throws -> [Double] {
        Array(tensor.storage.values[tensor.offset..<tensor.offset + tensor.count])
    }
    public func readFloats(_ tensor: Tensor) throws -> [Float] { try read(tensor).map(Float.init) }
    public func write(_ values: [Float], to tensor: Tensor) throws { try write(values.map(Double.init), to: tensor) }
    public func write(_ values: [Double], to tensor: Tensor) throws {
        try require(values.count == tensor.count, "write: \(values.count) values for \(tensor.count) elements")
        for i in 0..<values.count { tensor[i] = values[i] }
    }
    public func copy(_ source: Tensor, to destination: Tensor) throws {
        try require(source.count == destination.count, "copy: element counts differ")
        let values = try read(source)
        try write(values, to: destination)
    }
    public func fill(_ tensor: Tensor, with value: Double) throws {
        for i in 0..<tensor.count { tensor[i] = value }
    }
    public func indices(_ values: [Int32]) throws -> [Int32] { values }
    public func synchronize() throws {}

    // MARK: Dense layer

    /// c[m, n] = Σ_k op(a)[m, k] · op(b)[k, n]
    public func matmul(_ a: Tensor, transposeA: Bool, _ b: Tensor, transposeB: Bool, into c: Tensor) throws {
        let (m, n, k) = try matmulDimensions(a.shape, transposeA, b.shape, transposeB, c.shape)
        let aCols = matrixShape(a.shape).columns
        let bCols = matrixShape(b.shape).columns
        var out = [Double](repeating: 0, count: m * n)
        for i in 0..<m {
            for p in 0..<k {
                let av = transposeA ? a[p * aCols + i] : a[i * aCols + p]
                for j in 0..<n {
                    out[i * n + j] += av * (transposeB ? b[j * bCols + p] : b[p * bCols + j])
                }
            }
        }
        try write(out, to: c)
    }

    /// y[N, F] = z[N, F] + bias[F]
    public func biasAdd(_ z: Tensor, bias: Tensor, into y: Tensor) throws {
        let (rows, cols) = try elementwiseShape(z, y, bias: bias)
        for r in 0..<rows { for c in 0..<cols { y[r * cols + c] = z[r * cols + c] + bias[c] } }
    }

    /// sums[F] = Σ_r x[r, F]
    public func columnSums(_ x: Tensor, into sums: Tensor) throws {
        let (rows, cols) = matrixShape(x.shape)
        try require(sums.count == cols, "columnSums: \(cols) columns into \(sums.count) sums")
        for c in 0..<cols {
            var s = 0.0
            for r in 0..<rows { s += x[r * cols + c] }
            sums[c] = s
        }
    }

    // MARK: tanh

    /// y[N, F] = tanh(z[N, F] + bias[F])
    public func biasTanh(_ z: Tensor, bias: Tensor, into y: Tensor) throws {
        let (rows, cols) = try elementwiseShape(z, y, bias: bias)
        for r in 0..<rows { for c in 0..<cols { y[r * cols + c] = Foundation.tanh(z[r * cols + c] + bias[c]) } }
    }

    /// y = tanh(x)
    public func tanh(_ x: Tensor, into y: Tensor) throws {
        try require(x.count == y.count, "tanh: element counts differ")
        for i in 0..<x.count { y[i] = Foundation.tanh(x[i]) }
    }

    /// dz = dy · (1 − y²), y the saved tanh output
    public func tanhBackward(outputGradient dy: Tensor, output y: Tensor, into dz: Tensor) throws {
        try require(dy.count == y.count && dz.count == y.count, "tanhBackward: element counts differ")
        for i in 0..<y.count { dz[i] = dy[i] * (1 - y[i] * y[i]) }
    }

    // MARK: Batch normalisation

    /// Training mode over x[N, F]:
    /// ```
    /// μ = (1/N) Σ x,  σ² = (1/N) Σ (x − μ)²,  x̂ = (x − μ)/√(σ² + ε),  y = γ x̂ + β
    /// m ← (1 − f) m + f μ,   v ← (1 − f) v + f σ²_stored   (σ²·N/(N−1) when unbiased)
    /// ```
    /// Saves μ and 1/√(σ² + ε) per feature for the backward pass.
    public func batchNormTraining(
        _ x: Tensor, gamma: Tensor, beta: Tensor, runningMean: Tensor, runningVariance: Tensor,
        savedMean: Tensor, savedInverseStd: Tensor, settings: BatchNormSettings, into y: Tensor
    ) throws {
        let (rows, cols) = try batchNormShape(x, y, gamma, beta)
        try require(rows >= 2, "batch normalisation in training mode needs at least 2 rows, got \(rows)")
        let f = settings.runningUpdateFactor
        for c in 0..<cols {
            var sum = 0.0
            for r in 0..<rows { sum += x[r * cols + c] }
            let mean = sum / Double(rows)
            var squares = 0.0
            for r in 0..<rows { squares += (x[r * cols + c] - mean) * (x[r * cols + c] - mean) }
            let variance = squares / Double(rows)
            let inverseStd = 1 / (variance + settings.epsilon).squareRoot()
            for r in 0..<rows { y[r * cols + c] = gamma[c] * (x[r * cols + c] - mean) * inverseStd + beta[c] }
            savedMean[c] = mean
            savedInverseStd[c] = inverseStd
            let stored = settings.unbiasedRunningVariance ? variance * Double(rows) / Double(rows - 1) : variance
            runningMean[c] = (1 - f) * runningMean[c] + f * mean
            runningVariance[c] = (1 - f) * runningVariance[c] + f * stored
        }
    }

    /// Inference mode: y = γ (x − m)/√(v + ε) + β
    public func batchNormInference(
        _ x: Tensor, gamma: Tensor, beta: Tensor, runningMean: Tensor, runningVariance: Tensor, epsilon: Double,
        into y: Tensor
    ) throws {
        let (rows, cols) = try batchNormShape(x, y, gamma, beta)
        for c in 0..<cols {
            let inverseStd = 1 / (runningVariance[c] + epsilon).squareRoot()
            for r in 0..<rows { y[r * cols + c] = gamma[c] * (x[r * cols + c] - runningMean[c]) * inverseStd + beta[c] }
        }
    }

    /// Backward over x[N, F], with x̂ recomputed from the saved μ and 1/√(σ²+ε):
    /// ```
    /// dβ = Σ dy,   dγ = Σ dy·x̂,   dx = γ/(N √(σ²+ε)) · (N·dy − Σ dy − x̂ · Σ dy·x̂)
    /// ```
    public func batchNormBackward(
        outputGradient dy: Tensor, input x: Tensor, gamma: Tensor, savedMean: Tensor, savedInverseStd: Tensor,
        inputGradient dx: Tensor, gammaGradient: Tensor, betaGradient: Tensor
    ) throws {
        let (rows, cols) = try batchNormShape(x, dy, gamma, betaGradient)
        try require(dx.count == x.count, "batchNormBackward: dx has \(dx.count) elements, x \(x.count)")
        let n = Double(rows)
        for c in 0..<cols {
            var sumDy = 0.0
            var sumDyXhat = 0.0
            for r in 0..<rows {
                let xhat = (x[r * cols + c] - savedMean[c]) * savedInverseStd[c]
                sumDy += dy[r * cols + c]
                sumDyXhat += dy[r * cols + c] * xhat
            }
            betaGradient[c] = sumDy
            gammaGradient[c] = sumDyXhat
            for r in 0..<rows {
                let xhat = (x[r * cols + c] - savedMean[c]) * savedInverseStd[c]
                dx[r * cols + c] = gamma[c] * savedInverseStd[c] / n * (n * dy[r * cols + c] - sumDy - xhat * sumDyXhat)
            }
        }
    }

    // MARK: Loss, optimizer, data

    /// loss = (1/n) Σ (p − t)²,  gradient = 2 (p − t)/n,  n = all elements
    public func meanSquaredError(prediction: Tensor, target: Tensor, gradient: Tensor, loss: Tensor) throws {
        try require(
            prediction.count == target.count && gradient.count == target.count && loss.count >= 1,
            "meanSquaredError: prediction \(prediction.shape), target \(target.shape), gradient \(gradient.shape)")
        let n = Double(prediction.count)
        var sum = 0.0
        for i in 0..<prediction.count {
            let d = prediction[i] - target[i]
            sum += d * d
            gradient[i] = 2 * d / n
        }
        loss[0] = sum / n
    }

    /// W = Σ_r w_r,  loss = Σ_r w_r Σ_c (p_rc − t_rc)² / (C·W),  gradient_rc = 2 w_r (p_rc − t_rc) / (C·W)
    public func weightedMeanSquaredError(
        prediction: Tensor, target: Tensor, weights: Tensor, gradient: Tensor, loss: Tensor
    ) throws {
        let (rows, columns) = matrixShape(prediction.shape)
        try require(
            prediction.shape.count == 2 && prediction.count == target.count && gradient.count == target.count
                && weights.count == rows && loss.count >= 1,
            "weightedMeanSquaredError: prediction \(prediction.shape), target \(target.shape), weights "
                + "\(weights.shape), gradient \(gradient.shape)")
        var weightSum = 0.0
        var sum = 0.0
        for r in 0..<rows {
            weightSum += weights[r]
            var rowSum = 0.0
            for c in 0..<columns {
                let d = prediction[r * columns + c] - target[r * columns + c]
                rowSum += d * d
            }
            sum += weights[r] * rowSum
        }
        let normalisation = Double(columns) * weightSum
        for r in 0..<rows {
            for c in 0..<columns {
                let i = r * columns + c
                gradient[i] = 2 * weights[r] * (prediction[i] - target[i]) / normalisation
            }
        }
        loss[0] = sum / normalisation
    }

    /// m ← β1 m + (1 − β1) g,  v ← β2 v + (1 − β2) g²,  θ ← θ − a m / (√v c + ε)
    public func adamUpdate(
        parameters: Tensor, gradients: Tensor, m: Tensor, v: Tensor, coefficients k: AdamCoefficients
    ) throws {
        try require(
            gradients.count == parameters.count && m.count == parameters.count && v.count == parameters.count,
            "adamUpdate: element counts differ")
        for i in 0..<parameters.count {
            let g = gradients[i]
            m[i] = k.beta1 * m[i] + (1 - k.beta1) * g
            v[i] = k.beta2 * v[i] + (1 - k.beta2) * g * g
            parameters[i] -= k.stepSize * m[i] / (v[i].squareRoot() * k.rootScale + k.epsilon)
        }
    }

    /// out[r, :] = source[indices[indexOffset + r], :]
    public func gatherRows(_ source: Tensor, indices: [Int32], indexOffset: Int, into out: Tensor) throws {
        let (sourceRows, cols) = matrixShape(source.shape)
        let (rows, outCols) = matrixShape(out.shape)
        try require(outCols == cols, "gatherRows: source has \(cols) columns, output \(outCols)")
        try require(indexOffset >= 0 && indexOffset + rows <= indices.count, "gatherRows: index range out of bounds")
        for r in 0..<rows {
            let s = Int(indices[indexOffset + r])
            try require(s >= 0 && s < sourceRows, "gatherRows: row index \(s) outside 0..<\(sourceRows)")
            for c in 0..<cols { out[r * cols + c] = source[s * cols + c] }
        }
    }

    /// out[N, F] = (x[N, F] − mean[F]) / scale[F]
    public func standardScale(_ x: Tensor, mean: Tensor, scale: Tensor, into out: Tensor) throws {
        let (rows, cols) = try elementwiseShape(x, out, bias: mean)
        try require(scale.count == cols, "standardScale: \(scale.count) scales for \(cols) columns")
        for r in 0..<rows { for c in 0..<cols { out[r * cols + c] = (x[r * cols + c] - mean[c]) / scale[c] } }
    }

    private func elementwiseShape(_ x: Tensor, _ y: Tensor, bias: Tensor) throws -> (Int, Int) {
        let (rows, cols) = matrixShape(x.shape)
        try require(y.count == x.count, "output has \(y.count) elements, input \(x.count)")
        try require(bias.count == cols, "per-column vector has \(bias.count) elements for \(cols) columns")
        return (rows, cols)
    }

    private func batchNormShape(_ x: Tensor, _ y: Tensor, _ gamma: Tensor, _ beta: Tensor) throws -> (Int, Int) {
        let (rows, cols) = matrixShape(x.shape)
        try require(y.count == x.count, "batch norm: output has \(y.count) elements, input \(x.count)")
        try require(
            gamma.count == cols && beta.count == cols,
            "batch norm: γ/β have \(gamma.count) elements for \(cols) features")
        return (rows, cols)
    }
}
