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
    /// A data column of per-event loss weights (the weighted MSE); nil: none.
    public var weightColumn: String?
    /// Loss weights that flatten the |target| spectrum (times the column's, if any); nil: none.
    public var flattening: FlatteningRequest?
    /// Residual learning: one feature column per target, subtracted from the targets; nil: none.
    public var baseline: [String]?

    /// The defaults: the thesis configuration (keras profile, batch 4000, lr 1e-3, 20 % validation).
    public init() {}
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
