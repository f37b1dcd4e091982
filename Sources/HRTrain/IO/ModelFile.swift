import Foundation

/// What a model file says about itself, stored as JSON under the safetensors metadata key `hrtrain`.
public struct ModelMetadata: Codable, Sendable, Equatable {
    /// Always `hrtrain-model`; a file without it is refused.
    public var format = "hrtrain-model"
    /// Version of the file layout.
    public var formatVersion = 1
    /// The hrtrain version that wrote it.
    public var hrtrainVersion = HRTrainVersion.string
    public var spec: NetworkSpec
    public var profile: NumericsProfile
    /// Input columns, in the order the network expects them.
    public var featureNames: [String]
    /// Output columns.
    public var targetNames: [String]
    /// The training configuration, when the model was trained (nil for `hrtrain init`).
    public var training: TrainingOptions?
    /// Epochs trained so far.
    public var epochsTrained = 0
    /// The data file the model was trained on, if any.
    public var dataFile: String?
    /// The OpenCL device it was trained on, if any.
    public var device: String?
    /// Residual learning: one feature column per target whose raw value is added to the network's output
    /// (the network learned `target − baseline`); nil: none. Needs `formatVersion` 2.
    public var baseline: [String]?
    /// The response calibration applied to the predictions (after the baseline), if any (`hrtrain calibrate`).
    /// Needs `formatVersion` 2.
    public var calibration: ResponseCalibration?
    /// Where the weights started: the seed they were drawn from, or the model file they were read from
    /// (nil in files written before hrtrain recorded it).
    public var initialization: Initialization?
    /// Everything inference needs, in numbers and words (nil in files written before hrtrain recorded it;
    /// `InferenceConventions(spec:profile:)` gives the same values for them).
    public var inference: InferenceConventions?

    /// Creates the metadata of a model; `inference` is filled in from `spec` and `profile`.
    public init(
        spec: NetworkSpec, profile: NumericsProfile, featureNames: [String], targetNames: [String],
        training: TrainingOptions? = nil, epochsTrained: Int = 0, dataFile: String? = nil, device: String? = nil,
        initialization: Initialization? = nil
    ) {
        self.spec = spec
        self.profile = profile
        self.featureNames = featureNames
        self.targetNames = targetNames
        self.training = training
        self.epochsTrained = epochsTrained
        self.dataFile = dataFile
        self.device = device
        self.initialization = initialization
        inference = InferenceConventions(spec: spec, profile: profile)
    }
}

/// Where a model's weights started.
public struct Initialization: Codable, Sendable, Equatable {
    /// The seed `Network.initialValues` drew the weights from (SplitMix64, layer by layer: weights then bias).
    public var seed: UInt64?
    /// The initialiser, in words (`glorot_uniform weights, zero biases` or `U(±1/√fan_in) weights and biases`).
    public var scheme: String?
    /// The model file the weights were read from (`hrtrain train --init-from`).
    public var file: String?

    /// Drawn from `seed` under `profile`'s initialiser.
    public static func seed(_ seed: UInt64, profile: NumericsProfile) -> Initialization {
        Initialization(seed: seed, scheme: profile.initializerDescription, file: nil)
    }

    /// Read from the model file `file` (which was itself drawn from `seed`, when it says so).
    public static func file(_ file: String, seed: UInt64?, scheme: String?) -> Initialization {
        Initialization(seed: seed, scheme: scheme, file: file)
    }
}

/// How to run a model without hrtrain (e.g. from Python with numpy), stated in the model file.
///
/// For each hidden block `l` (in order) and a row vector `x` of raw features:
/// ```
/// z = (x − feature_scaler.mean) / feature_scaler.scale
/// h = z · dense<l>.weight + dense<l>.bias          (weight [in, out], row-major)
/// dense-tanh-bn:  h = BN(tanh(h))      dense-bn-tanh:  h = tanh(BN(h))
/// BN(t) = bn<l>.gamma · (t − bn<l>.running_mean) / √(bn<l>.running_var + ε) + bn<l>.beta
/// y = h · output.weight + output.bias              (linear output)
/// y = y · target_scaler.scale + target_scaler.mean (when the model has a target scaler)
/// ```
public struct InferenceConventions: Codable, Sendable, Equatable {
    /// The hidden activation: `tanh`.
    public var activation = "tanh"
    /// The output layer's activation: `linear` (none).
    public var outputActivation = "linear"
    /// The order inside each hidden block, in words.
    public var layerOrder: String
    /// Orientation and storage of every `*.weight` tensor.
    public var weightLayout = "[in, out], row-major: y = x · W + b"
    /// Batch norm's ε (added to the running variance at inference).
    public var batchNormEpsilon: Double
    /// Batch norm's momentum in Keras' convention: `running ← momentum · running + (1 − momentum) · batch`.
    /// (PyTorch's `momentum` argument is `1 −` this.)
    public var batchNormMomentum: Double
    /// Whether the stored running variance is the unbiased `σ²·N/(N−1)` (PyTorch) or the biased `σ²` (Keras).
    public var runningVariance: String
    /// Batch norm at inference, in words.
    public var batchNorm = "y = gamma * (x - running_mean) / sqrt(running_var + epsilon) + beta"
    /// The feature scaler's convention (scikit-learn's StandardScaler).
    public var featureScaling = "z = (x - feature_scaler.mean) / feature_scaler.scale"
    /// How standardised targets are turned back into target units.
    public var targetScaling = "y = y_network * target_scaler.scale + target_scaler.mean (only if present)"
    /// The dtypes: parameters and running statistics F32, scalers F64.
    public var dtypes = "weights, biases, gamma, beta, running statistics: F32; scalers: F64"

    /// The conventions of a network of `spec` under `profile`.
    public init(spec: NetworkSpec, profile: NumericsProfile) {
        let settings = profile.batchNorm
        layerOrder =
            spec.layerOrder == .denseTanhBatchNorm
            ? "dense -> tanh -> batch norm" : "dense -> batch norm -> tanh"
        batchNormEpsilon = settings.epsilon
        batchNormMomentum = 1 - settings.runningUpdateFactor
        runningVariance = settings.unbiasedRunningVariance ? "unbiased" : "biased"
    }
}

/// A trained (or initialised) network with everything needed to use it alone: architecture, numerics
/// profile, the feature and target names, the StandardScaler(s), the weights and the batch-norm running
/// statistics.
///
/// On disk: safetensors. Tensors `dense1.weight [in, out]`, `dense1.bias`, `bn1.gamma`, `bn1.beta`,
/// `bn1.running_mean`, `bn1.running_var`, …, `output.weight`, `output.bias` (F32), the scaler as
/// `feature_scaler.mean` / `feature_scaler.scale` (F64, and `target_scaler.*` when targets were scaled);
/// metadata `format = hrtrain-model` and `hrtrain` = the JSON of `ModelMetadata`.
public struct Model: Sendable, Equatable {
    public var metadata: ModelMetadata
    /// Flat parameters in `ParameterLayout` order.
    public var parameters: [Float]
    /// Flat running statistics in `ParameterLayout` order.
    public var runningStatistics: [Float]
    public var featureScaler: StandardScaler
    public var targetScaler: StandardScaler?

    /// Creates a model; the sizes must agree with `metadata.spec`.
    public init(
        metadata: ModelMetadata, parameters: [Float], runningStatistics: [Float], featureScaler: StandardScaler,
        targetScaler: StandardScaler?
    ) {
        self.metadata = metadata
        self.parameters = parameters
        self.runningStatistics = runningStatistics
        self.featureScaler = featureScaler
        self.targetScaler = targetScaler
    }

    /// The safetensors contents of this model (throws if its metadata cannot be written as JSON, e.g. a
    /// non-finite option set by a library caller, rather than write a model that cannot be read back).
    public func safeTensors() throws -> SafeTensorsFile {
        let layout = ParameterLayout(metadata.spec)
        var tensors: [String: SafeTensor] = [:]
        for e in layout.parameters {
            tensors[e.name] = SafeTensor(shape: e.shape, floats: Array(parameters[e.offset..<e.offset + e.count]))
        }
        for e in layout.runningStatistics {
            tensors[e.name] = SafeTensor(
                shape: e.shape, floats: Array(runningStatistics[e.offset..<e.offset + e.count]))
        }
        tensors["feature_scaler.mean"] = SafeTensor(shape: [featureScaler.mean.count], doubles: featureScaler.mean)
        tensors["feature_scaler.scale"] = SafeTensor(shape: [featureScaler.scale.count], doubles: featureScaler.scale)
        if let t = targetScaler {
            tensors["target_scaler.mean"] = SafeTensor(shape: [t.mean.count], doubles: t.mean)
            tensors["target_scaler.scale"] = SafeTensor(shape: [t.scale.count], doubles: t.scale)
        }
        var stored = metadata
        // Version 2 only where it matters: an older hrtrain refuses a model it would mispredict.
        stored.formatVersion = metadata.baseline != nil || metadata.calibration != nil ? 2 : 1
        let json = try JSON.string(stored)
        let conventions = metadata.inference ?? InferenceConventions(spec: metadata.spec, profile: metadata.profile)
        return SafeTensorsFile(
            tensors: tensors,
            metadata: [
                "format": "hrtrain-model", "hrtrain": json,
                "layer_order": metadata.spec.layerOrder.rawValue, "profile": metadata.profile.rawValue,
                "features": metadata.featureNames.joined(separator: ","),
                "targets": metadata.targetNames.joined(separator: ","),
                "activation": conventions.activation, "weight_layout": conventions.weightLayout,
                "batch_norm_epsilon": "\(conventions.batchNormEpsilon)",
                "batch_norm_momentum": "\(conventions.batchNormMomentum)",
                "running_variance": conventions.runningVariance, "feature_scaling": conventions.featureScaling,
            ])
    }

    /// Writes the model atomically (temporary file, flush, rename): an existing file is replaced only by a
    /// complete new one.
    public func write(to url: URL) throws { try safeTensors().write(to: url) }

    /// Reads and validates a model file: format, metadata, every tensor's presence, dtype and shape, no
    /// unexpected tensor, scaler sizes, finite values. A truncated, corrupted or hostile file is refused with
    /// an error naming the file.
    /// `field` is what errors name (the model, or the initial model training starts from).
    public static func read(from url: URL, field: DataField = .model) throws -> Model {
        do { return try Model(file: SafeTensorsFile.read(from: url), path: url.path, field: field) } catch var
            error as DataError
        {
            error.field = error.field ?? field
            throw error
        }
    }

    /// Decodes a model from safetensors contents (see `read(from:)`); errors name `field`.
    public init(file: SafeTensorsFile, path: String, field: DataField? = .model) throws {
        func fail(_ message: String) -> DataError { DataError(message, file: path, field: field) }
        guard file.metadata["format"] == "hrtrain-model", let json = file.metadata["hrtrain"] else {
            throw fail("not an hrtrain model file (its safetensors metadata has no format = hrtrain-model)")
        }
        let metadata: ModelMetadata
        do { metadata = try JSONDecoder().decode(ModelMetadata.self, from: Data(json.utf8)) } catch {
            throw fail("the model metadata is not valid: \(error)")
        }
        guard metadata.format == "hrtrain-model", (1...2).contains(metadata.formatVersion) else {
            throw fail("unsupported model format \(metadata.format) version \(metadata.formatVersion)")
        }
        let spec = metadata.spec
        guard spec.inputSize <= 1_000_000, spec.outputSize <= 1_000_000, spec.hiddenSizes.count <= 1000,
            spec.hiddenSizes.allSatisfy({ $0 <= 1_000_000 })
        else {
            throw fail("implausible network sizes \(spec)")
        }
        do { try spec.validate() } catch { throw fail("invalid network: \(error)") }
        guard metadata.featureNames.count == spec.inputSize, metadata.targetNames.count == spec.outputSize else {
            throw fail(
                "\(metadata.featureNames.count) feature names and \(metadata.targetNames.count) target names for a "
                    + "network of \(spec.inputSize) inputs and \(spec.outputSize) outputs"
            )
        }
        do {
            let url = URL(fileURLWithPath: path)
            try requireUniqueColumnNames(metadata.featureNames, source: "its feature list", url: url)
            try requireUniqueColumnNames(metadata.targetNames, source: "its target list", url: url)
        } catch var error as DataError {
            error.field = field
            throw error
        }
        do {
            try SizeLimits.requireModel(spec, tensorBytes: file.tensors.values.reduce(0) { $0 + $1.bytes.count })
        } catch let error as SizeLimitError { throw fail(error.description) }
        if let baseline = metadata.baseline {
            guard baseline.count == spec.outputSize, baseline.allSatisfy(metadata.featureNames.contains) else {
                throw fail(
                    "the baseline \(baseline.joined(separator: ",")) must name one feature column per target")
            }
        }
        if let calibration = metadata.calibration {
            guard spec.outputSize == 2 else { throw fail("a response calibration needs two targets (x, y)") }
            do { try calibration.validate() } catch { throw fail("invalid \(error)") }
        }
        let layout = ParameterLayout(spec)
        var expected = Set(
            layout.parameters.map(\.name) + layout.runningStatistics.map(\.name) + [
                "feature_scaler.mean", "feature_scaler.scale",
            ])
        let hasTargetScaler = file.tensors["target_scaler.mean"] != nil || file.tensors["target_scaler.scale"] != nil
        if hasTargetScaler { expected.formUnion(["target_scaler.mean", "target_scaler.scale"]) }
        if let extra = Set(file.tensors.keys).subtracting(expected).sorted().first {
            throw fail("unexpected tensor \"\(extra)\"")
        }

        func floats(_ entries: [ParameterEntry], count: Int) throws -> [Float] {
            var flat = [Float](repeating: 0, count: count)
            for e in entries {
                guard let t = file.tensors[e.name] else { throw fail("missing tensor \"\(e.name)\"") }
                guard t.dtype == .f32, t.shape == e.shape, let values = t.floats else {
                    throw fail("tensor \"\(e.name)\" is \(t.dtype.rawValue) \(t.shape), expected F32 \(e.shape)")
                }
                guard values.allSatisfy(\.isFinite) else { throw fail("tensor \"\(e.name)\" holds NaN or Inf") }
                flat.replaceSubrange(e.offset..<e.offset + e.count, with: values)
            }
            return flat
        }
        func scaler(_ prefix: String, _ n: Int) throws -> StandardScaler {
            var parts: [[Double]] = []
            for part in ["mean", "scale"] {
                let name = "\(prefix).\(part)"
                guard let t = file.tensors[name] else { throw fail("missing tensor \"\(name)\"") }
                guard t.dtype == .f64, t.shape == [n], let values = t.doubles, values.allSatisfy(\.isFinite) else {
                    throw fail("tensor \"\(name)\" must be F64 [\(n)] and finite")
                }
                parts.append(values)
            }
            guard parts[1].allSatisfy({ $0 > 0 }) else { throw fail("\(prefix).scale has a value ≤ 0") }
            return StandardScaler(mean: parts[0], scale: parts[1])
        }
        self.metadata = metadata
        parameters = try floats(layout.parameters, count: layout.parameterCount)
        runningStatistics = try floats(layout.runningStatistics, count: layout.runningCount)
        featureScaler = try scaler("feature_scaler", spec.inputSize)
        targetScaler = hasTargetScaler ? try scaler("target_scaler", spec.outputSize) : nil
    }

    /// Builds the network on `backend` with these weights (Adam's moments at zero).
    public func network<B: Backend>(on backend: B) throws -> Network<B> {
        try Network(
            backend: backend, spec: metadata.spec, profile: metadata.profile, parameters: parameters.map(Double.init),
            runningStatistics: runningStatistics.map(Double.init))
    }

    /// Predictions for raw (unscaled) feature rows `[rows, inputSize]`: scaled, run in batches with batch
    /// norm in inference mode, un-scaled if the targets were scaled, the baseline columns' raw values added
    /// (residual models), and the response calibration applied unless `calibrated` is false.
    /// Returns `[rows, outputSize]`.
    public func predict<B: Backend>(
        _ features: [Float], rows: Int, on backend: B, batchSize: Int = 4000, calibrated: Bool = true
    ) throws -> [Float] {
        var out = try networkOutput(features, rows: rows, on: backend, batchSize: batchSize)
        if let baseline = metadata.baseline {
            let (f, t) = (metadata.spec.inputSize, metadata.spec.outputSize)
            let indices = baseline.map { metadata.featureNames.firstIndex(of: $0)! }
            for r in 0..<rows {
                for (c, b) in indices.enumerated() { out[r * t + c] += features[r * f + b] }
            }
        }
        if calibrated, let calibration = metadata.calibration { calibration.apply(to: &out) }
        return out
    }

    /// The network's own output for raw feature rows, un-scaled: without the baseline and the calibration.
    public func networkOutput<B: Backend>(_ features: [Float], rows: Int, on backend: B, batchSize: Int = 4000)
        throws -> [Float]
    {
        let spec = metadata.spec
        let net = try network(on: backend)
        let mean = try backend.tensor(featureScaler.mean, shape: [spec.inputSize])
        let scale = try backend.tensor(featureScaler.scale, shape: [spec.inputSize])
        var out = [Float](repeating: 0, count: rows * spec.outputSize)
        var start = 0
        for n in batchSizes(rows: rows, batchSize: batchSize, training: false) {
            let x = try backend.tensor(
                Array(features[start * spec.inputSize..<(start + n) * spec.inputSize]), shape: [n, spec.inputSize])
            try backend.standardScale(x, mean: mean, scale: scale, into: x)
            let y = try backend.read(net.forward(x, training: false))
            for i in 0..<y.count { out[start * spec.outputSize + i] = Float(y[i]) }
            start += n
        }
        return targetScaler.map { $0.inverse(out, columns: spec.outputSize) } ?? out
    }
}
