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

    /// The checkpoint's JSON part.
    public var metadata: Metadata
    /// The network's weights and running statistics, scalers and metadata.
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
        var file = try model.safeTensors()
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
        if let problem = metadata.inconsistency() { throw fail(problem) }
        if let problem = metadata.state.partialEpoch?.inconsistency(completedEpochs: metadata.state.epoch) {
            throw fail(problem)
        }
        return Checkpoint(
            metadata: metadata, model: model, firstMoment: try flat("adam.m", layout.parameterCount),
            secondMoment: try flat("adam.v", layout.parameterCount), best: best)
    }
}

extension Checkpoint.Metadata {
    /// Why these values cannot come from a run (a damaged or edited checkpoint); nil when they can. Every count
    /// is bounded (so that continuing cannot overflow), the options are valid and describe the model's network,
    /// and the schedule's state is finite and within the epochs done.
    func inconsistency() -> String? {
        do { try options.validate() } catch { return "its training options are not valid: \(error)" }
        if options.spec != model.spec || options.profile != model.profile {
            return "its training options describe another network (\(options.spec.hiddenSizes), \(options.profile)) "
                + "than its model (\(model.spec.hiddenSizes), \(model.profile))"
        }
        let epochs = TrainingOptions.maximumEpochs
        guard (0...epochs).contains(state.epoch) else { return "epochs done \(state.epoch) are not in 0...\(epochs)" }
        guard (0...(1 << 40)).contains(trainingRows), (0...(1 << 40)).contains(validationRows) else {
            return "its row counts \(trainingRows) and \(validationRows) are out of range"
        }
        // Each step takes at least one row: at most (epochs + 1) × rows steps.
        guard adamStep >= 0, adamStep <= (state.epoch + 1) * Swift.max(trainingRows, 1) else {
            return "its Adam step count \(adamStep) does not fit \(state.epoch) epochs of \(trainingRows) rows"
        }
        // (0 is reachable: the plateau schedule with a minimum of 0 may underflow the rate after many reductions)
        guard state.learningRate.isFinite, state.learningRate >= 0 else {
            return "its learning rate \(state.learningRate) is not a finite number ≥ 0"
        }
        guard (0...state.epoch).contains(state.earlyStoppingWait), (0...state.epoch).contains(state.plateauWait) else {
            return "its waits (\(state.earlyStoppingWait), \(state.plateauWait)) exceed the \(state.epoch) epochs done"
        }
        if [state.best, state.plateauBest].contains(where: { $0.map { !$0.isFinite } ?? false }) {
            return "its best monitored losses are not finite"
        }
        if let bestEpoch = state.bestEpoch, !(1...Swift.max(state.epoch, 1)).contains(bestEpoch) {
            return "its best epoch \(bestEpoch) is not one of the \(state.epoch) epochs done"
        }
        if state.history.count > state.epoch {
            return "its history has \(state.history.count) epochs, more than the \(state.epoch) done"
        }
        return nil
    }
}
