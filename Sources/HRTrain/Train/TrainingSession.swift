import Foundation

/// A whole training run on a backend, from prepared data to the final `Model`: builds the network from the
/// start (fresh weights, an initial model or a checkpoint), runs the `Trainer`, writes a checkpoint (and the
/// metrics) atomically after every epoch, evaluates the test rows through `Evaluation` (what `hrtrain
/// evaluate` reports) and returns the model. Nothing here touches a device API: it is written against
/// `Backend` alone, so it runs the same on OpenCL, the Double reference or any other backend.
///
/// ```swift
/// let session = try TrainingSession(
///     backend: backend, data: prepared, options: options, start: .fresh(seed: options.seed),
///     settings: .init(checkpoint: checkpointURL, metrics: metricsURL))
/// session.observer = progress                      // optional: per-step and per-epoch reports
/// session.afterEpoch = { record, state in .proceed }  // optional: return .stop to end the run there
/// session.afterStep = { epoch, done, steps in .proceed }  // optional: .stop ends it mid-epoch (an interruption)
/// let result = try session.run()                   // result.model, result.test, result.state
/// ```
///
/// Seams for what comes next: `gradientHook` runs between the backward pass and Adam (a gradient
/// all-reduce); `data` may hold one rank's shard of the rows (`PreparedData.prepareShard`, with
/// `dataParallel`); `afterEpoch` sees every epoch's record (a
/// divergence check) and can stop the run, leaving a resumable checkpoint; the options are `Codable`
/// (stored in checkpoints and model files) and validated in `TrainingOptions.validate()`.
public final class TrainingSession<B: Backend> {
    /// Where the weights come from.
    public enum Start {
        /// Fresh weights drawn from `seed` under the options' profile (`Network.initialValues`).
        case fresh(seed: UInt64)
        /// The weights and running statistics of `model` (e.g. from `hrtrain init`); its architecture and
        /// profile must agree with the options'. `file` is recorded in the model metadata.
        case initFrom(Model, file: String? = nil)
        /// Continue `checkpoint` exactly where it stopped: everything but `options.epochs` (the total) comes
        /// from the checkpoint, including the scalers (give them to `PreparedData.prepare` so that nothing is
        /// fitted). `file` is named in errors.
        case resume(Checkpoint, file: String? = nil)
    }

    /// What a session does besides training; none of it changes the numbers.
    public struct Settings: Sendable {
        /// Written atomically after every epoch, and when `afterStep` stops the run mid-epoch (nil: none).
        public var checkpoint: URL?
        /// The history, one JSON line per epoch, rewritten atomically after every epoch (nil: none).
        public var metrics: URL?
        /// At most this many bytes of training data live on the device; more is streamed in chunks.
        public var residentLimitBytes: Int
        /// The data file, recorded in the model metadata.
        public var dataFile: String?
        /// The test file, named in the test evaluation (default: the data file).
        public var testFile: String?
        /// The device, recorded in the model metadata.
        public var device: String?
        /// Rows per batch when predicting the test rows.
        public var predictionBatchSize: Int
        /// The fingerprint of the data read, stored in checkpoints; a resume compares it (nil: not checked).
        public var dataFingerprint: DataFingerprint?

        /// Creates the settings (defaults: no files, everything resident, batches of 4000 for prediction).
        public init(
            checkpoint: URL? = nil, metrics: URL? = nil, residentLimitBytes: Int = .max, dataFile: String? = nil,
            testFile: String? = nil, device: String? = nil, predictionBatchSize: Int = 4000,
            dataFingerprint: DataFingerprint? = nil
        ) {
            self.dataFingerprint = dataFingerprint
            self.checkpoint = checkpoint
            self.metrics = metrics
            self.residentLimitBytes = residentLimitBytes
            self.dataFile = dataFile
            self.testFile = testFile
            self.device = device
            self.predictionBatchSize = predictionBatchSize
        }
    }

    /// What `run` returns.
    public struct Result {
        /// The final model (the best epoch's weights when early stopping restored them).
        public var model: Model
        /// The trainer's state at the end (epochs, history, early stopping).
        public var state: TrainerState
        /// The test rows' evaluation (nil without test rows, or when `afterEpoch` stopped the run).
        public var test: Evaluation?
        /// True when `afterEpoch` or `afterStep` ended the run before its epochs were done (the checkpoint
        /// resumes it; `state.partialEpoch` says where in an epoch `afterStep` stopped it).
        public var stoppedByCallback: Bool
    }

    /// The backend everything runs on.
    public let backend: B
    /// The options in effect: the given ones with the sizes of the data, the initial model's architecture,
    /// or the checkpoint's options (and the given epoch total).
    public let options: TrainingOptions
    /// The data, with the scalers in use (the checkpoint's when resuming).
    public let data: PreparedData
    /// What the session writes and records.
    public let settings: Settings
    /// The network being trained.
    public let network: Network<B>
    /// The training loop.
    public let trainer: Trainer<B>
    /// Called after every epoch, after its checkpoint and metrics are written; `.stop` ends the run there.
    public var afterEpoch: ((EpochRecord, TrainerState) throws -> EpochDecision)?
    /// Called after every step but an epoch's last (see `Trainer.afterStep`); `.stop` ends the run there and
    /// writes the checkpoint at that step.
    public var afterStep: ((_ epoch: Int, _ stepsDone: Int, _ steps: Int) throws -> EpochDecision)? {
        get { trainer.afterStep }
        set { trainer.afterStep = newValue }
    }
    /// Receives per-step and per-epoch progress (held weakly).
    public var observer: TrainingObserver? {
        get { trainer.observer }
        set { trainer.observer = newValue }
    }
    /// Runs between the backward pass and Adam in every step (see `Trainer.gradientHook`).
    public var gradientHook: ((Network<B>) throws -> Void)? {
        get { trainer.gradientHook }
        set { trainer.gradientHook = newValue }
    }
    /// Whether the training rows live on the device (false: streamed in chunks).
    public var trainingSetIsResident: Bool { trainer.trainingSetIsResident }

    private var metadata: ModelMetadata

    /// Builds the network for `start` and prepares the trainer. Throws `TrainingOptionsError` for invalid
    /// options or an initial model that disagrees with them, `DataError` (field `initialModel` or
    /// `checkpoint`) for a start that does not fit the data.
    /// `dataParallel`: the hooks of synchronous data-parallel training over MPI ranks (nil: one process); a
    /// checkpoint resumes only on as many ranks as wrote it.
    public init(
        backend: B, data: PreparedData, options: TrainingOptions, start: Start, settings: Settings = Settings(),
        dataParallel: DataParallel? = nil
    ) throws {
        var options = options
        var data = data
        let network: Network<B>
        var state: TrainerState?
        var best: (parameters: [Float], running: [Float])?
        let initialization: Initialization?
        switch start {
        case .fresh(let seed):
            options.spec.inputSize = data.featureNames.count
            options.spec.outputSize = data.targetNames.count
            try options.validate()
            let initial = Network<B>.initialValues(spec: options.spec, profile: options.profile, seed: seed)
            network = try Network(
                backend: backend, spec: options.spec, profile: options.profile, parameters: initial.parameters,
                runningStatistics: initial.runningStatistics)
            initialization = .seed(seed, profile: options.profile)
        case .initFrom(let model, let file):
            let m = model.metadata
            guard m.featureNames == data.featureNames, m.targetNames == data.targetNames else {
                throw DataError(
                    "the model's features/targets (\(m.featureNames.count)/\(m.targetNames.count) columns) are not "
                        + "the ones selected from \(settings.dataFile ?? "the data")",
                    file: file ?? "initial model", field: .initialModel)
            }
            func disagree(_ field: TrainingOptionsError.Field, _ given: String, _ model: String) -> Error {
                TrainingOptionsError(
                    field: field, message: "\(given) disagrees with the initial model \(file ?? "") (\(model))")
            }
            let hidden = { (sizes: [Int]) in sizes.map(String.init).joined(separator: ",") }
            if options.spec.hiddenSizes != m.spec.hiddenSizes {
                throw disagree(.hiddenSizes, hidden(options.spec.hiddenSizes), hidden(m.spec.hiddenSizes))
            }
            if options.spec.layerOrder != m.spec.layerOrder {
                throw disagree(.layerOrder, options.spec.layerOrder.rawValue, m.spec.layerOrder.rawValue)
            }
            if options.profile != m.profile {
                throw disagree(.profile, options.profile.rawValue, m.profile.rawValue)
            }
            options.spec = m.spec
            try options.validate()
            network = try model.network(on: backend)
            initialization = .file(file ?? "", seed: m.initialization?.seed, scheme: m.initialization?.scheme)
        case .resume(let checkpoint, let file):
            let saved = checkpoint.metadata
            let epochs = options.epochs
            options = saved.options
            options.epochs = epochs
            try options.validate()
            let place = file ?? "checkpoint"
            guard saved.model.featureNames == data.featureNames, saved.model.targetNames == data.targetNames else {
                throw DataError(
                    "the checkpoint was written for other feature/target columns than the ones selected from "
                        + "\(settings.dataFile ?? "the data")", file: place, field: .checkpoint)
            }
            // The ranks first: a data-parallel run's fingerprint combines the ranks' parts.
            let ranks = saved.options.ranks ?? 1
            let size = dataParallel?.communicator.size ?? 1
            guard ranks == size else {
                throw DataError(
                    "the checkpoint was written by a run of \(ranks) rank\(ranks == 1 ? "" : "s"), this run has "
                        + "\(size): resume with the same number "
                        + (ranks == 1 ? "(without mpirun)" : "(mpirun -np \(ranks))")
                        + " — each rank's share of the batches, and without synchronised batch norm the batch "
                        + "statistics, depend on it", file: place, field: .checkpoint)
            }
            if let recorded = saved.dataFingerprint, let current = settings.dataFingerprint,
                let difference = current.difference(from: recorded)
            {
                throw DataError(
                    "the checkpoint was written for other data: \(difference); resume on the same data",
                    file: place, field: .checkpoint)
            }
            guard saved.trainingRows == data.totalTrainingRows, saved.validationRows == data.totalValidationRows
            else {
                // hrtrain before 3 Dec 2026 took floor(n·v) validation rows; Keras (and hrtrain since)
                // floor(n·(1−v)) training rows: one row apart where n·v is not whole.
                let usable = saved.trainingRows + saved.validationRows
                let olderSplit =
                    usable == data.totalTrainingRows + data.totalValidationRows
                    && saved.validationRows == Int((Double(usable) * saved.options.validationSplit).rounded(.down))
                throw DataError(
                    "the checkpoint was written for \(saved.trainingRows) training and \(saved.validationRows) "
                        + "validation rows, but \(settings.dataFile ?? "the data") gives \(data.totalTrainingRows) "
                        + "and \(data.totalValidationRows): "
                        + (olderSplit
                            ? "the checkpoint comes from an hrtrain before the validation split was made Keras' own "
                                + "(floor(n·(1−v)) training rows); start the run again, or finish it with that "
                                + "version"
                            : "use the same data and split"),
                    file: place, field: .checkpoint)
            }
            data.featureScaler = checkpoint.model.featureScaler
            data.targetScaler = checkpoint.model.targetScaler
            network = try checkpoint.model.network(on: backend)
            try network.restore(
                parameters: checkpoint.model.parameters, firstMoment: checkpoint.firstMoment,
                secondMoment: checkpoint.secondMoment, runningStatistics: checkpoint.model.runningStatistics,
                step: saved.adamStep)
            state = saved.state
            best = checkpoint.best
            initialization = saved.model.initialization
        }
        if let shard = data.shard {
            guard let dataParallel else {
                throw DataError(
                    "the data holds one rank's rows, but the run is not data-parallel",
                    file: settings.dataFile ?? "data", field: .data)
            }
            dataParallel.shard = shard
        }
        self.backend = backend
        self.options = options
        self.data = data
        self.settings = settings
        self.network = network
        trainer = try Trainer(
            backend: backend, options: options, network: network,
            train: (data.train.features, data.train.targets, data.train.rows),
            validation: (data.validation.features, data.validation.targets, data.validation.rows),
            featureScaler: data.featureScaler, targetScaler: data.targetScaler,
            residentLimitBytes: settings.residentLimitBytes, state: state, best: best, dataParallel: dataParallel,
            trainingWeights: data.train.weights, validationWeights: data.validation.weights)
        metadata = ModelMetadata(
            spec: options.spec, profile: options.profile, featureNames: data.featureNames,
            targetNames: data.targetNames, training: options, dataFile: settings.dataFile, device: settings.device,
            initialization: initialization)
        metadata.baseline = data.baseline
    }

    /// Trains until the epochs are done, early stopping fires or `afterEpoch`/`afterStep` says stop; then
    /// evaluates the test rows (unless stopped by a callback) and returns the model. A stop by `afterStep`
    /// writes the checkpoint at that step (the metrics stay those of the last completed epoch).
    public func run() throws -> Result {
        try trainer.run { trainer in
            if let url = settings.checkpoint { try checkpoint().write(to: url) }
            if let url = settings.metrics { try writeMetrics(trainer.state.history, to: url) }
            guard let afterEpoch, let record = trainer.state.history.last else { return .proceed }
            return try afterEpoch(record, trainer.state)
        }
        if trainer.state.partialEpoch != nil, let url = settings.checkpoint { try checkpoint().write(to: url) }
        let model = try currentModel()
        var test: Evaluation?
        if let rows = data.test, !trainer.stoppedByCallback {
            test = try evaluate(model, on: rows)
        }
        return Result(model: model, state: trainer.state, test: test, stoppedByCallback: trainer.stoppedByCallback)
    }

    /// The model as it stands (weights read back from the backend in Float32).
    public func currentModel() throws -> Model {
        var metadata = metadata
        metadata.epochsTrained = trainer.state.epoch
        let weights = try network.weights()
        return Model(
            metadata: metadata, parameters: weights.parameters, runningStatistics: weights.runningStatistics,
            featureScaler: data.featureScaler, targetScaler: data.targetScaler)
    }

    /// Everything needed to resume: after the last completed epoch, or at the step where `afterStep` stopped.
    public func checkpoint() throws -> Checkpoint {
        let moments = try network.adamMoments()
        return Checkpoint(
            metadata: .init(
                model: metadata, options: options, state: trainer.state, adamStep: network.step,
                trainingRows: data.totalTrainingRows, validationRows: data.totalValidationRows,
                dataFingerprint: settings.dataFingerprint),
            model: try currentModel(), firstMoment: moments.first, secondMoment: moments.second,
            best: try trainer.bestWeights())
    }

    /// The evaluation of `model` on `rows` (raw features and targets): the predictions of `Model.predict` and
    /// the figures of `Evaluation`, binned in |u_t| (the data's other binning columns are not kept).
    public func evaluate(_ model: Model, on rows: SampleRows) throws -> Evaluation {
        let predictions = try model.predict(
            rows.features, rows: rows.rows, on: backend, batchSize: settings.predictionBatchSize)
        let truth = Table(columnNames: data.targetNames, rowCount: rows.rows, values: rows.targets)
        return try Evaluation(
            predictions: predictions, table: truth, targetNames: data.targetNames, model: "trained model",
            data: settings.testFile ?? settings.dataFile ?? "test rows", backend: backend.name,
            binnings: [.truthMagnitude])
    }
}
