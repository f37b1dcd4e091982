/// How the rows of a data-parallel job are divided among ranks.
public enum Sharding {
    /// Rank `index`'s part of `count` items split into `parts` contiguous parts whose sizes differ by at most
    /// one (the first `count % parts` parts hold one more).
    public static func range(count: Int, parts: Int, index: Int) -> Range<Int> {
        precondition(parts >= 1 && (0..<parts).contains(index) && count >= 0, "Sharding.range: bad arguments")
        let base = count / parts
        let extra = count % parts
        let lower = index * base + min(index, extra)
        return lower..<lower + base + (index < extra ? 1 : 0)
    }

    /// The part (of `range(count:parts:index:)`'s) that holds item `item`.
    public static func part(of item: Int, count: Int, parts: Int) -> Int {
        let base = count / parts
        let extra = count % parts
        let boundary = extra * (base + 1)
        return item < boundary ? item / (base + 1) : extra + (item - boundary) / max(base, 1)
    }

    /// The batch sizes of one training pass for a job of `ranks` ranks: `batchSizes(rows:batchSize:training:)`,
    /// except that a last partial batch smaller than `2·ranks` rows joins the batch before it, so every rank's
    /// share of every batch holds at least two rows (batch normalisation needs two). With one rank this is
    /// exactly the single-process rule (a single leftover row joins the batch before it).
    public static func trainingBatchSizes(rows: Int, batchSize: Int, ranks: Int) -> [Int] {
        guard rows > 0 else { return [] }
        var sizes = [Int](repeating: batchSize, count: rows / batchSize)
        let rest = rows % batchSize
        if rest > 0 {
            if rest < 2 * ranks && !sizes.isEmpty { sizes[sizes.count - 1] += rest } else { sizes.append(rest) }
        }
        return sizes
    }

    /// The smallest share any rank gets of a batch of `rows` rows.
    public static func smallestShare(rows: Int, ranks: Int) -> Int { rows / ranks }

    /// The factor `n_r / B` that turns rank `rank`'s mean-loss gradient over its share into its contribution
    /// to the gradient of the mean loss over the whole batch of `rows` rows (summed over ranks).
    public static func gradientWeight(rows: Int, ranks: Int, rank: Int) -> Double {
        Double(range(count: rows, parts: ranks, index: rank).count) / Double(rows)
    }
}

/// The rows of a sample one rank of a data-parallel job holds: its contiguous part (`Sharding.range`) of the
/// training rows and of the validation rows.
public struct RowShard: Sendable, Equatable {
    /// The training rows of the whole sample.
    public var trainingRows: Int
    /// The validation rows of the whole sample.
    public var validationRows: Int
    /// This rank's training rows (indices among the training rows).
    public var training: Range<Int>
    /// This rank's validation rows (indices among the validation rows).
    public var validation: Range<Int>

    /// Rank `rank`'s parts of `split`'s rows among `ranks` ranks.
    public init(split: SampleSplit, rank: Int, ranks: Int) {
        self.init(trainingRows: split.trainingRows, validationRows: split.validationRows, rank: rank, ranks: ranks)
    }

    /// Rank `rank`'s parts of `trainingRows` training and `validationRows` validation rows.
    public init(trainingRows: Int, validationRows: Int, rank: Int, ranks: Int) {
        self.trainingRows = trainingRows
        self.validationRows = validationRows
        training = Sharding.range(count: trainingRows, parts: ranks, index: rank)
        validation = Sharding.range(count: validationRows, parts: ranks, index: rank)
    }

    /// The rank holding training row `row`.
    public func owner(ofTrainingRow row: Int, ranks: Int) -> Int {
        Sharding.part(of: row, count: trainingRows, parts: ranks)
    }
}

/// Which compute device a rank uses.
public enum DeviceAssignment {
    /// The device index for the rank with node-local rank `localRank`:
    /// - with an explicit `--device` list, its entry `localRank mod count`;
    /// - otherwise the node's GPUs in turn (`gpuIndices[localRank mod count]`), where it has any;
    /// - otherwise `fallback` (the CPU device), shared by every rank of the node.
    public static func deviceIndex(localRank: Int, explicit: [Int]?, gpuIndices: [Int], fallback: Int) -> Int {
        precondition(localRank >= 0, "local rank must be ≥ 0")
        if let explicit, !explicit.isEmpty { return explicit[localRank % explicit.count] }
        if !gpuIndices.isEmpty { return gpuIndices[localRank % gpuIndices.count] }
        return fallback
    }
}

extension StandardScaler {
    /// Fits on the rows of a data-parallel job: each rank passes its own rows, and the sums are all-reduced (by
    /// `reduce`, e.g. `Communicator.allReduceSum`) in
    /// Double, two-pass as `fit` does — first (n, Σx) for the means, then Σ(x − u)² — so every rank gets the
    /// scaler of all rows, equal to `fit` on them up to the order of the additions.
    public static func fit(
        _ values: [Float], columns: Int, rows: Range<Int>, reduce: SynchronizedBatchNorm.Reduction
    ) throws -> StandardScaler {
        var sums = [Double](repeating: 0, count: columns + 1)
        values.withUnsafeBufferPointer { v in
            for r in rows { for c in 0..<columns { sums[c] += Double(v[r * columns + c]) } }
        }
        sums[columns] = Double(rows.count)
        try reduce(&sums)
        let n = sums[columns]
        guard n > 0 else { throw CommunicatorError("the scaler has no rows to fit on (on any rank)") }
        let mean = sums[0..<columns].map { $0 / n }
        var squares = [Double](repeating: 0, count: columns)
        values.withUnsafeBufferPointer { v in
            for r in rows {
                for c in 0..<columns {
                    let d = Double(v[r * columns + c]) - mean[c]
                    squares[c] += d * d
                }
            }
        }
        try reduce(&squares)
        var scale = squares.map { ($0 / n).squareRoot() }
        var constant: [Int] = []
        for c in 0..<columns where scale[c] == 0 || !scale[c].isFinite {
            scale[c] = 1
            constant.append(c)
        }
        return StandardScaler(mean: mean, scale: scale, constantColumns: constant)
    }
}

/// A cheap fingerprint of a Float32 buffer, compared across ranks (FNV-1a over the bit patterns).
public func parameterChecksum(_ values: [Float]) -> UInt64 {
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    for value in values {
        hash ^= UInt64(value.bitPattern)
        hash = hash &* 0x0000_0100_0000_01B3
    }
    return hash
}

extension Communicator {
    /// Checks that every rank holds the same `checksum`; throws naming the ranks that differ from rank 0.
    public func requireAgreement(_ checksum: UInt64, what: String) throws {
        guard size > 1 else { return }
        // Two exact halves of 32 bits each (a Double holds integers up to 2^53 exactly).
        let high = try allGather(Double(checksum >> 32))
        let low = try allGather(Double(checksum & 0xFFFF_FFFF))
        let differing = (1..<size).filter { high[$0] != high[0] || low[$0] != low[0] }
        guard differing.isEmpty else {
            throw CommunicatorError(
                "\(what) differ between ranks: rank 0 and rank\(differing.count > 1 ? "s" : "") "
                    + "\(differing.map(String.init).joined(separator: ", ")) hold different values "
                    + "(the ranks diverged; the last checkpoint is the state before)")
        }
    }
}

extension DataFingerprint {
    /// The fingerprint of the table whose parts the ranks of `communicator` read (`part` on this rank; every
    /// rank gets the same fingerprint).
    public static func ofParts(_ part: Table, totalRows: Int, communicator: Communicator) throws -> DataFingerprint {
        let hash = DataFingerprint.hash(of: part.values)
        let high = try communicator.allGather(Double(hash >> 32))
        let low = try communicator.allGather(Double(hash & 0xFFFF_FFFF))
        let hashes = zip(high, low).map { UInt64($0) << 32 | UInt64($1) }
        return DataFingerprint(columnNames: part.columnNames, rowCount: totalRows, partHashes: hashes)
    }
}
