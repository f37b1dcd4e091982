import Foundation

/// Synchronous data-parallel training over the ranks of a `Communicator` (the hooks `Trainer` calls).
///
/// Every rank holds the same model and all training rows; each epoch every rank draws the same global
/// permutation, the global batches are those one process with `--batch-size B` would use, and rank r trains on
/// its share of each (`Sharding.range`, sizes differing by at most one row). After the backward pass each
/// rank's gradients are weighted by `n_r/B` and summed over ranks with MPI_Allreduce **through host memory**
/// (device → host, all-reduce, host → device), which gives the gradient of the whole batch's mean loss; every
/// rank then applies the identical Adam update, so the parameters stay bitwise identical (checked after every
/// epoch with a checksum).
///
/// Batch norm: with `synchronizeBatchNorm` the statistics are those of the whole batch
/// (`SynchronizedBatchNorm`); without it each rank normalises its own share and, as PyTorch DDP does with
/// its buffers, the running statistics of rank 0 are copied to every rank (once per epoch, which ends with the
/// same values: a rank's running statistics depend only on its own batches).
public final class DataParallel {
    /// The ranks.
    public let communicator: Communicator
    /// Whether batch norm uses the statistics of the whole batch.
    public let synchronizeBatchNorm: Bool
    /// Seconds spent in the gradient exchange (device → host, all-reduce, host → device; not the wait for the
    /// step's queued work), and the steps counted.
    public private(set) var gradientReductionSeconds = 0.0
    public private(set) var reducedSteps = 0

    /// Creates the hooks for `communicator`'s ranks.
    public init(communicator: Communicator, synchronizeBatchNorm: Bool) {
        self.communicator = communicator
        self.synchronizeBatchNorm = synchronizeBatchNorm
    }

    /// The global batch sizes of one pass (every share holds at least two rows where the rows allow it).
    public func batchSizes(rows: Int, batchSize: Int) -> [Int] {
        Sharding.trainingBatchSizes(rows: rows, batchSize: batchSize, ranks: communicator.size)
    }

    /// This rank's rows of every batch — the positions of its shares in the global `order` (the identity when
    /// nil) — and its share sizes; what `DeviceDataset.forEachBatch` takes.
    public func localBatches(sizes: [Int], order: [Int32]?) throws -> (sizes: [Int], order: [Int32]) {
        var local: [Int32] = []
        var shares: [Int] = []
        var start = 0
        for size in sizes {
            let share = Sharding.range(count: size, parts: communicator.size, index: communicator.rank)
            guard share.count >= 2 || synchronizeBatchNorm && share.count >= 1 else {
                throw CommunicatorError(
                    "a batch of \(size) rows over \(communicator.size) ranks leaves rank \(communicator.rank) "
                        + "\(share.count) row\(share.count == 1 ? "" : "s"), too few to batch-normalise; "
                        + "use a larger batch size or fewer ranks")
            }
            for position in start + share.lowerBound..<start + share.upperBound {
                local.append(order?[position] ?? Int32(position))
            }
            shares.append(share.count)
            start += size
        }
        return (shares, local)
    }

    /// Before the step of a global batch of `rows` rows: tells the network how to synchronise batch norm.
    public func prepareStep<B: Backend>(network: Network<B>, batchRows rows: Int) {
        guard synchronizeBatchNorm, communicator.size > 1 || communicator.usesMPI else { return }
        let communicator = self.communicator
        network.batchNormSynchronization = BatchNormSynchronization(
            reduce: { try communicator.allReduceSum(&$0) },
            gradientWeight: Sharding.gradientWeight(rows: rows, ranks: communicator.size, rank: communicator.rank))
    }

    /// Between backward and Adam: the gradients weighted by `n_r/B` and summed over the ranks (Float32,
    /// MPI_SUM, through host memory).
    public func reduceGradients<B: Backend>(network: Network<B>, batchRows rows: Int) throws {
        try network.backend.synchronize()  // the step's queued work, so that the time below is the exchange's
        let start = DispatchTime.now().uptimeNanoseconds
        var gradients = try network.backend.readFloats(network.gradients)
        let weight = Sharding.gradientWeight(rows: rows, ranks: communicator.size, rank: communicator.rank)
        if weight != 1 { for i in gradients.indices { gradients[i] = Float(Double(gradients[i]) * weight) } }
        try communicator.allReduceSum(&gradients)
        try network.backend.write(gradients, to: network.gradients)
        gradientReductionSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        reducedSteps += 1
    }

    /// The whole batches' losses from this rank's per-step losses over its shares (each the mean over its
    /// share): `Σ_r (n_r/B)·loss_r`, all-reduced in Double.
    public func batchLosses(_ losses: [Double], sizes: [Int]) throws -> [Double] {
        var weighted = zip(losses, sizes).map { loss, rows in
            loss * Sharding.gradientWeight(rows: rows, ranks: communicator.size, rank: communicator.rank)
        }
        try communicator.allReduceSum(&weighted)
        return weighted
    }

    /// This rank's part of the `rows` validation rows.
    public func validationRows(_ rows: Int) -> Range<Int> {
        Sharding.range(count: rows, parts: communicator.size, index: communicator.rank)
    }

    /// The mean over all ranks' rows of a per-row quantity whose sum over this rank's `rows` rows is `sum`.
    public func mean(sum: Double, rows: Int) throws -> Double {
        var values = [sum, Double(rows)]
        try communicator.allReduceSum(&values)
        return values[0] / values[1]
    }

    /// After an epoch: rank 0's running statistics on every rank (without synchronised batch norm), then the
    /// check that every rank holds bitwise the same parameters, Adam moments and running statistics.
    public func finishEpoch<B: Backend>(network: Network<B>) throws {
        let backend = network.backend
        if !synchronizeBatchNorm {
            var running = try backend.readFloats(network.runningStatistics).map(Double.init)
            try communicator.broadcast(&running, root: 0)
            try backend.write(running.map { Float($0) }, to: network.runningStatistics)
        }
        var state = try backend.readFloats(network.parameters)
        state += try backend.readFloats(network.firstMoment)
        state += try backend.readFloats(network.secondMoment)
        state += try backend.readFloats(network.runningStatistics)
        try communicator.requireAgreement(
            parameterChecksum(state), what: "the parameters, Adam moments or running statistics")
    }
}
