import Foundation

/// Synchronous data-parallel training over the ranks of a `Communicator` (the hooks `Trainer` calls).
///
/// Every rank holds the same model. Each epoch every rank draws the same global permutation, the global
/// batches are those one process with `--batch-size B` would use, and rank r trains on its share of each
/// (`Sharding.range`, sizes differing by at most one row). With `shard` set, rank r holds only its contiguous
/// part of the training rows (read from the file by itself) and, before each epoch, the rows of its shares are
/// exchanged between the ranks (`exchangeRows`, one MPI_Alltoallv); without it every rank holds all rows.
/// Either way a rank trains on bitwise the same rows in the same order. After the backward pass each rank's
/// gradients are weighted by its part of the batch's loss normaliser — `n_r/B`, or with event weights
/// `Σ_r w / Σ w` (the batch's Σ w all-reduced once per epoch, `stepWeights`) — and summed over ranks with
/// MPI_Allreduce **through host memory** (device → host, all-reduce, host → device), which gives the gradient
/// of the whole batch's (weighted) mean loss; every rank then applies the identical Adam update, so the
/// parameters stay bitwise identical (checked after every epoch with a checksum).
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
    /// The training and validation rows this rank holds, when each holds only its part (nil: all rows).
    public var shard: RowShard?

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

    /// The rows this rank trains on in an epoch of batches `sizes` drawn in `order` (the identity when nil),
    /// in its step order, fetched from the ranks holding them (`shard`): every rank computes from the global
    /// permutation which of its rows each rank needs, and one MPI_Alltoallv of rows of `featureCount +
    /// targetCount (+ 1 weight)` floats exchanges them. `features`, `targets`, `weights` are this rank's part of
    /// the training rows. Peak host memory: the rank's part, the rows sent and the rows received (≈ 3/N of the
    /// training rows).
    public func exchangeRows(
        sizes: [Int], order: [Int32]?, features: [Float], targets: [Float], weights: [Float]?, featureCount: Int,
        targetCount: Int
    ) throws -> (features: [Float], targets: [Float], weights: [Float]?) {
        guard let shard else { throw CommunicatorError("exchangeRows needs the rank's shard of the rows") }
        let (ranks, me) = (communicator.size, communicator.rank)
        let width = featureCount + targetCount + (weights == nil ? 0 : 1)
        // The rows each rank needs from this one (local indices, in that rank's order), and the owners of the
        // rows this rank needs (in its order).
        var outgoing = [[Int]](repeating: [], count: ranks)
        var owners: [Int] = []
        var start = 0
        for size in sizes {
            for rank in 0..<ranks {
                let share = Sharding.range(count: size, parts: ranks, index: rank)
                for position in start + share.lowerBound..<start + share.upperBound {
                    let row = Int(order?[position] ?? Int32(position))
                    let owner = shard.owner(ofTrainingRow: row, ranks: ranks)
                    if owner == me { outgoing[rank].append(row - shard.training.lowerBound) }
                    if rank == me { owners.append(owner) }
                }
            }
            start += size
        }
        var send: [Float] = []
        send.reserveCapacity(outgoing.reduce(0) { $0 + $1.count } * width)
        for rows in outgoing {
            for local in rows {
                send += features[local * featureCount..<(local + 1) * featureCount]
                send += targets[local * targetCount..<(local + 1) * targetCount]
                if let weights { send.append(weights[local]) }
            }
        }
        var receiveCounts = [Int](repeating: 0, count: ranks)
        for owner in owners { receiveCounts[owner] += width }
        let received = try communicator.allToAll(
            send, sendCounts: outgoing.map { $0.count * width }, receiveCounts: receiveCounts)
        send = []
        var cursors = [Int](repeating: 0, count: ranks)
        for rank in 1..<max(ranks, 1) { cursors[rank] = cursors[rank - 1] + receiveCounts[rank - 1] }
        var x = [Float](repeating: 0, count: owners.count * featureCount)
        var y = [Float](repeating: 0, count: owners.count * targetCount)
        var w = weights.map { _ in [Float](repeating: 0, count: owners.count) }
        for (i, owner) in owners.enumerated() {
            let at = cursors[owner]
            for c in 0..<featureCount { x[i * featureCount + c] = received[at + c] }
            for c in 0..<targetCount { y[i * targetCount + c] = received[at + featureCount + c] }
            if w != nil { w![i] = received[at + featureCount + targetCount] }
            cursors[owner] += width
        }
        return (x, y, w)
    }

    /// This rank's factor for each step's gradients: its part of the batch's loss normaliser, `n_r/B` for the
    /// plain MSE, `Σ_{rank's rows} w / Σ_{batch} w` for the weighted one (`weights`: this rank's rows' weights in
    /// step order, `shares` its rows per step; the batches' Σ w are all-reduced in Double, once per epoch).
    public func stepWeights(sizes: [Int], shares: [Int], weights: [Float]?) throws -> [Double] {
        guard let weights else {
            return sizes.map { Sharding.gradientWeight(rows: $0, ranks: communicator.size, rank: communicator.rank) }
        }
        var local: [Double] = []
        var start = 0
        for n in shares {
            local.append(weights[start..<start + n].reduce(0.0) { $0 + Double($1) })
            start += n
        }
        var total = local
        try communicator.allReduceSum(&total)
        return zip(local, total).map { $1 > 0 ? $0 / $1 : 0 }
    }

    /// Before the step of a global batch of `rows` rows: tells the network how to synchronise batch norm
    /// (this rank's gradient factor `n_r/B`).
    public func prepareStep<B: Backend>(network: Network<B>, batchRows rows: Int) {
        prepareStep(
            network: network, batchRows: rows,
            gradientWeight: Sharding.gradientWeight(rows: rows, ranks: communicator.size, rank: communicator.rank))
    }

    /// Before a step with this rank's gradient factor `gradientWeight` (`stepWeights`): tells the network how
    /// to synchronise batch norm.
    public func prepareStep<B: Backend>(network: Network<B>, batchRows rows: Int, gradientWeight: Double) {
        guard synchronizeBatchNorm, communicator.size > 1 || communicator.usesMPI else { return }
        let communicator = self.communicator
        network.batchNormSynchronization = BatchNormSynchronization(
            reduce: { try communicator.allReduceSum(&$0) }, gradientWeight: gradientWeight)
    }

    /// Between backward and Adam: the gradients weighted by `n_r/B` and summed over the ranks (Float32,
    /// MPI_SUM, through host memory).
    public func reduceGradients<B: Backend>(network: Network<B>, batchRows rows: Int) throws {
        try reduceGradients(
            network: network,
            gradientWeight: Sharding.gradientWeight(rows: rows, ranks: communicator.size, rank: communicator.rank))
    }

    /// Between backward and Adam: the gradients multiplied by this rank's factor (`stepWeights`) and summed over
    /// the ranks (Float32, MPI_SUM, through host memory).
    public func reduceGradients<B: Backend>(network: Network<B>, gradientWeight weight: Double) throws {
        try network.backend.synchronize()  // the step's queued work, so that the time below is the exchange's
        let start = DispatchTime.now().uptimeNanoseconds
        var gradients = try network.backend.readFloats(network.gradients)
        if weight != 1 { for i in gradients.indices { gradients[i] = Float(Double(gradients[i]) * weight) } }
        try communicator.allReduceSum(&gradients)
        try network.backend.write(gradients, to: network.gradients)
        gradientReductionSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        reducedSteps += 1
    }

    /// The whole batches' losses from this rank's per-step losses over its shares (each the mean over its
    /// share): `Σ_r f_r·loss_r` with the rank's factors `weights` (`stepWeights`), all-reduced in Double.
    public func batchLosses(_ losses: [Double], weights: [Double]) throws -> [Double] {
        var weighted = zip(losses, weights).map { $0 * $1 }
        try communicator.allReduceSum(&weighted)
        return weighted
    }

    /// `batchLosses` with the factors `n_r/B` of the plain MSE for batches of `sizes` rows.
    public func batchLosses(_ losses: [Double], sizes: [Int]) throws -> [Double] {
        try batchLosses(
            losses,
            weights: sizes.map {
                Sharding.gradientWeight(rows: $0, ranks: communicator.size, rank: communicator.rank)
            })
    }

    /// This rank's part of the `rows` validation rows.
    public func validationRows(_ rows: Int) -> Range<Int> {
        Sharding.range(count: rows, parts: communicator.size, index: communicator.rank)
    }

    /// The mean over all ranks' rows of a per-row quantity whose sum over this rank's `rows` rows is `sum`.
    public func mean(sum: Double, rows: Int) throws -> Double { try mean(sum: sum, weight: Double(rows)) }

    /// The weighted mean over all ranks' rows: Σ sum / Σ weight over the ranks.
    public func mean(sum: Double, weight: Double) throws -> Double {
        var values = [sum, weight]
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
