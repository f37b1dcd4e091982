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

    private var workspaces: [Int: Workspace] = [:]
    private var lastWorkspace: Workspace?

    /// Per-batch-size activations and gradients of one forward/backward pass.
    private final class Workspace {
        let rows: Int
        var blockInputs: [B.Tensor] = []  // h_{l-1} of each dense layer (input of the next dense), [N, in]
        var preActivations: [B.Tensor] = []  // z per hidden block, [N, H]
        var normInputs: [B.Tensor] = []  // the input of each batch norm (t or z)
        var blockOutputs: [B.Tensor] = []  // h per hidden block
        var savedMeans: [B.Tensor] = []
        var savedInverseStds: [B.Tensor] = []
        var output: B.Tensor
        var outputGradient: B.Tensor
        var blockGradients: [B.Tensor] = []  // dL/dh per hidden block, [N, H]
        var preGradients: [B.Tensor] = []  // dL/dz per hidden block, [N, H]
        init(rows: Int, output: B.Tensor, outputGradient: B.Tensor) {
            self.rows = rows
            self.output = output
            self.outputGradient = outputGradient
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
            outputGradient: try backend.scratch([rows, spec.outputSize]))
        var fanIn = spec.inputSize
        for width in spec.hiddenSizes {
            ws.preActivations.append(try backend.scratch([rows, width]))
            ws.blockOutputs.append(try backend.scratch([rows, width]))
            ws.savedMeans.append(try backend.scratch([width]))
            ws.savedInverseStds.append(try backend.scratch([width]))
            ws.blockGradients.append(try backend.scratch([rows, fanIn]))
            ws.preGradients.append(try backend.scratch([rows, width]))
            switch spec.layerOrder {
            case .denseTanhBatchNorm:  // t = tanh(z + b): the tanh output and the BN input
                ws.normInputs.append(try backend.scratch([rows, width]))
            case .denseBatchNormTanh:  // z + b (in place): the BN input; the block output is the tanh output
                ws.normInputs.append(ws.preActivations.last!)
            }
            fanIn = width
        }
        ws.blockGradients.append(try backend.scratch([rows, fanIn]))  // dL/dh of the last hidden block
        workspaces[rows] = ws
        return ws
    }

    /// Runs the network on `input` `[N, inputSize]`; returns the prediction `[N, outputSize]` (a workspace
    /// tensor, valid until the next forward pass of the same batch size). `training` selects batch-norm mode
    /// (training mode updates the running statistics).
    @discardableResult
    public func forward(_ input: B.Tensor, training: Bool) throws -> B.Tensor {
        let shape = backend.shape(of: input)
        try require(
            shape.count == 2 && shape[1] == spec.inputSize, "input has shape \(shape), expected [N, \(spec.inputSize)]")
        let rows = shape[0]
        try require(rows >= 1, "empty batch")
        if training {
            try require(
                rows >= 2,
                "a training batch of \(rows) row cannot be batch-normalised (its variance is zero); use at least 2 rows"
            )
        }
        let ws = try workspace(rows: rows)
        lastWorkspace = ws
        ws.blockInputs = [input]
        let bn = profile.batchNorm
        for (i, _) in spec.hiddenSizes.enumerated() {
            let l = i + 1
            let h = ws.blockInputs[i]
            let z = ws.preActivations[i]
            try backend.matmul(h, transposeA: false, parameter("dense\(l).weight"), transposeB: false, into: z)
            let gamma = parameter("bn\(l).gamma")
            let beta = parameter("bn\(l).beta")
            let normIn = ws.normInputs[i]
            let out = ws.blockOutputs[i]
            let runningMean = running("bn\(l).running_mean")
            let runningVariance = running("bn\(l).running_var")
            if training {
                try backend.hiddenBlockForward(
                    order: spec.layerOrder, z: z, bias: parameter("dense\(l).bias"), gamma: gamma, beta: beta,
                    runningMean: runningMean, runningVariance: runningVariance, savedMean: ws.savedMeans[i],
                    savedInverseStd: ws.savedInverseStds[i], settings: bn, saved: normIn, output: out)
            } else {
                switch spec.layerOrder {
                case .denseTanhBatchNorm: try backend.biasTanh(z, bias: parameter("dense\(l).bias"), into: normIn)
                case .denseBatchNormTanh: try backend.biasAdd(z, bias: parameter("dense\(l).bias"), into: normIn)
                }
                try backend.batchNormInference(
                    normIn, gamma: gamma, beta: beta, runningMean: runningMean, runningVariance: runningVariance,
                    epsilon: bn.epsilon, into: out)
                if spec.layerOrder == .denseBatchNormTanh { try backend.tanh(out, into: out) }
            }
            ws.blockInputs.append(out)
        }
        try backend.matmul(
            ws.blockInputs.last!, transposeA: false, parameter("output.weight"), transposeB: false, into: ws.output)
        try backend.biasAdd(ws.output, bias: parameter("output.bias"), into: ws.output)
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
    public func loss(target: B.Tensor, weights: B.Tensor, into loss: B.Tensor) throws {
        guard let ws = lastWorkspace else { throw BackendError("loss() before forward()") }
        try backend.weightedMeanSquaredError(
            prediction: ws.output, target: target, weights: weights, gradient: ws.outputGradient, loss: loss)
    }

    /// Backpropagates dL/dŷ of the last training-mode forward pass into `gradients`.
    /// ```
    /// dense:  dW = hᵀ·dz,  db = Σ_rows dz,  dh = dz·Wᵀ (skipped for the first layer)
    /// ```
    public func backward() throws {
        guard let ws = lastWorkspace else { throw BackendError("backward() before forward()") }
        let hidden = spec.hiddenSizes.count
        try denseBackward(
            prefix: "output", input: ws.blockInputs[hidden], dz: ws.outputGradient, bias: true,
            inputGradient: ws.blockGradients[hidden])
        for i in stride(from: hidden - 1, through: 0, by: -1) {
            let l = i + 1
            let dh = ws.blockGradients[i + 1]
            let dz = ws.preGradients[i]
            try backend.hiddenBlockBackward(
                order: spec.layerOrder, outputGradient: dh, saved: ws.normInputs[i], output: ws.blockOutputs[i],
                gamma: parameter("bn\(l).gamma"), savedMean: ws.savedMeans[i], savedInverseStd: ws.savedInverseStds[i],
                inputGradient: dz, gammaGradient: gradient("bn\(l).gamma"), betaGradient: gradient("bn\(l).beta"),
                biasGradient: gradient("dense\(l).bias"))
            try denseBackward(
                prefix: "dense\(l)", input: ws.blockInputs[i], dz: dz, bias: false,
                inputGradient: i == 0 ? nil : ws.blockGradients[i])
        }
    }

    /// `bias`: whether to sum the bias gradient here (the hidden blocks' backward already did).
    private func denseBackward(prefix: String, input: B.Tensor, dz: B.Tensor, bias: Bool, inputGradient: B.Tensor?)
        throws
    {
        try backend.matmul(input, transposeA: true, dz, transposeB: false, into: gradient("\(prefix).weight"))
        if bias { try backend.columnSums(dz, into: gradient("\(prefix).bias")) }
        if let dh = inputGradient {
            try backend.matmul(dz, transposeA: false, parameter("\(prefix).weight"), transposeB: true, into: dh)
        }
    }

    /// dL/dx for the input of the last training-mode backward pass (`backward()` skips it: training never
    /// needs it). Used by the finite-difference check.
    public func inputGradient() throws -> B.Tensor {
        guard let ws = lastWorkspace else { throw BackendError("inputGradient() before backward()") }
        try backend.matmul(
            ws.preGradients[0], transposeA: false, parameter("dense1.weight"), transposeB: true,
            into: ws.blockGradients[0])
        return ws.blockGradients[0]
    }

    /// One Adam update of all parameters with the gradients of the last `backward()`.
    public func applyAdam(learningRate: Double) throws {
        step += 1
        try backend.adamUpdate(
            parameters: parameters, gradients: gradients, m: firstMoment, v: secondMoment,
            coefficients: profile.adamCoefficients(learningRate: learningRate, step: step))
    }

    /// One full training step on a batch: forward (training mode), loss into `loss[0]`, backward, Adam.
    /// With `weights` (one per row) the loss is the weighted MSE; without, the plain MSE.
    public func trainStep(
        input: B.Tensor, target: B.Tensor, weights: B.Tensor? = nil, learningRate: Double, loss: B.Tensor
    ) throws {
        try forward(input, training: true)
        if let weights {
            try self.loss(target: target, weights: weights, into: loss)
        } else {
            try self.loss(target: target, into: loss)
        }
        try backward()
        try applyAdam(learningRate: learningRate)
    }

    /// The named intermediate tensors of the last forward pass, in order (for `verify`).
    public func activations() -> [(name: String, tensor: B.Tensor)] {
        guard let ws = lastWorkspace else { return [] }
        var out: [(String, B.Tensor)] = []
        for i in spec.hiddenSizes.indices {
            let l = i + 1
            switch spec.layerOrder {
            case .denseTanhBatchNorm:
                out.append(("dense\(l)+tanh output", ws.normInputs[i]))
                out.append(("bn\(l) output", ws.blockOutputs[i]))
            case .denseBatchNormTanh:
                out.append(("dense\(l) output", ws.normInputs[i]))
                out.append(("bn\(l)+tanh output", ws.blockOutputs[i]))
            }
        }
        out.append(("output", ws.output))
        return out
    }
}
