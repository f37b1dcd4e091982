/// One hidden block of the network — Dense, tanh and batch normalisation in its layer order — with every
/// tensor it reads or writes in one pass of a given batch size: views of its parameters, gradients and
/// running statistics in the network's flat buffers, and its activations in the workspace of that batch size.
///
/// ```
/// dense-tanh-bn:  z = h·W;  t = tanh(z + b);  y = BN(t)       normInput = t (its own tensor)
/// dense-bn-tanh:  z = h·W;  n = z + b;  y = tanh(BN(n))      normInput = z (the bias is added in place)
/// ```
/// The layer order is decided here and nowhere else: `allocate` lays out the activations, `composedForward`,
/// `composedInference` and `composedBackward` define the block on the backend's primitive operations (what
/// `ReferenceBackend` runs, and any backend without a fused kernel), `activations` names what `verify` shows.
/// The backend's fused operations (`hiddenBlockForward`, `hiddenBlockInference`, `hiddenBlockBackward`) take
/// one block value. The GEMMs (`z = h·W`, `dW = hᵀ·dz`, `dh = dz·Wᵀ`) stay with `Network`; `weight`, `input`
/// and their gradients are here so that a backend may fuse them too.
///
/// All shapes are row-major: `N` rows (the batch), `I` inputs of the block, `H` its width.
public struct HiddenBlock<Tensor> {
    /// Position of the block, 1-based: its tensors are named `dense<index>.*` and `bn<index>.*`.
    public var index: Int
    /// The order of the operations.
    public var order: LayerOrder
    /// The batch-normalisation constants (ε, running-update factor, biased or unbiased running variance).
    public var settings: BatchNormSettings

    // MARK: Parameters and running statistics (views of the network's flat buffers)

    /// `W` `[I, H]` (`[in, out]`, row-major).
    public var weight: Tensor
    /// `b` `[H]`.
    public var bias: Tensor
    /// Batch norm's γ `[H]`.
    public var gamma: Tensor
    /// Batch norm's β `[H]`.
    public var beta: Tensor
    /// Batch norm's running mean `[H]` (updated in training mode).
    public var runningMean: Tensor
    /// Batch norm's running variance `[H]` (updated in training mode).
    public var runningVariance: Tensor

    // MARK: Parameter gradients (views of the network's flat gradient buffer)

    /// dL/dW `[I, H]`.
    public var weightGradient: Tensor
    /// dL/db `[H]`.
    public var biasGradient: Tensor
    /// dL/dγ `[H]`.
    public var gammaGradient: Tensor
    /// dL/dβ `[H]`.
    public var betaGradient: Tensor

    // MARK: Activations of one pass

    /// The block input `h` `[N, I]` (the previous block's output, or the network input).
    public var input: Tensor
    /// The GEMM output `z = h·W` `[N, H]`.
    public var preActivation: Tensor
    /// The input of batch norm `[N, H]`: `tanh(z + b)` for dense-tanh-bn, `z + b` for dense-bn-tanh. Kept for
    /// the backward pass. `Network` makes it `preActivation` itself for dense-bn-tanh (bias added in place);
    /// every block operation must also work when it is a tensor of its own.
    public var normInput: Tensor
    /// The block output `y` `[N, H]`.
    public var output: Tensor
    /// The batch mean saved by the training-mode forward pass `[H]`.
    public var savedMean: Tensor
    /// `1/√(σ² + ε)` saved by the training-mode forward pass `[H]`.
    public var savedInverseStd: Tensor
    /// dL/dy `[N, H]` (may be overwritten by the backward pass).
    public var outputGradient: Tensor
    /// dL/dz `[N, H]`.
    public var preActivationGradient: Tensor
    /// dL/dh `[N, I]`, or nil where nothing needs it (the first block in training).
    public var inputGradient: Tensor?

    /// A block from its tensors (see the properties for their shapes).
    public init(
        index: Int, order: LayerOrder, settings: BatchNormSettings, weight: Tensor, bias: Tensor, gamma: Tensor,
        beta: Tensor, runningMean: Tensor, runningVariance: Tensor, weightGradient: Tensor, biasGradient: Tensor,
        gammaGradient: Tensor, betaGradient: Tensor, input: Tensor, preActivation: Tensor, normInput: Tensor,
        output: Tensor, savedMean: Tensor, savedInverseStd: Tensor, outputGradient: Tensor,
        preActivationGradient: Tensor, inputGradient: Tensor?
    ) {
        self.index = index
        self.order = order
        self.settings = settings
        self.weight = weight
        self.bias = bias
        self.gamma = gamma
        self.beta = beta
        self.runningMean = runningMean
        self.runningVariance = runningVariance
        self.weightGradient = weightGradient
        self.biasGradient = biasGradient
        self.gammaGradient = gammaGradient
        self.betaGradient = betaGradient
        self.input = input
        self.preActivation = preActivation
        self.normInput = normInput
        self.output = output
        self.savedMean = savedMean
        self.savedInverseStd = savedInverseStd
        self.outputGradient = outputGradient
        self.preActivationGradient = preActivationGradient
        self.inputGradient = inputGradient
    }

    /// The activation tensors of one pass with `rows` rows, `inputs` inputs and `width` outputs, as `order`
    /// needs them: `normInput` is its own tensor for dense-tanh-bn and `preActivation` itself for dense-bn-tanh.
    /// Returns `(preActivation, normInput, output, savedMean, savedInverseStd, preActivationGradient)`.
    static func allocateActivations<B: Backend>(
        on backend: B, order: LayerOrder, rows: Int, width: Int
    ) throws -> (
        preActivation: B.Tensor, normInput: B.Tensor, output: B.Tensor, savedMean: B.Tensor,
        savedInverseStd: B.Tensor, preActivationGradient: B.Tensor
    ) where B.Tensor == Tensor {
        let preActivation = try backend.scratch([rows, width])
        let normInput: B.Tensor
        switch order {
        case .denseTanhBatchNorm: normInput = try backend.scratch([rows, width])
        case .denseBatchNormTanh: normInput = preActivation
        }
        return (
            preActivation, normInput, try backend.scratch([rows, width]), try backend.scratch([width]),
            try backend.scratch([width]), try backend.scratch([rows, width])
        )
    }

    /// The named intermediate tensors after a forward pass, in order (for `verify`).
    public var activations: [(name: String, tensor: Tensor)] {
        switch order {
        case .denseTanhBatchNorm: [("dense\(index)+tanh output", normInput), ("bn\(index) output", output)]
        case .denseBatchNormTanh: [("dense\(index) output", normInput), ("bn\(index)+tanh output", output)]
        }
    }
}

extension HiddenBlock {
    /// Training-mode forward from `preActivation` to `output` on the backend's primitive operations; writes
    /// `normInput`, `savedMean`, `savedInverseStd` and updates the running statistics.
    public func composedForward<B: Backend>(on b: B) throws where B.Tensor == Tensor {
        switch order {
        case .denseTanhBatchNorm: try b.biasTanh(preActivation, bias: bias, into: normInput)
        case .denseBatchNormTanh: try b.biasAdd(preActivation, bias: bias, into: normInput)
        }
        try b.batchNormTraining(
            normInput, gamma: gamma, beta: beta, runningMean: runningMean, runningVariance: runningVariance,
            savedMean: savedMean, savedInverseStd: savedInverseStd, settings: settings, into: output)
        if order == .denseBatchNormTanh { try b.tanh(output, into: output) }
    }

    /// Inference-mode forward from `preActivation` to `output` with the running statistics (writes `normInput`;
    /// nothing else changes).
    public func composedInference<B: Backend>(on b: B) throws where B.Tensor == Tensor {
        switch order {
        case .denseTanhBatchNorm: try b.biasTanh(preActivation, bias: bias, into: normInput)
        case .denseBatchNormTanh: try b.biasAdd(preActivation, bias: bias, into: normInput)
        }
        try b.batchNormInference(
            normInput, gamma: gamma, beta: beta, runningMean: runningMean, runningVariance: runningVariance,
            epsilon: settings.epsilon, into: output)
        if order == .denseBatchNormTanh { try b.tanh(output, into: output) }
    }

    /// Backward from `outputGradient` (dL/dy, overwritten for dense-bn-tanh) to `preActivationGradient`
    /// (dL/dz), with `gammaGradient`, `betaGradient` and `biasGradient = Σ_rows dz`, on the primitive
    /// operations. Needs the `normInput`, `output`, `savedMean` and `savedInverseStd` of a training forward.
    public func composedBackward<B: Backend>(on b: B) throws where B.Tensor == Tensor {
        let (dy, dz) = (outputGradient, preActivationGradient)
        switch order {
        case .denseTanhBatchNorm:  // dy → BN⁻¹ → dt → tanh⁻¹ (in place) → dz
            try b.batchNormBackward(
                outputGradient: dy, input: normInput, gamma: gamma, savedMean: savedMean,
                savedInverseStd: savedInverseStd, inputGradient: dz, gammaGradient: gammaGradient,
                betaGradient: betaGradient)
            try b.tanhBackward(outputGradient: dz, output: normInput, into: dz)
        case .denseBatchNormTanh:  // dy → tanh⁻¹ (in place in dy) → BN⁻¹ → dz
            try b.tanhBackward(outputGradient: dy, output: output, into: dy)
            try b.batchNormBackward(
                outputGradient: dy, input: normInput, gamma: gamma, savedMean: savedMean,
                savedInverseStd: savedInverseStd, inputGradient: dz, gammaGradient: gammaGradient,
                betaGradient: betaGradient)
        }
        try b.columnSums(dz, into: biasGradient)
    }
}
