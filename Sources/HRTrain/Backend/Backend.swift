/// The small set of tensor operations the network, the optimizer and the trainer are written against.
///
/// Two implementations: `OpenCLBackend` (Float32 on any OpenCL device: CLBlast GEMMs and the kernels of
/// `Kernels/*.cl`) and `ReferenceBackend` (plain Double loops, the ground truth of every test and of
/// `hrtrain verify`). Nothing above this protocol touches OpenCL.
///
/// Conventions: tensors are row-major; a matrix has shape `[rows, columns]`; every operation writes its
/// result into a tensor the caller provides (`into:`), which may be the input itself where the operation
/// is elementwise. Operations are asynchronous on the device; `read`, `readFloats` and `synchronize` wait.
public protocol Backend: AnyObject {
    /// A tensor of this backend.
    associatedtype Tensor
    /// A list of row indices on this backend (for `gatherRows`).
    associatedtype Indices

    /// A short name for tables and logs ("OpenCL: <device>", "reference (Double)").
    var name: String { get }

    // MARK: Memory

    /// A tensor holding `values` (converted to the backend's precision).
    func tensor(_ values: [Double], shape: [Int]) throws -> Tensor
    /// A tensor holding `values`.
    func tensor(_ values: [Float], shape: [Int]) throws -> Tensor
    /// A tensor whose contents are undefined until written (pooled where the backend pools).
    func scratch(_ shape: [Int]) throws -> Tensor
    /// A view of `shape` elements starting `offset` elements into `tensor`, sharing its storage.
    func view(_ tensor: Tensor, offset: Int, shape: [Int]) -> Tensor
    /// The shape of `tensor`.
    func shape(of tensor: Tensor) -> [Int]
    /// The values of `tensor`, in Double (waits for pending work). Exact for a Float32 backend.
    func read(_ tensor: Tensor) throws -> [Double]
    /// The values of `tensor`, in Float32 (waits for pending work): bitwise the stored values on a Float32
    /// backend, rounded to nearest on a Double one. What model files and checkpoints store.
    func readFloats(_ tensor: Tensor) throws -> [Float]
    /// Overwrites `tensor` with `values` (rounded to the backend's precision).
    func write(_ values: [Double], to tensor: Tensor) throws
    /// Overwrites `tensor` with `values`: bitwise on a Float32 backend, exactly widened on a Double one.
    func write(_ values: [Float], to tensor: Tensor) throws
    /// Copies `source` into `destination` (same element count).
    func copy(_ source: Tensor, to destination: Tensor) throws
    /// Sets every element of `tensor` to `value`.
    func fill(_ tensor: Tensor, with value: Double) throws
    /// Row indices for `gatherRows`.
    func indices(_ values: [Int32]) throws -> Indices
    /// Waits until all queued work has finished.
    func synchronize() throws

    // MARK: Dense layer

    /// `c = op(a) · op(b)` where `op` transposes when asked; shapes are checked.
    func matmul(_ a: Tensor, transposeA: Bool, _ b: Tensor, transposeB: Bool, into c: Tensor) throws
    /// `y[r, j] = z[r, j] + bias[j]`.
    func biasAdd(_ z: Tensor, bias: Tensor, into y: Tensor) throws
    /// `db[j] = Σ_r dz[r, j]` (the bias gradient).
    func columnSums(_ x: Tensor, into sums: Tensor) throws

    // MARK: tanh

    /// `y = tanh(z + bias)` (bias add fused with the activation).
    func biasTanh(_ z: Tensor, bias: Tensor, into y: Tensor) throws
    /// `y = tanh(x)`.
    func tanh(_ x: Tensor, into y: Tensor) throws
    /// `dz = dy · (1 − y²)` with `y` the stored tanh output.
    func tanhBackward(outputGradient dy: Tensor, output y: Tensor, into dz: Tensor) throws

    // MARK: Batch normalisation

    /// Training mode: normalises `x` with its batch statistics, saves `mean` and `1/√(σ²+ε)` for the
    /// backward pass and updates the running statistics (see `BatchNormSettings`).
    func batchNormTraining(
        _ x: Tensor, gamma: Tensor, beta: Tensor, runningMean: Tensor, runningVariance: Tensor,
        savedMean: Tensor, savedInverseStd: Tensor, settings: BatchNormSettings, into y: Tensor) throws
    /// Inference mode: `y = γ (x − m)/√(v + ε) + β` with the running statistics.
    func batchNormInference(
        _ x: Tensor, gamma: Tensor, beta: Tensor, runningMean: Tensor, runningVariance: Tensor, epsilon: Double,
        into y: Tensor) throws
    /// `dβ = Σ dy`, `dγ = Σ dy·x̂`, `dx = γ/(N√(σ²+ε)) · (N·dy − Σ dy − x̂ · Σ dy·x̂)`.
    func batchNormBackward(
        outputGradient dy: Tensor, input x: Tensor, gamma: Tensor, savedMean: Tensor, savedInverseStd: Tensor,
        inputGradient dx: Tensor, gammaGradient: Tensor, betaGradient: Tensor) throws

    // MARK: Hidden block (fused where the backend can)

    /// Training-mode forward of `block` after its GEMM (`block.preActivation = h·W` is already computed):
    /// writes `normInput`, `output`, `savedMean`, `savedInverseStd` and updates the running statistics, with
    /// `block.settings`. Defined by `HiddenBlock.composedForward` (the default implementation).
    func hiddenBlockForward(_ block: HiddenBlock<Tensor>) throws
    /// Inference-mode forward of `block` after its GEMM, with the running statistics: writes `normInput` and
    /// `output`. Defined by `HiddenBlock.composedInference` (the default implementation).
    func hiddenBlockInference(_ block: HiddenBlock<Tensor>) throws
    /// Backward of `block` from `outputGradient` (dL/dy, may be overwritten) to `preActivationGradient`
    /// (dL/dz), with `gammaGradient`, `betaGradient` and `biasGradient = Σ_rows dz`. The GEMM gradients are
    /// not part of it. Defined by `HiddenBlock.composedBackward` (the default implementation).
    func hiddenBlockBackward(_ block: HiddenBlock<Tensor>) throws

    // MARK: Loss, optimizer, data

    /// Mean squared error over all elements: writes `loss[0]` and `gradient = 2(p − t)/n`.
    func meanSquaredError(prediction: Tensor, target: Tensor, gradient: Tensor, loss: Tensor) throws
    /// The output layer's bias and the plain MSE in one operation, for a training step: `prediction = z + bias`
    /// (row-wise, may be `z` itself), then `loss[0]` and `gradient` as `meanSquaredError`, and `biasGradient =
    /// Σ_rows gradient` (the output bias gradient of `backward`). Defined by `biasAdd`, `meanSquaredError` and
    /// `columnSums` (the default implementation).
    func biasMeanSquaredError(
        _ z: Tensor, bias: Tensor, target: Tensor, prediction: Tensor, gradient: Tensor, biasGradient: Tensor,
        loss: Tensor) throws
    /// Weighted mean squared error of a `[rows, C]` prediction with one weight `w_r > 0` per row:
    /// ```
    /// W = Σ_r w_r,   loss[0] = Σ_r w_r Σ_c (p_rc − t_rc)² / (C·W),
    /// gradient_rc = 2 w_r (p_rc − t_rc) / (C·W)
    /// ```
    /// All weights 1 gives the value of `meanSquaredError`. Deterministic (fixed summation order).
    func weightedMeanSquaredError(prediction: Tensor, target: Tensor, weights: Tensor, gradient: Tensor, loss: Tensor)
        throws
    /// One Adam update of every element of `parameters` (see `AdamCoefficients`).
    func adamUpdate(parameters: Tensor, gradients: Tensor, m: Tensor, v: Tensor, coefficients: AdamCoefficients)
        throws
    /// `out[r, :] = source[indices[indexOffset + r], :]` for every row of `out`.
    func gatherRows(_ source: Tensor, indices: Indices, indexOffset: Int, into out: Tensor) throws
    /// `gatherRows` of the same rows from each of `sources` into the matching output (a batch's features, targets
    /// and weights), in one operation where the backend can. Defined by one `gatherRows` per source (the default
    /// implementation).
    func gatherRows(_ sources: [Tensor], indices: Indices, indexOffset: Int, into outputs: [Tensor]) throws
    /// StandardScaler: `out[r, j] = (x[r, j] − mean[j]) / scale[j]`.
    func standardScale(_ x: Tensor, mean: Tensor, scale: Tensor, into out: Tensor) throws
}

extension Backend {
    /// The composition of the primitive operations (`HiddenBlock.composedForward`).
    public func hiddenBlockForward(_ block: HiddenBlock<Tensor>) throws { try block.composedForward(on: self) }
    /// The composition of the primitive operations (`HiddenBlock.composedInference`).
    public func hiddenBlockInference(_ block: HiddenBlock<Tensor>) throws { try block.composedInference(on: self) }
    /// The composition of the primitive operations (`HiddenBlock.composedBackward`).
    public func hiddenBlockBackward(_ block: HiddenBlock<Tensor>) throws { try block.composedBackward(on: self) }
    /// `biasAdd`, `meanSquaredError` and `columnSums`.
    public func biasMeanSquaredError(
        _ z: Tensor, bias: Tensor, target: Tensor, prediction: Tensor, gradient: Tensor, biasGradient: Tensor,
        loss: Tensor
    ) throws {
        try biasAdd(z, bias: bias, into: prediction)
        try meanSquaredError(prediction: prediction, target: target, gradient: gradient, loss: loss)
        try columnSums(gradient, into: biasGradient)
    }
    /// One `gatherRows` per source.
    public func gatherRows(_ sources: [Tensor], indices: Indices, indexOffset: Int, into outputs: [Tensor]) throws {
        try require(
            sources.count == outputs.count, "gatherRows: \(sources.count) sources for \(outputs.count) outputs")
        for (source, output) in zip(sources, outputs) {
            try gatherRows(source, indices: indices, indexOffset: indexOffset, into: output)
        }
    }
}

/// The batch-normalisation constants of a numerics profile.
public struct BatchNormSettings: Codable, Sendable, Equatable {
    /// ε added to the variance.
    public var epsilon: Double
    /// `f` in `m ← (1 − f)·m + f·μ`: 0.01 for Keras' momentum 0.99, 0.1 for PyTorch's momentum 0.1.
    public var runningUpdateFactor: Double
    /// Whether the running variance stores the unbiased `σ²·N/(N−1)` (PyTorch) or the biased `σ²` (Keras).
    public var unbiasedRunningVariance: Bool
}

/// The per-step scalars of the Adam update, computed on the host in Double:
/// ```
/// m ← β1 m + (1 − β1) g
/// v ← β2 v + (1 − β2) g²
/// θ ← θ − a · m / (√v · c + ε)
/// ```
public struct AdamCoefficients: Sendable, Equatable {
    public var beta1: Double
    public var beta2: Double
    /// The step size `a` (bias corrections folded in).
    public var stepSize: Double
    /// The factor `c` on `√v`.
    public var rootScale: Double
    public var epsilon: Double
}

/// A shape mismatch or an impossible request to a backend operation.
public struct BackendError: Error, CustomStringConvertible, Equatable {
    /// What was wrong.
    public var message: String
    /// Creates the error.
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Throws `BackendError` unless `condition` holds.
@inline(__always)
func require(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    if !condition { throw BackendError(message()) }
}

/// The `[rows, columns]` of a matrix shape (a vector counts as one row).
func matrixShape(_ shape: [Int]) -> (rows: Int, columns: Int) {
    shape.count >= 2 ? (shape[0], shape.dropFirst().reduce(1, *)) : (1, shape.first ?? 1)
}

/// Checks the shapes of `c = op(a)·op(b)`; returns (m, n, k).
func matmulDimensions(_ a: [Int], _ transposeA: Bool, _ b: [Int], _ transposeB: Bool, _ c: [Int]) throws -> (
    m: Int, n: Int, k: Int
) {
    let (ar, ac) = matrixShape(a)
    let (br, bc) = matrixShape(b)
    let (m, k) = transposeA ? (ac, ar) : (ar, ac)
    let (k2, n) = transposeB ? (bc, br) : (br, bc)
    let (cr, cc) = matrixShape(c)
    try require(k == k2 && cr == m && cc == n, "matmul: op(a) is \(m)×\(k), op(b) is \(k2)×\(n), c is \(cr)×\(cc)")
    return (m, n, k)
}
