/// Everything that defines a training run (stored in checkpoints and in the model file).
public struct TrainingOptions: Codable, Sendable, Equatable {
    public var spec = NetworkSpec()
    public var profile: NumericsProfile = .keras
    public var epochs = 10
    /// Rows per step (the thesis: 4000).
    public var batchSize = 4000
    public var learningRate = 1e-3
    /// Seed of the weight initialisation and of every epoch's shuffle.
    public var seed: UInt64 = 1
    /// Shuffle the training rows each epoch (the validation rows are never shuffled).
    public var shuffle = true
    /// Fraction of the training rows held out for validation: the last rows, before any shuffling (Keras).
    public var validationSplit = 0.2
    /// Fraction of the sample's last rows held out as the test set (0: none, or a separate test file).
    public var testFraction = 0.0
    /// Standardise the targets too (inverted on prediction).
    public var scaleTargets = false
    public var earlyStopping: EarlyStopping?
    public var reduceLearningRate: ReduceLearningRateOnPlateau?
    /// Data-parallel training: the number of ranks (nil: one process; a resumed run needs the same number).
    public var ranks: Int?
    /// Data-parallel training: batch norm with the statistics of the whole batch across ranks.
    public var synchronizedBatchNorm: Bool?
    /// A data column of per-event loss weights (the weighted MSE); nil: none.
    public var weightColumn: String?
    /// Loss weights that flatten the |target| spectrum (times the column's, if any); nil: none.
    public var flattening: FlatteningRequest?
    /// Residual learning: one feature column per target, subtracted from the targets; nil: none.
    public var baseline: [String]?

    /// The defaults: the thesis configuration (keras profile, batch 4000, lr 1e-3, 20 % validation).
    public init() {}

    /// The most epochs a run may ask for (far beyond any training; keeps every epoch and step count, and the
    /// counters of a checkpoint, far from overflow).
    public static let maximumEpochs = 1_000_000

    /// Checks every value; the one place where training options are validated (the CLI maps the failing
    /// field to its flag). Throws `TrainingOptionsError`.
    public func validate() throws {
        func check(_ condition: Bool, _ field: TrainingOptionsError.Field, _ message: String) throws {
            if !condition { throw TrainingOptionsError(field: field, message: message) }
        }
        try check(epochs >= 1, .epochs, "must be at least 1, got \(epochs)")
        try check(
            epochs <= Self.maximumEpochs, .epochs, "must be at most \(Self.maximumEpochs), got \(epochs)")
        try check(
            batchSize >= 2, .batchSize, "must be at least 2 (batch normalisation needs two rows), got \(batchSize)")
        try check(learningRate > 0 && learningRate.isFinite, .learningRate, "must be positive, got \(learningRate)")
        try check((0..<1).contains(validationSplit), .validationSplit, "must be in [0, 1), got \(validationSplit)")
        try check((0..<1).contains(testFraction), .testFraction, "must be in [0, 1), got \(testFraction)")
        try check(
            !spec.hiddenSizes.isEmpty && spec.hiddenSizes.allSatisfy { $0 > 0 }, .hiddenSizes,
            "must be one or more positive sizes, got \(spec.hiddenSizes)")
        // Sizes: the network and one batch must be representable (overflow-safe) and the parameters fit in memory.
        do { _ = try SizeLimits.network(spec, batch: 1) } catch let error as SizeLimitError {
            throw TrainingOptionsError(field: .hiddenSizes, message: error.description)
        }
        do { _ = try SizeLimits.network(spec, batch: batchSize) } catch let error as SizeLimitError {
            throw TrainingOptionsError(field: .batchSize, message: error.description)
        }
        if let stopping = earlyStopping {
            try check(stopping.patience >= 0, .patience, "must be ≥ 0")
            try check(stopping.minDelta.isFinite, .minDelta, "must be finite, got \(stopping.minDelta)")
        }
        if let plateau = reduceLearningRate {
            try check(plateau.patience >= 1, .reduceLearningRatePatience, "must be ≥ 1")
            try check(
                plateau.factor > 0 && plateau.factor < 1, .reduceLearningRateFactor,
                "must be in (0, 1), got \(plateau.factor)")
            try check(
                plateau.minimum >= 0 && plateau.minimum.isFinite, .minimumLearningRate,
                "must be a finite number ≥ 0, got \(plateau.minimum)")
            try check(
                plateau.minDelta.isFinite, .reduceLearningRateMinDelta, "must be finite, got \(plateau.minDelta)")
        }
        if let weightColumn { try check(!weightColumn.isEmpty, .weightColumn, "must name a column") }
        if let f = flattening {
            try check(
                f.edges.count >= 2 && f.edges.allSatisfy(\.isFinite)
                    && zip(f.edges, f.edges.dropFirst()).allSatisfy { $0 < $1 },
                .flatteningEdges, "must be at least two finite, strictly ascending numbers, got \(f.edges)")
            try check(
                f.power.isFinite && f.power >= 0, .flatteningPower, "must be a finite number ≥ 0, got \(f.power)")
            try check(
                f.maximumWeight.isFinite && f.maximumWeight >= 1, .flatteningMaximumWeight,
                "must be a finite number ≥ 1, got \(f.maximumWeight)")
        }
        if let baseline {
            // (one per target: checked against the data's targets when the data is prepared)
            try check(
                !baseline.isEmpty && baseline.allSatisfy { !$0.isEmpty }, .baseline,
                "must name one column per target, got \(baseline.joined(separator: ","))")
        }
    }
}

/// A training option with an impossible value, or one that disagrees with the model training starts from.
/// Names the field, never a command-line flag.
public struct TrainingOptionsError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The options' fields, as they are named in messages.
    public enum Field: String, Sendable, CaseIterable {
        case epochs
        case batchSize = "batch size"
        case learningRate = "learning rate"
        case validationSplit = "validation split"
        case testFraction = "test fraction"
        case hiddenSizes = "hidden sizes"
        case layerOrder = "layer order"
        case profile
        case patience = "early-stopping patience"
        case minDelta = "early-stopping minimum delta"
        case reduceLearningRatePatience = "learning-rate schedule patience"
        case reduceLearningRateFactor = "learning-rate schedule factor"
        case reduceLearningRateMinDelta = "learning-rate schedule minimum delta"
        case minimumLearningRate = "minimum learning rate"
        case weightColumn = "weight column"
        case flatteningEdges = "flattening bin edges"
        case flatteningPower = "flattening power"
        case flatteningMaximumWeight = "flattening maximum weight"
        case baseline
    }
    /// The field whose value is wrong.
    public var field: Field
    /// What is wrong with it, without the field's name (`must be at least 1, got 0`).
    public var message: String
    /// Creates the error.
    public init(field: Field, message: String) {
        self.field = field
        self.message = message
    }
    /// `field message`.
    public var description: String { "\(field.rawValue) \(message)" }
}

/// Keras `EarlyStopping` on `val_loss` (or the training loss when there is no validation set): stop after
/// `patience` epochs without an improvement larger than `minDelta`.
public struct EarlyStopping: Codable, Sendable, Equatable {
    public var patience = 0
    public var minDelta = 0.0
    /// Put back the weights of the best epoch when training ends.
    public var restoreBestWeights = false
    /// Creates the settings (Keras defaults: patience 0, min_delta 0, no restore).
    public init(patience: Int = 0, minDelta: Double = 0, restoreBestWeights: Bool = false) {
        self.patience = patience
        self.minDelta = minDelta
        self.restoreBestWeights = restoreBestWeights
    }
}

/// Keras `ReduceLROnPlateau`: multiply the learning rate by `factor` after `patience` epochs without an
/// improvement larger than `minDelta`, never below `minimum`.
public struct ReduceLearningRateOnPlateau: Codable, Sendable, Equatable {
    public var factor = 0.1
    public var patience = 10
    public var minDelta = 1e-4
    public var minimum = 0.0
    /// Creates the settings (Keras defaults: factor 0.1, patience 10, min_delta 1e-4, min_lr 0).
    public init(factor: Double = 0.1, patience: Int = 10, minDelta: Double = 1e-4, minimum: Double = 0) {
        self.factor = factor
        self.patience = patience
        self.minDelta = minDelta
        self.minimum = minimum
    }
}

/// One line of the metrics file: what an epoch did.
public struct EpochRecord: Codable, Sendable, Equatable {
    public var epoch: Int
    /// Mean of the epoch's per-step training-mode losses (Keras' `loss`).
    public var trainLoss: Double
    /// MSE over all validation rows with batch norm in inference mode (Keras' `val_loss`).
    public var validationLoss: Double?
    /// The learning rate used during the epoch.
    public var learningRate: Double
    public var seconds: Double
    /// Training events per second over the epoch (validation excluded).
    public var eventsPerSecond: Double

    enum CodingKeys: String, CodingKey {
        case epoch
        case trainLoss = "train_loss"
        case validationLoss = "val_loss"
        case learningRate = "learning_rate"
        case seconds
        case eventsPerSecond = "events_per_second"
    }
}

/// The batch sizes of one pass over `rows` rows in batches of `batchSize`.
///
/// The last, partial batch is used (as Keras does), except that a remainder of a single row is folded into
/// the batch before it: batch normalisation cannot normalise one row (its variance is zero).
public func batchSizes(rows: Int, batchSize: Int, training: Bool) -> [Int] {
    guard rows > 0 else { return [] }
    let full = rows / batchSize
    let rest = rows % batchSize
    var sizes = [Int](repeating: batchSize, count: full)
    if rest == 0 { return sizes }
    if training && rest == 1 && !sizes.isEmpty { sizes[sizes.count - 1] += 1 } else { sizes.append(rest) }
    return sizes
}
