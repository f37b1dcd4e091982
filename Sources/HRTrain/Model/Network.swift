/// The thesis MLP, written once against `Backend`: hidden blocks of Dense + tanh + batch norm (in either
/// order), then a linear Dense output; MSE loss; Adam over one flat parameter buffer.
///
/// ```
/// dense-tanh-bn:  z = h·W;  t = tanh(z + b);  h' = BN(t)
/// dense-bn-tanh:  z = h·W + b;  n = BN(z);  h' = tanh(n)
/// output:         ŷ = h·W + b
/// ```
/// Backward reuses the stored block input `h` (for dW), the tanh output (for tanh'), and the batch-norm
/// input with its saved mean and 1/√(σ²+ε) (x̂ is recomputed, not stored).
public final class Network<B: Backend> {
    /// The backend every operation runs on.
    public let backend: B
    public let spec: NetworkSpec
    public let profile: NumericsProfile
    public let layout: ParameterLayout
    /// All trainable parameters, flat (see `ParameterLayout`).
    public let parameters: B.Tensor
    /// The gradient of the loss with respect to `parameters`, same layout.
    public let gradients: B.Tensor
    /// Adam's first and second moments, same layout.
    public let firstMoment: B.Tensor
    public let secondMoment: B.Tensor
    /// Batch-norm running means and variances, flat.
    public let runningStatistics: B.Tensor
    /// Adam updates done so far (the `t` of the bias corrections is `step + 1` for the next one).
    public var step = 0

    /// Set by data-parallel training with `--sync-batchnorm`: training-mode batch norms then normalise with
    /// the statistics of the whole batch across ranks (`SynchronizedBatchNorm`, on the host); nil: each
    /// process normalises its own batch with the backend's operations.
    public var batchNormSynchronization: BatchNormSynchronization?
    private var synchronizedRows = 0

    private var workspaces: [Int: Workspace] = [:]
    private var lastWorkspace: Workspace?

    /// Per-batch-size activations and gradients of one forward/backward pass: one `HiddenBlock` per hidden
    /// layer (block `i`'s input is block `i − 1`'s output, its output gradient block `i + 1`'s input gradient).
    private final class Workspace {
        let rows: Int
        var blocks: [HiddenBlock<B.Tensor>] = []
        let output: B.Tensor
        let outputGradient: B.Tensor
        let firstInputGradient: B.Tensor  // dL/dx [N, inputSize], only for `inputGradient()`
        init(rows: Int, output: B.Tensor, outputGradient: B.Tensor, firstInputGradient: B.Tensor) {
            self.rows = rows
            self.output = output
            self.outputGradient = outputGradient
            self.firstInputGradient = firstInputGradient
        }
    }

    /// Builds the network on `backend` with the given flat parameter and running-statistics values
    /// (see `Network.initialValues`). Adam's moments start at zero.
    public init(
        backend: B, spec: NetworkSpec, profile: NumericsProfile, parameters: [Double], runningStatistics: [Double]
    ) throws {
        try spec.validate()
        self.backend = backend
        self.spec = spec
        self.profile = profile
        layout = ParameterLayout(spec)
        try require(
            parameters.count == layout.parameterCount,
            "expected \(layout.parameterCount) parameters, got \(parameters.count)")
        try require(
            runningStatistics.count == layout.runningCount,
            "expected \(layout.runningCount) running statistics, got \(runningStatistics.count)")
        let zeros = [Double](repeating: 0, count: layout.parameterCount)
        self.parameters = try backend.tensor(parameters, shape: [layout.parameterCount])
        gradients = try backend.tensor(zeros, shape: [layout.parameterCount])
        firstMoment = try backend.tensor(zeros, shape: [layout.parameterCount])
        secondMoment = try backend.tensor(zeros, shape: [layout.parameterCount])
        self.runningStatistics = try backend.tensor(runningStatistics, shape: [layout.runningCount])
    }

    /// Freshly initialised values for `spec` under `profile` from `seed`: dense layers per the profile's
    /// initialiser (drawn layer by layer in order, weights then biases), γ = 1, β = 0, running mean 0, running
    /// variance 1.
    public static func initialValues(spec: NetworkSpec, profile: NumericsProfile, seed: UInt64) -> (
        parameters: [Double], runningStatistics: [Double]
    ) {
        let layout = ParameterLayout(spec)
        var rng = SplitMix64(seed: seed)
        var values = [Double](repeating: 0, count: layout.parameterCount)
        let widths = [spec.inputSize] + spec.hiddenSizes + [spec.outputSize]
        for l in 0..<(widths.count - 1) {
            let prefix = l == widths.count - 2 ? "output" : "dense\(l + 1)"
            let (w, b) = profile.initialDense(fanIn: widths[l], fanOut: widths[l + 1], using: &rng)
            let we = layout.entry("\(prefix).weight")!
            let be = layout.entry("\(prefix).bias")!
            values.replaceSubrange(we.offset..<we.offset + we.count, with: w)
            values.replaceSubrange(be.offset..<be.offset + be.count, with: b)
            if l < spec.hiddenSizes.count {
                let g = layout.entry("bn\(l + 1).gamma")!
                values.replaceSubrange(g.offset..<g.offset + g.count, with: repeatElement(1.0, count: g.count))
            }
        }
        var running = [Double](repeating: 0, count: layout.runningCount)
        for e in layout.runningStatistics where e.name.hasSuffix("running_var") {
            running.replaceSubrange(e.offset..<e.offset + e.count, with: repeatElement(1.0, count: e.count))
        }
        return (values, running)
    }

    /// Overwrites the whole training state (checkpoint resume): parameters, Adam moments and step, running
    /// statistics. Float32 values round-trip exactly through the Double interface.
    public func restore(
        parameters: [Double], firstMoment: [Double], secondMoment: [Double], runningStatistics: [Double], step: Int
    ) throws {
        try backend.write(parameters, to: self.parameters)
        try backend.write(firstMoment, to: self.firstMoment)
        try backend.write(secondMoment, to: self.secondMoment)
        try backend.write(runningStatistics, to: self.runningStatistics)
        self.step = step
    }

    /// Overwrites the whole training state from Float32 values (what checkpoints store): bitwise on a Float32
    /// backend.
    public func restore(
        parameters: [Float], firstMoment: [Float], secondMoment: [Float], runningStatistics: [Float], step: Int
    ) throws {
        try backend.write(parameters, to: self.parameters)
        try backend.write(firstMoment, to: self.firstMoment)
        try backend.write(secondMoment, to: self.secondMoment)
        try backend.write(runningStatistics, to: self.runningStatistics)
        self.step = step
    }

    /// The parameters and running statistics in Float32 (what model files store; waits for the device).
    public func weights() throws -> (parameters: [Float], runningStatistics: [Float]) {
        (try backend.readFloats(parameters), try backend.readFloats(runningStatistics))
    }

    /// Adam's first and second moments in Float32 (what checkpoints store; waits for the device).
    public func adamMoments() throws -> (first: [Float], second: [Float]) {
        (try backend.readFloats(firstMoment), try backend.readFloats(secondMoment))
    }

    /// A view of the parameter called `name` (e.g. `dense1.weight`).
    public func parameter(_ name: String) -> B.Tensor { view(parameters, layout.parameters, name) }
    /// A view of the gradient of the parameter called `name`.
    public func gradient(_ name: String) -> B.Tensor { view(gradients, layout.parameters, name) }
    /// A view of the running statistic called `name` (e.g. `bn1.running_mean`).
    public func running(_ name: String) -> B.Tensor { view(runningStatistics, layout.runningStatistics, name) }

    private func view(_ flat: B.Tensor, _ entries: [ParameterEntry], _ name: String) -> B.Tensor {
        guard let e = entries.first(where: { $0.name == name }) else { preconditionFailure("no tensor called \(name)") }
        return backend.view(flat, offset: e.offset, shape: e.shape)
    }

    private func workspace(rows: Int) throws -> Workspace {
        if let w = workspaces[rows] { return w }
        if workspaces.count >= 4 { workspaces.removeAll() }  // a training run uses two sizes at most
        let ws = Workspace(
            rows: rows, output: try backend.scratch([rows, spec.outputSize]),
            outputGradient: try backend.scratch([rows, spec.outputSize]),
            firstInputGradient: try backend.scratch([rows, spec.inputSize]))
        // dL/dh of each block's output: block i's output gradient is block i + 1's input gradient.
        let outputGradients = try spec.hiddenSizes.map { try backend.scratch([rows, $0]) }
        var input = ws.firstInputGradient  // replaced by the real input on every forward pass
        for (i, width) in spec.hiddenSizes.enumerated() {
            let l = i + 1
            let a = try HiddenBlock.allocateActivations(on: backend, order: spec.layerOrder, rows: rows, width: width)
            ws.blocks.append(
                HiddenBlock(
                    index: l, order: spec.layerOrder, settings: profile.batchNorm,
                    weight: parameter("dense\(l).weight"), bias: parameter("dense\(l).bias"),
                    gamma: parameter("bn\(l).gamma"), beta: parameter("bn\(l).beta"),
                    runningMean: running("bn\(l).running_mean"), runningVariance: running("bn\(l).running_var"),
                    weightGradient: gradient("dense\(l).weight"), biasGradient: gradient("dense\(l).bias"),
                    gammaGradient: gradient("bn\(l).gamma"), betaGradient: gradient("bn\(l).beta"), input: input,
                    preActivation: a.preActivation, normInput: a.normInput, output: a.output, savedMean: a.savedMean,
                    savedInverseStd: a.savedInverseStd, outputGradient: outputGradients[i],
                    preActivationGradient: a.preActivationGradient, inputGradient: i == 0 ? nil : outputGradients[i - 1]
                ))
            input = a.output
        }
        workspaces[rows] = ws
        return ws
    }

    /// Runs the network on `input` `[N, inputSize]`; returns the prediction `[N, outputSize]` (a workspace
    /// tensor, valid until the next forward pass of the same batch size). `training` selects batch-norm mode
    /// (training mode updates the running statistics).
    @discardableResult
    public func forward(_ input: B.Tensor, training: Bool) throws -> B.Tensor {
        try forward(input, training: training, addingOutputBias: true)
    }

    /// `forward`; without `addingOutputBias` the output is the output layer's `h·W` alone (a training step adds
    /// the bias in its loss operation, `Backend.biasMeanSquaredError`).
    private func forward(_ input: B.Tensor, training: Bool, addingOutputBias: Bool) throws -> B.Tensor {
        let shape = backend.shape(of: input)
        try require(
            shape.count == 2 && shape[1] == spec.inputSize, "input has shape \(shape), expected [N, \(spec.inputSize)]")
        let rows = shape[0]
        try require(rows >= 1, "empty batch")
        if training && batchNormSynchronization == nil {  // synchronised: the whole batch across ranks counts
            try require(
                rows >= 2,
                "a training batch of \(rows) row cannot be batch-normalised (its variance is zero); "
                    + "use at least 2 rows")
        }
        let ws = try workspace(rows: rows)
        lastWorkspace = ws
        ws.blocks[0].input = input
        for block in ws.blocks {
            try backend.matmul(
                block.input, transposeA: false, block.weight, transposeB: false, into: block.preActivation)
            if training, let sync = batchNormSynchronization {
                synchronizedRows = try SynchronizedBatchNorm.forward(block, on: backend, reduce: sync.reduce)
            } else if training {
                try backend.hiddenBlockForward(block)
            } else {
                try backend.hiddenBlockInference(block)
            }
        }
        try backend.matmul(
            ws.blocks.last!.output, transposeA: false, parameter("output.weight"), transposeB: false, into: ws.output)
        if addingOutputBias { try backend.biasAdd(ws.output, bias: parameter("output.bias"), into: ws.output) }
        return ws.output
    }

    /// The MSE of the last forward pass against `target`, written to `loss[0]`; also leaves dL/dŷ ready for
    /// `backward()`.
    public func loss(target: B.Tensor, into loss: B.Tensor) throws {
        guard let ws = lastWorkspace else { throw BackendError("loss() before forward()") }
        try backend.meanSquaredError(prediction: ws.output, target: target, gradient: ws.outputGradient, loss: loss)
    }

    /// The weighted MSE of the last forward pass against `target` with one weight per row (see
    /// `Backend.weightedMeanSquaredError`), written to `loss[0]`; also leaves dL/dŷ ready for `backward()`.
    /// Without weights (nil), the plain MSE of `loss(target:into:)`, bitwise.
    public func loss(target: B.Tensor, weights: B.Tensor?, into loss: B.Tensor) throws {
        guard let weights else { return try self.loss(target: target, into: loss) }
        guard let ws = lastWorkspace else { throw BackendError("loss() before forward()") }
        try backend.weightedMeanSquaredError(
            prediction: ws.output, target: target, weights: weights, gradient: ws.outputGradient, loss: loss)
    }

    /// Backpropagates dL/dŷ of the last training-mode forward pass into `gradients`.
    /// ```
    /// dense:  dW = hᵀ·dz,  db = Σ_rows dz,  dh = dz·Wᵀ (skipped for the first layer)
    /// ```
    public func backward() throws { try backward(outputBiasGradientDone: false) }

    /// `backward`; `outputBiasGradientDone`: the loss operation has already written the output bias gradient.
    private func backward(outputBiasGradientDone: Bool) throws {
        guard let ws = lastWorkspace else { throw BackendError("backward() before forward()") }
        let last = ws.blocks.last!
        try backend.matmul(
            last.output, transposeA: true, ws.outputGradient, transposeB: false, into: gradient("output.weight"))
        if !outputBiasGradientDone { try backend.columnSums(ws.outputGradient, into: gradient("output.bias")) }
        try backend.matmul(
            ws.outputGradient, transposeA: false, parameter("output.weight"), transposeB: true,
            into: last.outputGradient)
        for block in ws.blocks.reversed() {
            if let sync = batchNormSynchronization {
                try SynchronizedBatchNorm.backward(
                    block, on: backend, totalRows: synchronizedRows, gradientWeight: sync.gradientWeight,
                    reduce: sync.reduce)
            } else {
                try backend.hiddenBlockBackward(block)  // dL/dy → dL/dz, dγ, dβ, db
            }
            let dz = block.preActivationGradient
            try backend.matmul(block.input, transposeA: true, dz, transposeB: false, into: block.weightGradient)
            if let dh = block.inputGradient {
                try backend.matmul(dz, transposeA: false, block.weight, transposeB: true, into: dh)
            }
        }
    }

    /// dL/dx for the input of the last training-mode backward pass (`backward()` skips it: training never
    /// needs it). Used by the finite-difference check.
    public func inputGradient() throws -> B.Tensor {
        guard let ws = lastWorkspace else { throw BackendError("inputGradient() before backward()") }
        let first = ws.blocks[0]
        try backend.matmul(
            first.preActivationGradient, transposeA: false, first.weight, transposeB: true,
            into: ws.firstInputGradient)
        return ws.firstInputGradient
    }

    /// One Adam update of all parameters with the gradients of the last `backward()`.
    public func applyAdam(learningRate: Double) throws {
        step += 1
        try backend.adamUpdate(
            parameters: parameters, gradients: gradients, m: firstMoment, v: secondMoment,
            coefficients: profile.adamCoefficients(learningRate: learningRate, step: step))
    }

    /// One full training step on a batch: forward (training mode), loss into `loss[0]`, backward, Adam.
    /// With `weights` (one per row) the loss is the weighted MSE; without, the plain MSE, where the output bias,
    /// the loss and the output bias gradient are one backend operation (`Backend.biasMeanSquaredError`).
    public func trainStep(
        input: B.Tensor, target: B.Tensor, weights: B.Tensor? = nil, learningRate: Double, loss: B.Tensor
    ) throws {
        if let weights {
            try forward(input, training: true)
            try self.loss(target: target, weights: weights, into: loss)
            try backward()
        } else {
            let z = try forward(input, training: true, addingOutputBias: false)
            try backend.biasMeanSquaredError(
                z, bias: parameter("output.bias"), target: target, prediction: z,
                gradient: lastWorkspace!.outputGradient,
                biasGradient: gradient("output.bias"), loss: loss)
            try backward(outputBiasGradientDone: true)
        }
        try applyAdam(learningRate: learningRate)
    }

    /// The named intermediate tensors of the last forward pass, in order (for `verify`).
    public func activations() -> [(name: String, tensor: B.Tensor)] {
        guard let ws = lastWorkspace else { return [] }
        return ws.blocks.flatMap(\.activations) + [("output", ws.output)]
    }
}
