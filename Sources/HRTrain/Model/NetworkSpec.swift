/// The order of operations inside each hidden block.
public enum LayerOrder: String, Codable, CaseIterable, Sendable {
    /// `Dense → tanh → BatchNorm` (the default; the thesis' "dense layers alternated with batch norm").
    case denseTanhBatchNorm = "dense-tanh-bn"
    /// `Dense → BatchNorm → tanh` (the ordering of the original batch-norm paper).
    case denseBatchNormTanh = "dense-bn-tanh"
}

/// The shape of the thesis MLP: inputs → hidden blocks → a linear output layer.
public struct NetworkSpec: Codable, Sendable, Equatable {
    public var inputSize: Int
    public var hiddenSizes: [Int]
    public var outputSize: Int
    public var layerOrder: LayerOrder

    /// The thesis network: 38 inputs, three hidden blocks of 256, 2 outputs, dense-tanh-bn.
    public init(
        inputSize: Int = 38, hiddenSizes: [Int] = [256, 256, 256], outputSize: Int = 2,
        layerOrder: LayerOrder = .denseTanhBatchNorm
    ) {
        self.inputSize = inputSize
        self.hiddenSizes = hiddenSizes
        self.outputSize = outputSize
        self.layerOrder = layerOrder
    }

    /// Throws unless every size is positive.
    public func validate() throws {
        try require(inputSize > 0, "the network needs at least one input feature")
        try require(outputSize > 0, "the network needs at least one output")
        try require(!hiddenSizes.isEmpty, "the network needs at least one hidden layer")
        try require(hiddenSizes.allSatisfy { $0 > 0 }, "hidden sizes must be positive, got \(hiddenSizes)")
    }

    /// Multiply-adds of the GEMMs per event for one training step (forward + both backward GEMMs, the
    /// first layer's input gradient skipped): ×2 for FLOPs.
    public var trainingFLOPsPerEvent: Int {
        let widths = [inputSize] + hiddenSizes + [outputSize]
        var flops = 0
        for l in 0..<(widths.count - 1) {
            let mac = widths[l] * widths[l + 1]
            flops += 2 * mac * (l == 0 ? 2 : 3)
        }
        return flops
    }
}

/// Where one named tensor lives inside a flat buffer.
public struct ParameterEntry: Codable, Sendable, Equatable {
    public var name: String
    public var shape: [Int]
    /// Offset in elements.
    public var offset: Int
    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
}

/// The packing of all trainable parameters into one flat buffer (what Adam updates in one launch), and of
/// the batch-norm running statistics into a second one (which Adam does not touch).
///
/// Names: `dense1.weight [in, out]`, `dense1.bias [out]`, `bn1.gamma`, `bn1.beta`, … , `output.weight`,
/// `output.bias`; running statistics `bn1.running_mean`, `bn1.running_var`, ….
public struct ParameterLayout: Sendable, Equatable {
    public private(set) var parameters: [ParameterEntry] = []
    public private(set) var runningStatistics: [ParameterEntry] = []
    public private(set) var parameterCount = 0
    public private(set) var runningCount = 0

    /// The layout of `spec`.
    public init(_ spec: NetworkSpec) {
        var fanIn = spec.inputSize
        for (i, width) in spec.hiddenSizes.enumerated() {
            let l = i + 1
            add("dense\(l).weight", [fanIn, width])
            add("dense\(l).bias", [width])
            add("bn\(l).gamma", [width])
            add("bn\(l).beta", [width])
            addRunning("bn\(l).running_mean", [width])
            addRunning("bn\(l).running_var", [width])
            fanIn = width
        }
        add("output.weight", [fanIn, spec.outputSize])
        add("output.bias", [spec.outputSize])
    }

    private mutating func add(_ name: String, _ shape: [Int]) {
        parameters.append(ParameterEntry(name: name, shape: shape, offset: parameterCount))
        parameterCount += shape.reduce(1, *)
    }

    private mutating func addRunning(_ name: String, _ shape: [Int]) {
        runningStatistics.append(ParameterEntry(name: name, shape: shape, offset: runningCount))
        runningCount += shape.reduce(1, *)
    }

    /// The entry called `name` among the parameters or the running statistics.
    public func entry(_ name: String) -> ParameterEntry? {
        parameters.first { $0.name == name } ?? runningStatistics.first { $0.name == name }
    }
}
