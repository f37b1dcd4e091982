import Foundation

/// The state between epochs that, with the tensors, makes a run resumable (stored in checkpoints).
public struct TrainerState: Codable, Sendable, Equatable {
    /// Epochs completed.
    public var epoch = 0
    /// The learning rate for the next epoch.
    public var learningRate: Double
    /// Early stopping's best monitored loss, and the epoch it was reached.
    public var best: Double?
    public var bestEpoch: Int?
    /// ReduceLROnPlateau's best monitored loss.
    public var plateauBest: Double?
    /// Epochs since the last improvement, for early stopping and for the plateau schedule.
    public var earlyStoppingWait = 0
    public var plateauWait = 0
    /// True once early stopping has fired.
    public var stopped = false
    public var history: [EpochRecord] = []
    /// The epoch in progress when the run was stopped between two of its steps (an interruption); nil at an
    /// epoch's end. A resumed run continues that epoch at its next step.
    public var partialEpoch: PartialEpoch?
}

/// How far an epoch got before the run stopped between two of its steps: with the weights, the Adam state
/// (moments and step count) and the epoch's permutation (from seed and epoch alone), this is everything the
/// rest of the epoch depends on, so a resumed run ends with bitwise the weights of an uninterrupted one.
public struct PartialEpoch: Codable, Sendable, Equatable {
    /// The epoch in progress (1-based): one more than the epochs completed.
    public var epoch: Int
    /// The steps of that epoch already done (at least 1, fewer than the epoch's steps).
    public var steps: Int
    /// The losses of those steps (the epoch's `loss` is the mean over all its steps).
    public var losses: [Double]

    /// Creates the record.
    public init(epoch: Int, steps: Int, losses: [Double]) {
        self.epoch = epoch
        self.steps = steps
        self.losses = losses
    }

    /// Why this record cannot belong to a state with `completed` epochs done; nil when it can.
    public func inconsistency(completedEpochs completed: Int) -> String? {
        if epoch != completed + 1 {
            return "the partial epoch \(epoch) does not follow the \(completed) completed epochs"
        }
        if steps < 1 || losses.count != steps {
            return "the partial epoch has \(steps) steps but \(losses.count) losses"
        }
        if let bad = losses.firstIndex(where: { !$0.isFinite }) {
            return "the partial epoch's loss of step \(bad + 1) is not finite"
        }
        return nil
    }
}

extension TrainerState {
    /// Keras' EarlyStopping and ReduceLROnPlateau (in that order), each with its own best value, after epoch
    /// `epoch` (already counted) with monitored loss `current`:
    /// ```
    /// EarlyStopping:     wait += 1; if current + min_delta < best { best = current; wait = 0 }
    ///                    else if wait ≥ patience and not the first epoch { stop }
    /// ReduceLROnPlateau: if current < best − min_delta { best = current; wait = 0 }
    ///                    else { wait += 1; if wait ≥ patience { lr = max(lr·factor, min_lr); wait = 0 } }
    /// ```
    /// Returns true when early stopping saw an improvement (the best weights are to be kept).
    public mutating func applyCallbacks(monitor current: Double, options: TrainingOptions) -> Bool {
        var improved = false
        if let stopping = options.earlyStopping {
            earlyStoppingWait += 1
            if current + stopping.minDelta < (best ?? .infinity) {
                best = current
                bestEpoch = epoch
                earlyStoppingWait = 0
                improved = true
            } else if earlyStoppingWait >= stopping.patience && epoch > 1 {
                stopped = true
            }
        }
        if let plateau = options.reduceLearningRate {
            if current < (plateauBest ?? .infinity) - plateau.minDelta {
                plateauBest = current
                plateauWait = 0
            } else {
                plateauWait += 1
                if plateauWait >= plateau.patience {
                    if learningRate > plateau.minimum {
                        learningRate = max(learningRate * plateau.factor, plateau.minimum)
                    }
                    plateauWait = 0
                }
            }
        }
        return improved
    }
}

/// What a callback after an epoch asks for.
public enum EpochDecision: Sendable, Equatable {
    /// Go on with the next epoch (unless the epochs are done or early stopping fired).
    case proceed
    /// End the run now, as an interruption would: the best weights are not restored, the state stays resumable.
    case stop
}

/// What `Trainer` reports while it runs.
public protocol TrainingObserver: AnyObject {
    /// After each step is queued (not finished: nothing waits for the device here).
    func didQueueStep(epoch: Int, step: Int, of steps: Int)
    /// After each epoch, with its record.
    func didFinishEpoch(_ record: EpochRecord, state: TrainerState)
}

/// The training loop on a backend, Keras `fit` semantics:
/// - the validation rows are given separately (already split off: the last rows, before shuffling);
/// - each epoch shuffles the training rows with a permutation drawn from `(seed, epoch)` alone, so a run
///   resumed after epoch k sees exactly the batches the uninterrupted run saw;
/// - the per-step losses stay on the device and are read once per epoch; the epoch's `loss` is their mean,
///   `val_loss` the MSE over all validation rows with batch norm in inference mode.
public final class Trainer<B: Backend> {
    public let backend: B
    public let options: TrainingOptions
    public let network: Network<B>
    public private(set) var state: TrainerState
    private let training: DeviceDataset<B>
    private let featureScaler: StandardScaler
    private let targetScaler: StandardScaler?
    private let residentLimitBytes: Int
    private let chunkRows: Int
    private let validation: DeviceDataset<B>?
    private var bestParameters: B.Tensor?
    private var bestRunning: B.Tensor?
    /// Receives progress; optional.
    public weak var observer: TrainingObserver?
    /// Called between the backward pass and the Adam update of every step, with `network.gradients` complete:
    /// the place to combine gradients across processes (an all-reduce) or to inspect them. Nil: nothing runs
    /// between them.
    public var gradientHook: ((Network<B>) throws -> Void)?
    /// True when the last `run` ended because its `afterEpoch` or `afterStep` callback asked to stop.
    public private(set) var stoppedByCallback = false
    /// Called after every step but an epoch's last, with the epoch (1-based), the steps done in it and its
    /// step count; `.stop` ends the run there, recording the position in `state.partialEpoch` (the weights and
    /// the Adam state are those after that step). Not called in data-parallel runs, whose ranks must stop at
    /// the same step. Nil: nothing is called.
    public var afterStep: ((_ epoch: Int, _ stepsDone: Int, _ steps: Int) throws -> EpochDecision)?
    private var lossBuffer: B.Tensor?
    /// Σ w of each validation batch (weighted training), for the weighted mean of the batch losses.
    private var validationWeightSums: [Double]?
    private var lastQueuedStep = -1
    /// The data-parallel hooks when training over several ranks (nil: one process).
    public let dataParallel: DataParallel?

    /// Prepares a run. `train` and `validation` hold raw (unscaled) features and targets; the scalers are
    /// applied on the device. `residentLimitBytes` decides whether the sets are uploaded once or streamed.
    public init(
        backend: B, options: TrainingOptions, network: Network<B>,
        train: (features: [Float], targets: [Float], rows: Int),
        validation: (features: [Float], targets: [Float], rows: Int)?, featureScaler: StandardScaler,
        targetScaler: StandardScaler?,
        residentLimitBytes: Int, state: TrainerState? = nil, best: (parameters: [Float], running: [Float])? = nil,
        dataParallel: DataParallel? = nil, trainingWeights: [Float]? = nil, validationWeights: [Float]? = nil
    ) throws {
        self.dataParallel = dataParallel
        self.featureScaler = featureScaler
        self.targetScaler = targetScaler
        self.residentLimitBytes = residentLimitBytes
        let sharded = dataParallel?.shard != nil
        self.backend = backend
        self.options = options
        self.network = network
        self.state = state ?? TrainerState(learningRate: options.learningRate)
        let chunk = max(options.batchSize * 8, 1)
        chunkRows = chunk
        // Sharded (each rank holds its part of the training rows): they stay on the host, and every epoch the
        // rows of this rank's shares are exchanged between the ranks and go to the device.
        training = try DeviceDataset(
            backend: backend, features: train.features, targets: train.targets, weights: trainingWeights,
            rows: train.rows,
            featureScaler: featureScaler, targetScaler: targetScaler,
            residentLimitBytes: sharded ? 0 : residentLimitBytes, chunkRows: chunk)
        if let v = validation, v.rows > 0 {
            self.validation = try DeviceDataset(
                backend: backend, features: v.features, targets: v.targets, weights: validationWeights, rows: v.rows,
                featureScaler: featureScaler,
                targetScaler: targetScaler, residentLimitBytes: residentLimitBytes, chunkRows: chunk)
            if let validationWeights {
                var sums: [Double] = []
                var start = 0
                for n in batchSizes(rows: v.rows, batchSize: options.batchSize, training: false) {
                    sums.append(validationWeights[start..<start + n].reduce(0.0) { $0 + Double($1) })
                    start += n
                }
                validationWeightSums = sums
            }
        } else {
            self.validation = nil
        }
        if options.earlyStopping?.restoreBestWeights == true {
            bestParameters = try backend.scratch([network.layout.parameterCount])
            bestRunning = try backend.scratch([network.layout.runningCount])
            if let best {
                try backend.write(best.parameters, to: bestParameters!)
                try backend.write(best.running, to: bestRunning!)
            } else {
                try backend.copy(network.parameters, to: bestParameters!)
                try backend.copy(network.runningStatistics, to: bestRunning!)
            }
        }
    }

    /// Whether the training rows live on the device (false: streamed in chunks). Sharded data-parallel training:
    /// whether an epoch's rows of this rank do.
    public var trainingSetIsResident: Bool {
        guard let dataParallel, let shard = dataParallel.shard else { return training.isResident }
        let sizes = dataParallel.batchSizes(rows: shard.trainingRows, batchSize: options.batchSize)
        let (ranks, rank) = (dataParallel.communicator.size, dataParallel.communicator.rank)
        let rows = sizes.reduce(0) { $0 + Sharding.range(count: $1, parts: ranks, index: rank).count }
        let width = training.featureCount + training.targetCount + (training.weights == nil ? 0 : 1)
        return rows * width * 4 <= residentLimitBytes
    }

    /// The training rows of the whole sample (all ranks').
    private var totalTrainingRows: Int { dataParallel?.shard?.trainingRows ?? training.rows }

    /// The permutation of epoch `epoch` (1-based): Fisher–Yates driven by SplitMix64 seeded from (seed, epoch).
    public static func permutation(rows: Int, seed: UInt64, epoch: Int) -> [Int32] {
        var rng = SplitMix64(seed: shuffleSeed(seed: seed, epoch: epoch))
        var order = (0..<rows).map { Int32($0) }
        if rows > 1 {
            for i in stride(from: rows - 1, to: 0, by: -1) {
                let j = Int(rng.next() % UInt64(i + 1))
                order.swapAt(i, j)
            }
        }
        return order
    }

    /// The seed of epoch `epoch`'s shuffle.
    public static func shuffleSeed(seed: UInt64, epoch: Int) -> UInt64 {
        seed ^ (0x5DEE_CE66_D1CE_4E5B &* UInt64(epoch))
    }

    /// Trains until `options.epochs` are done, early stopping fires or `afterEpoch` (called after each epoch,
    /// e.g. to write a checkpoint) returns `.stop`. Returns the history.
    @discardableResult
    public func run(afterEpoch: (Trainer<B>) throws -> EpochDecision = { _ in .proceed }) throws -> [EpochRecord] {
        stoppedByCallback = false
        if let partial = state.partialEpoch {
            if let problem = partial.inconsistency(completedEpochs: state.epoch) { throw BackendError(problem) }
            if dataParallel != nil {
                throw BackendError("a run stopped in the middle of an epoch cannot be resumed data-parallel")
            }
        }
        while state.epoch < options.epochs && !state.stopped {
            if try runEpoch() == .stop {
                stoppedByCallback = true
                try backend.synchronize()
                return state.history
            }
            if try afterEpoch(self) == .stop {
                stoppedByCallback = true
                try backend.synchronize()
                return state.history
            }
        }
        // Keras restores the best weights when early stopping fires (not when the epochs simply run out).
        if state.stopped, let bestParameters, let bestRunning, state.bestEpoch != state.epoch {
            try backend.copy(bestParameters, to: network.parameters)
            try backend.copy(bestRunning, to: network.runningStatistics)
        }
        try backend.synchronize()
        return state.history
    }

    /// The loss of the most recently queued step (waits for the device: call it rarely, e.g. for a progress bar).
    public func latestLoss() throws -> Double? {
        guard let lossBuffer, lastQueuedStep >= 0 else { return nil }
        return try backend.read(backend.view(lossBuffer, offset: lastQueuedStep, shape: [1]))[0]
    }

    /// Runs the next epoch, or the rest of the partial one; `.stop` when `afterStep` stopped it part-way.
    private func runEpoch() throws -> EpochDecision {
        let epoch = state.epoch + 1
        let start = DispatchTime.now()
        let rows = totalTrainingRows
        let sizes =
            dataParallel?.batchSizes(rows: rows, batchSize: options.batchSize)
            ?? batchSizes(rows: rows, batchSize: options.batchSize, training: true)
        try require(!sizes.isEmpty, "no training rows")
        let resumed = state.partialEpoch
        let firstStep = resumed?.steps ?? 0
        if firstStep >= sizes.count {
            throw BackendError(
                "the checkpoint stopped after step \(firstStep) of epoch \(epoch), but an epoch of this data has "
                    + "\(sizes.count) steps")
        }
        let losses = try backend.scratch([sizes.count])
        lossBuffer = losses
        lastQueuedStep = -1
        let order = options.shuffle ? Self.permutation(rows: rows, seed: options.seed, epoch: epoch) : nil
        let lr = state.learningRate
        // With several ranks, each trains on its share of every global batch (same permutation everywhere);
        // with sharded rows, the rows of those shares are first fetched from the ranks holding them.
        let local = try dataParallel.map { try $0.localBatches(sizes: sizes, order: order) }
        var epochRows = training
        var epochOrder = local?.order ?? order
        var stepWeights: [Double]?
        if let dataParallel, let local {
            var weights: [Float]?
            if dataParallel.shard != nil {
                let fetched = try dataParallel.exchangeRows(
                    sizes: sizes, order: order, features: training.features, targets: training.targets,
                    weights: training.weights, featureCount: training.featureCount,
                    targetCount: training.targetCount)
                epochRows = try DeviceDataset(
                    backend: backend, features: fetched.features, targets: fetched.targets,
                    weights: fetched.weights, rows: local.order.count, featureScaler: featureScaler,
                    targetScaler: targetScaler, residentLimitBytes: residentLimitBytes, chunkRows: chunkRows)
                epochOrder = nil
                weights = fetched.weights
            } else {
                weights = training.weights.map { w in local.order.map { w[Int($0)] } }
            }
            stepWeights = try dataParallel.stepWeights(sizes: sizes, shares: local.sizes, weights: weights)
        }
        let afterStep = dataParallel == nil ? self.afterStep : nil
        var stoppedAfter: Int?
        do {
            try epochRows.forEachWeightedBatch(
                sizes: local?.sizes ?? sizes, order: epochOrder, firstStep: firstStep
            ) { x, y, w, step in
                let loss = backend.view(losses, offset: step, shape: [1])
                if dataParallel != nil || gradientHook != nil {
                    let weight = stepWeights?[step] ?? 1
                    dataParallel?.prepareStep(network: network, batchRows: sizes[step], gradientWeight: weight)
                    try network.forward(x, training: true)
                    try network.loss(target: y, weights: w, into: loss)
                    try network.backward()
                    try dataParallel?.reduceGradients(network: network, gradientWeight: weight)
                    try gradientHook?(network)
                    try network.applyAdam(learningRate: lr)
                } else {
                    try network.trainStep(input: x, target: y, weights: w, learningRate: lr, loss: loss)
                }
                lastQueuedStep = step
                observer?.didQueueStep(epoch: epoch, step: step, of: sizes.count)
                if step + 1 < sizes.count, let afterStep, try afterStep(epoch, step + 1, sizes.count) == .stop {
                    stoppedAfter = step + 1
                    throw StopAfterStep()
                }
            }
        } catch is StopAfterStep {}
        // The steps of an epoch resumed part-way that ran before the interruption: their losses come from it.
        let done = stoppedAfter ?? sizes.count
        var stepLosses = (resumed?.losses ?? []) + (try backend.read(losses)[firstStep..<done])
        if let bad = stepLosses.firstIndex(where: { !$0.isFinite }) {
            throw TrainingDivergence(epoch: epoch, step: bad + 1, loss: stepLosses[bad])
        }
        if let stoppedAfter {
            state.partialEpoch = PartialEpoch(epoch: epoch, steps: stoppedAfter, losses: stepLosses)
            return .stop
        }
        state.partialEpoch = nil
        let trainSeconds = elapsed(since: start)
        let rowsTrainedHere = sizes[firstStep...].reduce(0, +)
        if let dataParallel {
            stepLosses = try dataParallel.batchLosses(stepLosses, weights: stepWeights ?? [])
            try dataParallel.finishEpoch(network: network)
        }
        let trainLoss = stepLosses.reduce(0, +) / Double(stepLosses.count)
        let validationLoss = try validation.map { try evaluate($0) }
        if let validationLoss, !validationLoss.isFinite {
            throw TrainingDivergence(epoch: epoch, step: nil, loss: validationLoss)
        }
        let record = EpochRecord(
            epoch: epoch, trainLoss: trainLoss, validationLoss: validationLoss, learningRate: lr,
            seconds: elapsed(since: start), eventsPerSecond: Double(rowsTrainedHere) / trainSeconds)
        state.epoch = epoch
        state.history.append(record)
        try updateCallbacks(monitor: validationLoss ?? trainLoss)
        observer?.didFinishEpoch(record, state: state)
        return .proceed
    }

    /// Thrown out of the batch loop when `afterStep` asks to stop.
    private struct StopAfterStep: Error {}

    /// MSE over all rows of `set`, batch norm in inference mode (per-batch losses weighted by their rows).
    /// Weighted training: the weighted MSE `Σ w Σ_c d² / (C Σ w)` over all rows (per-batch losses weighted by
    /// their Σ w).
    private func evaluate(_ set: DeviceDataset<B>) throws -> Double {
        if let dataParallel { return try evaluateAcrossRanks(set, dataParallel) }
        let sizes = batchSizes(rows: set.rows, batchSize: options.batchSize, training: false)
        let losses = try backend.scratch([sizes.count])
        try set.forEachWeightedBatch(sizes: sizes, order: nil) { x, y, w, step in
            try network.forward(x, training: false)
            try network.loss(target: y, weights: w, into: backend.view(losses, offset: step, shape: [1]))
        }
        let values = try backend.read(losses)
        if let sums = validationWeightSums {
            return zip(values, sums).reduce(0) { $0 + $1.0 * $1.1 } / sums.reduce(0, +)
        }
        return zip(values, sizes).reduce(0) { $0 + $1.0 * Double($1.1) } / Double(set.rows)
    }

    /// Data-parallel validation: each rank evaluates its part of the rows (sharded: the rows it holds) and the
    /// sums (Σ loss·n, or Σ loss·Σw when weighted) are all-reduced.
    private func evaluateAcrossRanks(_ set: DeviceDataset<B>, _ dataParallel: DataParallel) throws -> Double {
        let mine = dataParallel.shard != nil ? 0..<set.rows : dataParallel.validationRows(set.rows)
        let sizes = batchSizes(rows: mine.count, batchSize: options.batchSize, training: false)
        var sum = 0.0
        var total = Double(mine.count)
        if !sizes.isEmpty {
            let losses = try backend.scratch([sizes.count])
            let order = mine.map { Int32($0) }
            try set.forEachWeightedBatch(sizes: sizes, order: order) { x, y, w, step in
                try network.forward(x, training: false)
                try network.loss(target: y, weights: w, into: backend.view(losses, offset: step, shape: [1]))
            }
            let values = try backend.read(losses)
            if let weights = set.weights {
                var start = mine.lowerBound
                total = 0
                for (value, n) in zip(values, sizes) {
                    let batch = weights[start..<start + n].reduce(0.0) { $0 + Double($1) }
                    sum += value * batch
                    total += batch
                    start += n
                }
            } else {
                sum = zip(values, sizes).reduce(0) { $0 + $1.0 * Double($1.1) }
            }
        }
        return try dataParallel.mean(sum: sum, weight: total)
    }

    /// Applies the callbacks to the epoch's monitored loss; keeps the best weights when they improved.
    private func updateCallbacks(monitor: Double) throws {
        if state.applyCallbacks(monitor: monitor, options: options), let bestParameters, let bestRunning {
            try backend.copy(network.parameters, to: bestParameters)
            try backend.copy(network.runningStatistics, to: bestRunning)
        }
    }

    /// The best-epoch weights kept for `restoreBestWeights`, in Float32 (for checkpoints).
    public func bestWeights() throws -> (parameters: [Float], running: [Float])? {
        guard let bestParameters, let bestRunning else { return nil }
        return (try backend.readFloats(bestParameters), try backend.readFloats(bestRunning))
    }
}
