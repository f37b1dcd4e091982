import Foundation
import ONNXProto
import SwiftProtobuf

/// How batch normalisation (inference mode, running statistics) appears in an exported ONNX graph.
public enum ONNXBatchNormForm: String, CaseIterable, Codable, Sendable {
    /// Folded into the neighbouring Gemm's weights and bias, in Double: the graph holds only Gemm and Tanh
    /// (plus the scalers' elementwise ops), which every ONNX consumer runs (the default).
    case folded
    /// One `BatchNormalization` node per hidden block, with the profile's ε and the running statistics.
    case nodes
}

/// What `ONNXExport.export` wrote.
public struct ONNXExportSummary: Sendable, Equatable {
    /// The ONNX IR version of the file.
    public var irVersion: Int64
    /// The default-domain opset it imports.
    public var opsetVersion: Int64
    /// The operator type of every node, in graph order.
    public var operators: [String]
    /// Size of the file in bytes.
    public var byteCount: Int
    /// How batch normalisation was expressed.
    public var batchNorm: ONNXBatchNormForm
    /// The baseline columns added back to the output (residual models), if any.
    public var baseline: [String]?
    /// The knots of the response calibration the graph applies, if it applies one.
    public var calibrationKnots: Int?
    /// Whether the model has a response calibration that was left out (`calibrated: false`).
    public var calibrationLeftOut: Bool
}

/// Writes a model as ONNX that computes what `Model.predict` computes:
///
/// ```
/// x      = (features − feature_scaler.mean) / feature_scaler.scale           Sub, Div
/// block  = dense-tanh-bn:  BN(tanh(x·W + b))    dense-bn-tanh:  tanh(BN(x·W + b))
/// BN(t)  = γ (t − running_mean) / √(running_var + ε) + β                      (ε from the profile)
/// y      = h·W_out + b_out  [· target_scaler.scale + target_scaler.mean]      Gemm [Mul, Add]
/// y      = y + features[:, baseline columns]       (residual models)          Gather, Add
/// recoil = y / R(|y|)                              (calibrated models)        see `ONNXCalibration`
/// ```
///
/// One input `features` `[N, F]` float32 (raw, unscaled, in `featureNames` order; N dynamic), one output
/// `recoil` `[N, outputs]` float32 (in `targetNames` order). Batch norm is folded into the Gemm weights
/// (`ONNXBatchNormForm.folded`, computed in Double) or kept as `BatchNormalization` nodes. The order of the
/// last steps is `Model.predict`'s: target scaler, then the baseline's raw columns, then the calibration.
///
/// A model whose file holds anything this exporter does not reproduce — a metadata key, a `spec` key, a
/// calibration key or method, or a tensor it does not know — is refused with an error naming it rather than
/// exported wrong; so is a calibration whose applied correction (`ResponseCalibration.apply`) differs from
/// the exported form on probe values. Whoever adds an inference step to the model must add it here (or leave
/// it refused).
public enum ONNXExport {
    /// The ONNX IR version written (8: ONNX ≥ 1.10, ONNX Runtime ≥ 1.10).
    public static let irVersion: Int64 = 8
    /// The default-domain opset imported (17, within IR 8).
    public static let opsetVersion: Int64 = 17
    /// The name of the graph's input.
    public static let inputName = "features"
    /// The name of the graph's output.
    public static let outputName = "recoil"

    /// The keys of the model's `hrtrain` metadata JSON whose meaning this exporter reproduces. `training`,
    /// `initialization`, `epochsTrained`, `dataFile`, `device` and the versions describe provenance, not the
    /// computation; `inference` states the conventions, which must be the ones of `spec` and `profile`.
    static let understoodMetadataKeys: Set<String> = [
        "format", "formatVersion", "hrtrainVersion", "spec", "profile", "featureNames", "targetNames", "training",
        "epochsTrained", "dataFile", "device", "initialization", "inference", "baseline", "calibration",
    ]
    /// The keys of the metadata's `spec` this exporter reproduces.
    static let understoodSpecKeys: Set<String> = ["inputSize", "hiddenSizes", "outputSize", "layerOrder"]
    /// The keys of the metadata's `inference` conventions (each checked against the exported computation).
    static let understoodInferenceKeys: Set<String> = [
        "activation", "outputActivation", "layerOrder", "weightLayout", "batchNormEpsilon", "batchNormMomentum",
        "runningVariance", "batchNorm", "featureScaling", "targetScaling", "dtypes",
    ]

    /// Reads the model file at `modelURL`, checks that it can be exported faithfully, and writes its ONNX
    /// graph to `outputURL` atomically (an existing file is replaced only by a complete new one). With
    /// `calibrated: false` a calibrated model's graph stops before the calibration (as `hrtrain predict
    /// --no-calibration`), and its metadata says so.
    public static func export(
        modelFile modelURL: URL, to outputURL: URL, batchNorm: ONNXBatchNormForm = .folded, calibrated: Bool = true
    ) throws -> ONNXExportSummary {
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile.read(from: modelURL) } catch var error as DataError {
            error.field = error.field ?? .model
            throw error
        }
        let model = try Model(file: file, path: modelURL.path, field: .model)
        try checkExportable(file, model: model, path: modelURL.path, calibrated: calibrated)
        let proto = try modelProto(
            for: model, batchNorm: batchNorm, calibrated: calibrated, source: modelURL.lastPathComponent,
            path: modelURL.path)
        let bytes: [UInt8] = try proto.serializedBytes()
        do { try AtomicFile.write(to: outputURL) { try $0.write(bytes) } } catch var error as DataError {
            error.field = error.field ?? .output
            throw error
        }
        return ONNXExportSummary(
            irVersion: proto.irVersion, opsetVersion: opsetVersion, operators: proto.graph.node.map(\.opType),
            byteCount: bytes.count, batchNorm: batchNorm, baseline: model.metadata.baseline,
            calibrationKnots: calibrated ? model.metadata.calibration?.magnitudes.count : nil,
            calibrationLeftOut: !calibrated && model.metadata.calibration != nil)
    }

    /// Throws, naming the item, unless everything in the model file is something the exported graph
    /// reproduces: the metadata keys (top level, `spec`, `inference` and `calibration`), the stated inference
    /// conventions and the safetensors metadata (each must be what hrtrain writes for this network), the
    /// calibration's method and applied function, and the tensors.
    /// With `calibrated: false` the calibration is not checked (it is left out of the graph).
    public static func checkExportable(_ file: SafeTensorsFile, model: Model, path: String, calibrated: Bool = true)
        throws
    {
        func refuse(_ what: String) -> DataError {
            DataError(
                "\(what), which this version of hrtrain (\(HRTrainVersion.string)) cannot export: it may change what "
                    + "the model computes, so no ONNX file is written rather than one that computes something else",
                file: path, field: .model)
        }
        let json = try? JSONSerialization.jsonObject(with: Data((file.metadata["hrtrain"] ?? "").utf8))
        guard let top = json as? [String: Any], let spec = top["spec"] as? [String: Any] else {
            throw DataError("the model metadata is not a JSON object with a \"spec\"", file: path, field: .model)
        }
        if let key = Set(top.keys).subtracting(understoodMetadataKeys).sorted().first {
            throw refuse("the model's hrtrain metadata has the key \"\(key)\"")
        }
        if let key = Set(spec.keys).subtracting(understoodSpecKeys).sorted().first {
            throw refuse("the model's network spec has the key \"\(key)\"")
        }
        let metadata = model.metadata
        if calibrated, let stored = top["calibration"] {
            guard let keys = (stored as? [String: Any])?.keys else {
                throw refuse("the model's \"calibration\" is not an object")
            }
            if let key = Set(keys).subtracting(ONNXCalibration.understoodKeys).sorted().first {
                throw refuse("the model's response calibration has the key \"\(key)\"")
            }
        }
        if calibrated, let calibration = metadata.calibration {
            do { try ONNXCalibration(calibration).check(against: calibration) } catch let error as BackendError {
                throw refuse(error.description)
            }
        }
        let conventions = InferenceConventions(spec: metadata.spec, profile: metadata.profile)
        if let stated = top["inference"] {
            guard let keys = (stated as? [String: Any])?.keys else {
                throw refuse("the model's \"inference\" is not an object")
            }
            if let key = Set(keys).subtracting(understoodInferenceKeys).sorted().first {
                throw refuse("the model's inference conventions have the key \"\(key)\"")
            }
            let inference = try? JSONDecoder().decode(
                InferenceConventions.self, from: JSONSerialization.data(withJSONObject: stated))
            if inference != conventions {
                throw refuse(
                    "the model states inference conventions \(inference.map { "\($0)" } ?? "\(stated)") that differ "
                        + "from those of its \(metadata.spec.layerOrder.rawValue) network and "
                        + "\(metadata.profile.rawValue) profile")
            }
        }
        // The safetensors metadata repeats parts of the JSON: each key must be one hrtrain writes, with the value
        // it writes for this model.
        let written = try model.safeTensors().metadata
        for key in file.metadata.keys.sorted() where key != "hrtrain" {
            guard let expected = written[key] else { throw refuse("the model file's metadata has the key \"\(key)\"") }
            if file.metadata[key] != expected {
                throw refuse("the model file's metadata says \(key) = \(file.metadata[key]!), not \(expected)")
            }
        }
        let layout = ParameterLayout(metadata.spec)
        var expected = Set(layout.parameters.map(\.name) + layout.runningStatistics.map(\.name))
        expected.formUnion(["feature_scaler.mean", "feature_scaler.scale"])
        if model.targetScaler != nil { expected.formUnion(["target_scaler.mean", "target_scaler.scale"]) }
        if let name = Set(file.tensors.keys).subtracting(expected).sorted().first {
            throw refuse("the model file has the tensor \"\(name)\"")
        }
    }

    /// The ONNX model of `model` (see the type's description), with its calibration unless `calibrated` is
    /// false. `source` names the model file in the metadata, `path` in errors.
    static func modelProto(
        for model: Model, batchNorm: ONNXBatchNormForm, calibrated: Bool = true, source: String?, path: String
    ) throws -> Onnx_ModelProto {
        var model = model
        let leftOut = !calibrated && model.metadata.calibration != nil
        if !calibrated { model.metadata.calibration = nil }
        let metadata = model.metadata
        let spec = metadata.spec
        try spec.validate()
        let epsilon = metadata.profile.batchNorm.epsilon
        var graph = GraphBuilder(model: model)

        graph.add("Sub", [inputName, graph.constant("feature_scaler.mean", model.featureScaler.mean)], "centred")
        var h = graph.add("Div", ["centred", graph.constant("feature_scaler.scale", model.featureScaler.scale)], "x")

        // With dense-tanh-bn and folding, block l's batch norm s∘t + c is folded into the next Gemm.
        var pending: (scale: [Double], shift: [Double])?
        for (index, width) in spec.hiddenSizes.enumerated() {
            let l = index + 1
            let fanIn = index == 0 ? spec.inputSize : spec.hiddenSizes[index - 1]
            var (weights, bias) = foldPending(
                pending, weights: graph.values("dense\(l).weight"), bias: graph.values("dense\(l).bias"),
                fanIn: fanIn, width: width)
            pending = nil
            let gamma = graph.values("bn\(l).gamma")
            let beta = graph.values("bn\(l).beta")
            let mean = graph.values("bn\(l).running_mean")
            let variance = graph.values("bn\(l).running_var")
            let scale = (0..<width).map { gamma[$0] / (variance[$0] + epsilon).squareRoot() }
            let shift = (0..<width).map { beta[$0] - mean[$0] * scale[$0] }
            func batchNormNode(_ input: String, _ output: String) -> String {
                graph.add(
                    "BatchNormalization",
                    [
                        input, graph.constant("bn\(l).gamma", gamma), graph.constant("bn\(l).beta", beta),
                        graph.constant("bn\(l).running_mean", mean), graph.constant("bn\(l).running_var", variance),
                    ], output, floatAttributes: ["epsilon": Float(epsilon)])
            }
            switch (spec.layerOrder, batchNorm) {
            case (.denseTanhBatchNorm, .nodes):
                let z = graph.gemm(h, "dense\(l)", weights, [fanIn, width], bias, output: "dense\(l)")
                h = batchNormNode(graph.add("Tanh", [z], "tanh\(l)"), "bn\(l)")
            case (.denseTanhBatchNorm, .folded):
                let name = l == 1 ? "dense1" : "bn\(l - 1)_dense\(l)"
                let z = graph.gemm(h, name, weights, [fanIn, width], bias, output: name)
                h = graph.add("Tanh", [z], "tanh\(l)")
                pending = (scale, shift)
            case (.denseBatchNormTanh, .nodes):
                let z = graph.gemm(h, "dense\(l)", weights, [fanIn, width], bias, output: "dense\(l)")
                h = graph.add("Tanh", [batchNormNode(z, "bn\(l)")], "tanh\(l)")
            case (.denseBatchNormTanh, .folded):
                // BN(h·W + b) = h·(W·diag(s)) + (b∘s + c)
                for i in 0..<fanIn { for j in 0..<width { weights[i * width + j] *= scale[j] } }
                bias = (0..<width).map { bias[$0] * scale[$0] + shift[$0] }
                let z = graph.gemm(h, "dense\(l)_bn\(l)", weights, [fanIn, width], bias, output: "dense\(l)_bn\(l)")
                h = graph.add("Tanh", [z], "tanh\(l)")
            }
        }
        let last = spec.hiddenSizes.last!
        let (weights, bias) = foldPending(
            pending, weights: graph.values("output.weight"), bias: graph.values("output.bias"), fanIn: last,
            width: spec.outputSize)
        var prediction = graph.gemm(
            h, pending == nil ? "output" : "bn\(spec.hiddenSizes.count)_output", weights, [last, spec.outputSize], bias,
            output: "network_output")
        if let target = model.targetScaler {
            let product = graph.add(
                "Mul", [prediction, graph.constant("target_scaler.scale", target.scale)], "rescaled_prediction")
            prediction = graph.add(
                "Add", [product, graph.constant("target_scaler.mean", target.mean)], "unscaled_prediction")
        }
        if let baseline = metadata.baseline {
            // The raw (unscaled) baseline columns of the input, added as `Model.predict` adds them.
            let indices = try baseline.map { name in
                guard let index = metadata.featureNames.firstIndex(of: name) else {
                    throw DataError("the baseline column \(name) is not a feature", file: path, field: .model)
                }
                return Int64(index)
            }
            let columns = graph.add(
                "Gather", [inputName, graph.int64Constant("baseline.columns", indices)], "baseline",
                intAttributes: ["axis": 1])
            prediction = graph.add("Add", [prediction, columns], "prediction_with_baseline")
        }
        if let calibration = metadata.calibration {
            let form: ONNXCalibration
            do { form = try ONNXCalibration(calibration) } catch let error as BackendError {
                throw DataError(error.description, file: path, field: .model)
            }
            prediction = graph.calibrate(prediction, form)
        }
        graph.renameFinalOutput(to: outputName)
        var proto = Onnx_ModelProto()
        proto.irVersion = irVersion
        proto.opsetImport = [
            Onnx_OperatorSetIdProto.with {
                $0.domain = ""
                $0.version = opsetVersion
            }
        ]
        proto.producerName = "hrtrain"
        proto.producerVersion = HRTrainVersion.string
        proto.modelVersion = 1
        proto.docString = documentation(model, batchNorm: batchNorm, source: source, calibrationLeftOut: leftOut)
        let props = try properties(model, batchNorm: batchNorm, source: source, calibrationLeftOut: leftOut)
        proto.metadataProps = props.map { key, value in
            Onnx_StringStringEntryProto.with {
                $0.key = key
                $0.value = value
            }
        }
        var g = Onnx_GraphProto()
        g.name = "hrtrain_recoil"
        g.docString = proto.docString
        g.node = graph.nodes
        g.initializer = graph.initializers
        g.input = [valueInfo(inputName, columns: Int64(spec.inputSize), doc: "raw features, unscaled")]
        g.output = [valueInfo(outputName, columns: Int64(spec.outputSize), doc: "predicted targets")]
        proto.graph = g
        return proto
    }

    /// Folds a preceding batch norm `s∘t + c` into the dense layer `t·W + b` that follows it:
    /// `W'[i, j] = s[i]·W[i, j]`, `b'[j] = b[j] + Σ_i c[i]·W[i, j]` (in Double). No-op without one.
    private static func foldPending(
        _ pending: (scale: [Double], shift: [Double])?, weights: [Double], bias: [Double], fanIn: Int, width: Int
    ) -> ([Double], [Double]) {
        guard let (scale, shift) = pending else { return (weights, bias) }
        var folded = weights
        var foldedBias = bias
        for i in 0..<fanIn {
            for j in 0..<width {
                folded[i * width + j] = scale[i] * weights[i * width + j]
                foldedBias[j] += shift[i] * weights[i * width + j]
            }
        }
        return (folded, foldedBias)
    }

    /// A float32 tensor `[N, columns]` with a symbolic batch dimension `N`.
    private static func valueInfo(_ name: String, columns: Int64, doc: String) -> Onnx_ValueInfoProto {
        Onnx_ValueInfoProto.with {
            $0.name = name
            $0.docString = doc
            $0.type.tensorType.elemType = Int32(Onnx_TensorProto.DataType.float.rawValue)
            $0.type.tensorType.shape.dim = [
                Onnx_TensorShapeProto.Dimension.with { $0.dimParam = "N" },
                Onnx_TensorShapeProto.Dimension.with { $0.dimValue = columns },
            ]
        }
    }

    /// The `metadata_props` of the exported model, in a fixed order.
    private static func properties(
        _ model: Model, batchNorm: ONNXBatchNormForm, source: String?, calibrationLeftOut: Bool
    ) throws -> [(String, String)] {
        let metadata = model.metadata
        func json<T: Encodable>(_ value: T) throws -> String { try JSON.string(value) }
        var props: [(String, String)] = [
            ("hrtrain_version", HRTrainVersion.string),
            ("feature_names", try json(metadata.featureNames)),
            ("target_names", try json(metadata.targetNames)),
            ("profile", metadata.profile.rawValue),
            ("layer_order", metadata.spec.layerOrder.rawValue),
            ("hidden_sizes", metadata.spec.hiddenSizes.map(String.init).joined(separator: ",")),
            ("batch_norm", batchNorm.rawValue),
            ("batch_norm_epsilon", "\(metadata.profile.batchNorm.epsilon)"),
            ("feature_scaling", "(x - mean) / scale"),
            ("target_scaling", model.targetScaler == nil ? "none" : "y * scale + mean"),
            ("baseline", try metadata.baseline.map { try json($0) } ?? "none"),
            ("calibration", calibrationDescription(model, leftOut: calibrationLeftOut)),
        ]
        if let calibration = metadata.calibration {
            props += [
                ("calibration_magnitudes", try json(calibration.magnitudes)),
                ("calibration_responses", try json(calibration.responses)),
            ]
        }
        props.append(("hrtrain_metadata", try json(metadata)))
        if let source { props.append(("source_model", source)) }
        return props
    }

    /// The calibration step in words, for the metadata and the description.
    private static func calibrationDescription(_ model: Model, leftOut: Bool) -> String {
        if leftOut { return "none (the model's response calibration was left out: exported with --no-calibration)" }
        guard let calibration = model.metadata.calibration else { return "none" }
        return "\(calibration.method): y / R(|y|), R linear in ln|y| between the calibration_magnitudes (GeV) and "
            + "calibration_responses, constant beyond the outermost knots; |y| = 0 stays 0"
    }

    /// The human-readable description stored as the model's and the graph's `doc_string`.
    private static func documentation(
        _ model: Model, batchNorm: ONNXBatchNormForm, source: String?, calibrationLeftOut: Bool
    ) -> String {
        let m = model.metadata
        let spec = m.spec
        let calibration = calibrationDescription(model, leftOut: false)
        let bn =
            batchNorm == .folded
            ? "batch normalisation (inference mode) folded into the Gemm weights"
            : "batch normalisation (inference mode) as BatchNormalization nodes"
        return """
            hrtrain \(HRTrainVersion.string) hadronic-recoil regression\(source.map { " exported from \($0)" } ?? ""). \
            Input "\(inputName)" [N, \(spec.inputSize)] float32: the raw (unscaled) features \
            \(m.featureNames.joined(separator: ", ")). The graph standardises them ((x - mean) / scale), runs \
            \(spec.hiddenSizes.count) hidden blocks of \(spec.hiddenSizes.map(String.init).joined(separator: ",")) \
            (\(spec.layerOrder.rawValue): \
            \(spec.layerOrder == .denseTanhBatchNorm ? "Dense, tanh, BatchNorm" : "Dense, BatchNorm, tanh")), \
            \(m.profile.rawValue) profile, ε = \(m.profile.batchNorm.epsilon), \(bn), then a linear output \
            layer\(model.targetScaler == nil ? "" : " and the inverse target scaling (y * scale + mean)")\
            \(m.baseline.map { "; then it adds the raw baseline columns \($0.joined(separator: ", ")) back" } ?? "")\
            \(m.calibration == nil ? "" : "; then it applies the response calibration (\(calibration))")\
            \(calibrationLeftOut ? "; the model's response calibration is not applied (left out at export)" : ""). \
            Output "\(outputName)" [N, \(spec.outputSize)] float32: \(m.targetNames.joined(separator: ", ")) \
            (GeV for the generated sample).
            """
    }
}

/// Accumulates the nodes and initialisers of the exported graph.
private struct GraphBuilder {
    let model: Model
    let layout: ParameterLayout
    var nodes: [Onnx_NodeProto] = []
    var initializers: [Onnx_TensorProto] = []

    init(model: Model) {
        self.model = model
        layout = ParameterLayout(model.metadata.spec)
    }

    /// A named parameter or running statistic of the model, widened to Double.
    func values(_ name: String) -> [Double] {
        if let e = layout.parameters.first(where: { $0.name == name }) {
            return model.parameters[e.offset..<e.offset + e.count].map(Double.init)
        }
        let e = layout.runningStatistics.first { $0.name == name }!
        return model.runningStatistics[e.offset..<e.offset + e.count].map(Double.init)
    }

    /// Adds a float32 initialiser (rounded from Double); returns its name.
    mutating func constant(_ name: String, _ values: [Double], shape: [Int]? = nil) -> String {
        var tensor = Onnx_TensorProto()
        tensor.name = name
        tensor.dims = (shape ?? [values.count]).map(Int64.init)
        tensor.dataType = Int32(Onnx_TensorProto.DataType.float.rawValue)
        var bytes = [UInt8]()
        bytes.reserveCapacity(4 * values.count)
        for v in values {
            let bits = Float(v).bitPattern.littleEndian
            for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: bits >> shift)) }
        }
        tensor.rawData = Data(bytes)
        initializers.append(tensor)
        return name
    }

    /// Adds an int64 initialiser; returns its name.
    mutating func int64Constant(_ name: String, _ values: [Int64], shape: [Int]? = nil) -> String {
        var tensor = Onnx_TensorProto()
        tensor.name = name
        tensor.dims = (shape ?? [values.count]).map(Int64.init)
        tensor.dataType = Int32(Onnx_TensorProto.DataType.int64.rawValue)
        tensor.int64Data = values
        initializers.append(tensor)
        return name
    }

    /// Adds the response calibration (`ONNXCalibration`) of the `[N, 2]` tensor `input`; returns its output.
    mutating func calibrate(_ input: String, _ form: ONNXCalibration) -> String {
        let squares = add("Mul", [input, input], "calibration.squares")
        let sum = add(
            "ReduceSum", [squares, int64Constant("calibration.axes", [1])], "calibration.squared_magnitude",
            intAttributes: ["keepdims": 1])
        let magnitude = add("Sqrt", [sum], "calibration.magnitude")
        var response = constant("calibration.base_response", [form.baseResponse])
        if !form.slopes.isEmpty {
            let floored = add(
                "Max", [magnitude, constant("calibration.floor_magnitude", [form.floorMagnitude])],
                "calibration.floored_magnitude")
            let logarithm = add("Log", [floored], "calibration.log_magnitude")
            let lower = constant("calibration.lower_knots", form.lowerKnots)
            let above = add("Max", [logarithm, lower], "calibration.above_lower_knots")
            let upper = constant("calibration.upper_knots", form.upperKnots)
            let clamped = add("Min", [above, upper], "calibration.clamped")
            let offsets = add("Sub", [clamped, lower], "calibration.segment_offsets")
            let rise = add(
                "MatMul", [offsets, constant("calibration.slopes", form.slopes, shape: [form.slopes.count, 1])],
                "calibration.rise")
            response = add("Add", [rise, response], "calibration.response")
        }
        return add("Div", [input, response], "calibrated_prediction")
    }

    /// Renames the last node's output (and the node) to `name`, the graph's output.
    mutating func renameFinalOutput(to name: String) {
        nodes[nodes.count - 1].output = [name]
        nodes[nodes.count - 1].name = name
    }

    /// Adds a node; returns its output's name.
    @discardableResult
    mutating func add(
        _ op: String, _ inputs: [String], _ output: String, floatAttributes: [String: Float] = [:],
        intAttributes: [String: Int64] = [:]
    ) -> String {
        var node = Onnx_NodeProto()
        node.opType = op
        node.name = output
        node.input = inputs
        node.output = [output]
        node.attribute =
            floatAttributes.sorted { $0.key < $1.key }.map { name, value in
                Onnx_AttributeProto.with {
                    $0.name = name
                    $0.type = .float
                    $0.f = value
                }
            }
            + intAttributes.sorted { $0.key < $1.key }.map { name, value in
                Onnx_AttributeProto.with {
                    $0.name = name
                    $0.type = .int
                    $0.i = value
                }
            }
        nodes.append(node)
        return output
    }

    /// Adds `Gemm(input, W [in, out], b [out])`, the initialisers named `prefix.weight` / `prefix.bias`.
    mutating func gemm(
        _ input: String, _ prefix: String, _ weights: [Double], _ shape: [Int], _ bias: [Double], output: String
    ) -> String {
        let w = constant("\(prefix).weight", weights, shape: shape)
        let b = constant("\(prefix).bias", bias)
        return add("Gemm", [input, w, b], output)
    }
}
