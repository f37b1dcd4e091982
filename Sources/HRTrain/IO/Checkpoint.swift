import Foundation

/// Everything needed to continue a run exactly where it stopped.
///
/// On disk: the model's tensors (see `Model`) plus `adam.m`, `adam.v` (flat, F32), and, when early stopping
/// keeps the best weights, `best.parameters` and `best.running_statistics`; metadata `format =
/// hrtrain-checkpoint` and `checkpoint` = the JSON of `Checkpoint.Metadata`. Written atomically after every
/// epoch, and at the step where an interruption stopped the run (then `state.partialEpoch` holds the epoch, the
/// steps done in it and their losses). The shuffle of epoch k depends only on (seed, k), so the epoch count and
/// the step within the epoch are the whole RNG state.
public struct Checkpoint: Sendable {
    /// The JSON part.
    public struct Metadata: Codable, Sendable, Equatable {
        public var format = "hrtrain-checkpoint"
        public var model: ModelMetadata
        public var options: TrainingOptions
        public var state: TrainerState
        /// Adam updates done.
        public var adamStep: Int
        /// Training and validation rows of the run (a resume on other data is refused).
        public var trainingRows: Int
        public var validationRows: Int
        /// Column names, row count and value hash of the data read (nil in checkpoints of older versions).
        public var dataFingerprint: DataFingerprint?

        /// Creates the metadata.
        public init(
            model: ModelMetadata, options: TrainingOptions, state: TrainerState, adamStep: Int, trainingRows: Int,
            validationRows: Int, dataFingerprint: DataFingerprint? = nil
        ) {
            self.dataFingerprint = dataFingerprint
            self.model = model
            self.options = options
            self.state = state
            self.adamStep = adamStep
            self.trainingRows = trainingRows
            self.validationRows = validationRows
        }
    }

    public var metadata: Metadata
    public var model: Model
    public var firstMoment: [Float]
    public var secondMoment: [Float]
    public var best: (parameters: [Float], running: [Float])?

    /// Creates a checkpoint.
    public init(
        metadata: Metadata, model: Model, firstMoment: [Float], secondMoment: [Float],
        best: (parameters: [Float], running: [Float])?
    ) {
        self.metadata = metadata
        self.model = model
        self.firstMoment = firstMoment
        self.secondMoment = secondMoment
        self.best = best
    }

    /// Writes the checkpoint atomically (temporary file, flush, rename).
    public func write(to url: URL) throws {
        var file = model.safeTensors()
        let p = firstMoment.count
        file.tensors["adam.m"] = SafeTensor(shape: [p], floats: firstMoment)
        file.tensors["adam.v"] = SafeTensor(shape: [p], floats: secondMoment)
        if let best {
            file.tensors["best.parameters"] = SafeTensor(shape: [best.parameters.count], floats: best.parameters)
            file.tensors["best.running_statistics"] = SafeTensor(shape: [best.running.count], floats: best.running)
        }
        file.metadata = ["format": "hrtrain-checkpoint", "checkpoint": try JSON.string(metadata)]
        try file.write(to: url)
    }

    /// Reads and validates a checkpoint.
    public static func read(from url: URL) throws -> Checkpoint {
        var file = try SafeTensorsFile.read(from: url)
        func fail(_ message: String) -> DataError { DataError(message, file: url.path, field: .checkpoint) }
        guard file.metadata["format"] == "hrtrain-checkpoint", let json = file.metadata["checkpoint"] else {
            throw fail("not an hrtrain checkpoint (its safetensors metadata has no format = hrtrain-checkpoint)")
        }
        let metadata: Metadata
        do { metadata = try JSONDecoder().decode(Metadata.self, from: Data(json.utf8)) } catch {
            throw fail("the checkpoint metadata is not valid: \(error)")
        }
        var extras: [String: SafeTensor] = [:]
        for name in ["adam.m", "adam.v", "best.parameters", "best.running_statistics"] {
            extras[name] = file.tensors.removeValue(forKey: name)
        }
        file.metadata = ["format": "hrtrain-model", "hrtrain": try JSON.string(metadata.model)]
        let model = try Model(file: file, path: url.path, field: .checkpoint)
        let layout = ParameterLayout(model.metadata.spec)
        func flat(_ name: String, _ count: Int) throws -> [Float] {
            guard let t = extras[name], t.dtype == .f32, t.shape == [count], let v = t.floats, v.allSatisfy(\.isFinite)
            else {
                throw fail("tensor \"\(name)\" is missing or is not F32 [\(count)] with finite values")
            }
            return v
        }
        let best: ([Float], [Float])? =
            extras["best.parameters"] == nil
            ? nil
            : (
                try flat("best.parameters", layout.parameterCount),
                try flat("best.running_statistics", layout.runningCount)
            )
        guard metadata.adamStep >= 0, metadata.state.epoch >= 0 else { throw fail("negative step or epoch") }
        if let problem = metadata.state.partialEpoch?.inconsistency(completedEpochs: metadata.state.epoch) {
            throw fail(problem)
        }
        return Checkpoint(
            metadata: metadata, model: model, firstMoment: try flat("adam.m", layout.parameterCount),
            secondMoment: try flat("adam.v", layout.parameterCount), best: best)
    }
}
