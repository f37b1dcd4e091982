import Foundation
import XCTest

@testable import HRTrain

/// Sums vectors over `parts` threads standing in for MPI ranks (in rank order, so the result is the same on
/// every part): what `Communicator.allReduceSum` does across processes.
final class InProcessReduction: @unchecked Sendable {
    let parts: Int
    private let condition = NSCondition()
    private var deposits: [[Double]?]
    private var result: [Double] = []
    private var collected = 0
    private var generation = 0
    /// Set when a rank's body failed: the others stop waiting for it (their reductions return unchanged) and
    /// `run` throws the failure, instead of hanging.
    private var abandoned = false

    init(parts: Int) {
        self.parts = parts
        deposits = Array(repeating: nil, count: parts)
    }

    func reduce(rank: Int, _ values: inout [Double]) {
        condition.lock()
        defer { condition.unlock() }
        while deposits[rank] != nil && !abandoned { condition.wait() }  // the previous round is being collected
        if abandoned { return }
        let round = generation
        deposits[rank] = values
        if deposits.allSatisfy({ $0 != nil }) {
            result = deposits.dropFirst().reduce(deposits[0]!) { sum, next in zip(sum, next!).map { $0 + $1 } }
            generation += 1
            collected = 0
            condition.broadcast()
        }
        while generation == round && !abandoned { condition.wait() }
        if abandoned { return }
        values = result
        collected += 1
        if collected == parts {
            deposits = Array(repeating: nil, count: parts)
            condition.broadcast()
        }
    }

    private func abandon() {
        condition.lock()
        abandoned = true
        condition.broadcast()
        condition.unlock()
    }

    /// Runs `body(rank)` on `parts` threads at once and waits for all of them.
    func run(_ body: @escaping @Sendable (Int) throws -> Void) throws {
        let group = DispatchGroup()
        let failures = ResultSlots<Error>(count: parts)
        for rank in 0..<parts {
            group.enter()
            Thread {
                do { try body(rank) } catch {
                    failures[rank] = error
                    self.abandon()
                }
                group.leave()
            }.start()
        }
        group.wait()
        if let first = (0..<parts).compactMap({ failures[$0] }).first { throw first }
    }
}

final class DistributedTests: XCTestCase {
    func testShardsCoverTheRowsInOrderAndDifferByAtMostOne() {
        for count in [0, 1, 2, 7, 37, 4000, 4001, 4003] {
            for parts in [1, 2, 3, 4, 7, 64] {
                let ranges = (0..<parts).map { Sharding.range(count: count, parts: parts, index: $0) }
                XCTAssertEqual(ranges.first?.lowerBound, 0)
                XCTAssertEqual(ranges.last?.upperBound, count)
                for i in 1..<parts { XCTAssertEqual(ranges[i].lowerBound, ranges[i - 1].upperBound) }
                for (part, range) in ranges.enumerated() {
                    for item in range { XCTAssertEqual(Sharding.part(of: item, count: count, parts: parts), part) }
                }
                let sizes = ranges.map(\.count)
                XCTAssertLessThanOrEqual(sizes.max()! - sizes.min()!, 1, "\(count) rows over \(parts) ranks")
                let weights = (0..<parts).map { Sharding.gradientWeight(rows: max(count, 1), ranks: parts, rank: $0) }
                if count > 0 { XCTAssertEqual(weights.reduce(0, +), 1, accuracy: 1e-12) }
            }
        }
    }

    func testTrainingBatchSizesGiveEveryRankTwoRowsAndMatchTheSingleProcessRule() {
        for rows in [2, 3, 9, 4000, 4001, 4002, 4003, 8005, 10_000] {
            XCTAssertEqual(
                Sharding.trainingBatchSizes(rows: rows, batchSize: 4000, ranks: 1),
                batchSizes(rows: rows, batchSize: 4000, training: true), "\(rows) rows")
            for ranks in [2, 3] {
                let sizes = Sharding.trainingBatchSizes(rows: rows, batchSize: 4000, ranks: ranks)
                XCTAssertEqual(sizes.reduce(0, +), rows)
                if rows >= 2 * ranks {
                    XCTAssertGreaterThanOrEqual(Sharding.smallestShare(rows: sizes.min()!, ranks: ranks), 2)
                }
            }
        }
        XCTAssertEqual(Sharding.trainingBatchSizes(rows: 4003, batchSize: 4000, ranks: 2), [4003])
        XCTAssertEqual(Sharding.trainingBatchSizes(rows: 4004, batchSize: 4000, ranks: 2), [4000, 4])
    }

    func testDevicesAreAssignedByNodeLocalRank() {
        XCTAssertEqual(DeviceAssignment.deviceIndex(localRank: 0, explicit: nil, gpuIndices: [1, 2], fallback: 0), 1)
        XCTAssertEqual(DeviceAssignment.deviceIndex(localRank: 1, explicit: nil, gpuIndices: [1, 2], fallback: 0), 2)
        XCTAssertEqual(DeviceAssignment.deviceIndex(localRank: 2, explicit: nil, gpuIndices: [1, 2], fallback: 0), 1)
        XCTAssertEqual(DeviceAssignment.deviceIndex(localRank: 3, explicit: nil, gpuIndices: [], fallback: 0), 0)
        XCTAssertEqual(
            DeviceAssignment.deviceIndex(localRank: 3, explicit: [5, 6, 7], gpuIndices: [1], fallback: 0), 5)
    }

    func testTheLaunchEnvironmentIsRecognised() {
        XCTAssertFalse(LaunchEnvironment([:]).isLaunchedByMPI)
        XCTAssertTrue(LaunchEnvironment(["OMPI_COMM_WORLD_SIZE": "2"]).isLaunchedByMPI)
        XCTAssertTrue(LaunchEnvironment(["PMI_SIZE": "4"]).isLaunchedByMPI)
        // A Slurm batch script (no job step) is one process; srun's tasks have a step id.
        XCTAssertFalse(LaunchEnvironment(["SLURM_NTASKS": "8", "SLURM_JOB_ID": "1"]).isLaunchedByMPI)
        XCTAssertTrue(LaunchEnvironment(["SLURM_NTASKS": "8", "SLURM_STEP_ID": "0"]).isLaunchedByMPI)
        XCTAssertEqual(LaunchEnvironment(["OMPI_COMM_WORLD_LOCAL_RANK": "3"]).localRank, 3)
        XCTAssertEqual(LaunchEnvironment(["SLURM_LOCALID": "2"]).localRank, 2)
        XCTAssertEqual(LaunchEnvironment([:]).localRank, 0)
        XCTAssertEqual(LaunchEnvironment(["HRTRAIN_MPI_TIMEOUT": "12.5"]).timeoutSeconds, 12.5)
        XCTAssertEqual(LaunchEnvironment([:]).timeoutSeconds, 300)
    }

    /// While the ranks read their data a collective waits `readingPatience` times as long, nested scopes included,
    /// and the limit is back once the reading ends, also when it throws.
    func testCollectivesWaitLongerWhileTheRanksReadTheirData() {
        let communicator = Communicator(rank: 0, size: 2, localRank: 0, usesMPI: false, timeoutSeconds: 7)
        XCTAssertEqual(communicator.collectiveTimeoutSeconds, 7)
        communicator.whileReadingData {
            XCTAssertEqual(communicator.collectiveTimeoutSeconds, 70)
            communicator.whileReadingData { XCTAssertEqual(communicator.collectiveTimeoutSeconds, 70) }
            XCTAssertEqual(communicator.collectiveTimeoutSeconds, 70)
        }
        XCTAssertThrowsError(try communicator.whileReadingData { throw CommunicatorError("unreadable") })
        XCTAssertEqual(communicator.collectiveTimeoutSeconds, 7)
    }

    func testWithoutALauncherTheCommunicatorIsOneRankAndCollectivesReturnTheirInput() throws {
        let communicator = try Communicator.start(mode: .auto, environment: LaunchEnvironment([:]))
        XCTAssertEqual(communicator.rank, 0)
        XCTAssertEqual(communicator.size, 1)
        XCTAssertFalse(communicator.usesMPI)
        var values: [Float] = [1.5, -2, 3]
        try communicator.allReduceSum(&values)
        XCTAssertEqual(values, [1.5, -2, 3])
        XCTAssertEqual(try communicator.allGather(4), [4])
        try communicator.requireAgreement(parameterChecksum(values), what: "parameters")
        XCTAssertNotEqual(parameterChecksum([1, 2]), parameterChecksum([2, 1]))
        XCTAssertNotEqual(parameterChecksum([0]), parameterChecksum([-0.0]))
    }

    func testAWrongMPILibraryIsAClearError() {
        XCTAssertThrowsError(
            try Communicator.start(
                mode: .on, environment: LaunchEnvironment(["HRTRAIN_MPI_LIBRARY": "/nonexistent/libmpi.so"]))
        ) { error in
            XCTAssertTrue("\(error)".contains("cannot load the MPI library"), "\(error)")
            XCTAssertTrue("\(error)".contains("/nonexistent/libmpi.so"), "\(error)")
        }
    }

    func testTheScalerFittedAcrossRanksEqualsTheSingleFit() throws {
        let columns = 5
        let rows = 101
        var values = randomValues(rows * columns, seed: 77, scale: 3).map { Float($0 + 10) }
        for r in 0..<rows { values[r * columns + 2] = 4 }  // a constant column
        let sample = values
        let single = StandardScaler.fit(values, columns: columns, rows: 0..<rows)
        let reduction = InProcessReduction(parts: 3)
        let results = ResultSlots<StandardScaler>(count: 3)
        try reduction.run { rank in
            let mine = Sharding.range(count: rows, parts: 3, index: rank)
            results[rank] = try StandardScaler.fit(sample, columns: columns, rows: mine) {
                reduction.reduce(rank: rank, &$0)
            }
        }
        for rank in 0..<3 {
            let scaler = try XCTUnwrap(results[rank])
            XCTAssertEqual(scaler, results[0], "every rank gets the same scaler")
            assertClose(scaler.mean, single.mean, limit: 1e-14, "mean")
            assertClose(scaler.scale, single.scale, limit: 1e-12, "scale")
            XCTAssertEqual(scaler.constantColumns, [2])
        }
    }

    /// A table of `rows` random rows: features a, b, c; targets tx, ty; a positive weight column w.
    func weightedTable(rows: Int, seed: UInt64) -> Table {
        let names = ["a", "b", "c", "tx", "ty", "w"]
        var values = randomValues(rows * names.count, seed: seed, scale: 20).map { Float($0) }
        for r in 0..<rows { values[r * names.count + 5] = 0.25 + abs(values[r * names.count + 5]) / 20 }
        return Table(columnNames: names, rowCount: rows, values: values)
    }

    /// Rank-local reading: the rows a rank asks for from a `.npy` file (offsets) or an HDF5 file (hyperslabs of a
    /// 2-D dataset or of a group's 1-D columns) are those of the whole read; the other rows are not needed (a
    /// NaN outside the ranges goes unseen, inside them it is an error naming the row of the file).
    func testRowRangesOfNPYAndHDF5FilesAreTheRowsOfTheWholeRead() throws {
        let dir = try temporaryDirectory(self)
        let table = weightedTable(rows: 37, seed: 5)
        let npy = dir.appendingPathComponent("t.npy")
        let matrix = dir.appendingPathComponent("t.h5")
        let columns = dir.appendingPathComponent("columns.h5")
        try writeTable(table, to: npy)
        try writeTable(table, to: matrix)
        try HDF5Format.locked {
            let file = try HDF5File(creating: columns, reportingAs: columns)
            for (c, name) in table.columnNames.enumerated() {
                try file.writeFloats("/events/\(name)", shape: [table.rowCount], table.column(c))
            }
            try file.close()
        }
        let selections: [[Range<Int>]] = [[3..<10, 20..<25], [], [0..<37], [36..<37, 0..<1], [5..<5]]
        for (url, dataset) in [(npy, nil), (matrix, nil), (columns, "events")] as [(URL, String?)] {
            for ranges in selections {
                let read = try readTableRows(url, rows: ranges, options: ReadOptions(dataset: dataset))
                XCTAssertEqual(read.totalRows, 37, url.lastPathComponent)
                XCTAssertEqual(read.table, table.rows(ranges), "\(url.lastPathComponent) \(ranges)")
            }
            XCTAssertThrowsError(try readTableRows(url, rows: [30..<40], options: ReadOptions(dataset: dataset))) {
                XCTAssertTrue("\($0)".contains("holds 37 rows"), "\($0)")
            }
        }
        var damaged = table
        damaged.values[12 * table.columnCount + 2] = .nan
        try writeTable(damaged, to: npy)
        XCTAssertEqual(try readTableRows(npy, rows: [0..<12, 13..<37]).table.rowCount, 36)
        XCTAssertThrowsError(try readTableRows(npy, rows: [20..<30, 10..<15])) {
            XCTAssertTrue("\($0)".contains("row 13 holds nan"), "\($0)")
        }
        XCTAssertThrowsError(try readTableRows(dir.appendingPathComponent("t.csv"), rows: [0..<1]))
    }

    /// Three ranks each preparing only their rows (`prepareShard`, fits all-reduced in process) hold, together,
    /// what one process prepares from the whole table: the same training and validation rows (targets minus
    /// the baseline, bitwise), the same event weights (weight column × |target| flattening fitted on the summed
    /// histogram, bitwise), the test rows on rank 0, and the scalers within 1e-12.
    func testRanksPreparingTheirShardsHoldWhatOneProcessPrepares() throws {
        let table = weightedTable(rows: 203, seed: 8)
        let flattening = FlatteningRequest(edges: [0, 10, 20, 40], power: 0.5)
        func prepare(_ whole: Table) throws -> PreparedData {
            try PreparedData.prepare(
                table: whole, file: "t", features: ["a", "b", "c"], targets: ["tx", "ty"], testFraction: 0.1,
                validationSplit: 0.2, scaleTargets: true, weightColumn: "w", flattening: flattening,
                baseline: ["a", "b"])
        }
        let single = try prepare(table)
        let ranks = 3
        let reduction = InProcessReduction(parts: ranks)
        let results = ResultSlots<PreparedData>(count: ranks)
        let asked = ResultSlots<[Range<Int>]>(count: ranks)
        try reduction.run { rank in
            results[rank] = try PreparedData.prepareShard(
                totalRows: table.rowCount, file: "t", rank: rank, ranks: ranks,
                reduce: { reduction.reduce(rank: rank, &$0) },
                readRows: { ranges in
                    asked[rank] = ranges
                    return table.rows(ranges)
                }, features: ["a", "b", "c"], targets: ["tx", "ty"], testFraction: 0.1, validationSplit: 0.2,
                scaleTargets: true, weightColumn: "w", flattening: flattening, baseline: ["a", "b"])
        }
        let parts = try (0..<ranks).map { try XCTUnwrap(results[$0]) }
        // 203 rows: 20 test, 183 usable, floor(183 · 0.8) = 146 training (49, 49, 48 per rank) and 37 validation
        // (13, 12, 12).
        XCTAssertEqual(asked[1], [49..<98, 146 + 13..<146 + 25])
        XCTAssertEqual(asked[0], [0..<49, 146..<159, 183..<203])
        for (rank, part) in parts.enumerated() {
            XCTAssertEqual(part.shard, RowShard(trainingRows: 146, validationRows: 37, rank: rank, ranks: ranks))
            XCTAssertEqual(part.totalTrainingRows, single.train.rows)
            XCTAssertEqual(part.flattening, single.flattening, "flattening on rank \(rank)")
            assertClose(part.featureScaler.mean, single.featureScaler.mean, limit: 1e-12, "feature means")
            assertClose(part.featureScaler.scale, single.featureScaler.scale, limit: 1e-12, "feature scales")
            assertClose(
                try XCTUnwrap(part.targetScaler).scale, try XCTUnwrap(single.targetScaler).scale, limit: 1e-12,
                "target scales")
            XCTAssertEqual(part.test?.rows, rank == 0 ? 20 : nil)
        }
        XCTAssertEqual(parts.flatMap(\.train.features), single.train.features)
        XCTAssertEqual(parts.flatMap(\.train.targets), single.train.targets)
        XCTAssertEqual(parts.flatMap { $0.train.weights! }, single.train.weights)
        XCTAssertEqual(parts.flatMap(\.validation.targets), single.validation.targets)
        XCTAssertEqual(parts.flatMap { $0.validation.weights! }, single.validation.weights)
        XCTAssertEqual(parts[0].test?.targets, single.test?.targets)
    }

    /// One rank: the exchange of an epoch's rows hands back the rank's rows in the order of the batches' shares.
    func testTheEpochExchangeOnOneRankGathersTheRowsInBatchOrder() throws {
        let parallel = DataParallel(communicator: .single(), synchronizeBatchNorm: false)
        parallel.shard = RowShard(trainingRows: 10, validationRows: 0, rank: 0, ranks: 1)
        let features = (0..<30).map { Float($0) }
        let targets = (0..<10).map { Float(100 + $0) }
        let weights = (0..<10).map { Float($0) / 10 }
        let order = Trainer<ReferenceBackend>.permutation(rows: 10, seed: 3, epoch: 2)
        let rows = try parallel.exchangeRows(
            sizes: [4, 6], order: order, features: features, targets: targets, weights: weights, featureCount: 3,
            targetCount: 1)
        XCTAssertEqual(rows.features, order.flatMap { r in (0..<3).map { Float(Int(r) * 3 + $0) } })
        XCTAssertEqual(rows.targets, order.map { Float(100 + Int($0)) })
        XCTAssertEqual(rows.weights, order.map { Float($0) / 10 })
        XCTAssertEqual(try parallel.stepWeights(sizes: [4, 6], shares: [4, 6], weights: rows.weights), [1, 1])
    }

    /// One rank (reduction a no-op, weight 1): the host-side synchronised batch norm computes what the
    /// reference's batchNormTraining and batchNormBackward define, on the reference and on the device.
    func testSynchronizedBatchNormOnOneRankMatchesTheReferenceOperations() throws {
        let reference = ReferenceBackend()
        for (n, (rows, cols)) in [(2, 1), (3, 7), (37, 38), (129, 17)].enumerated() {
            let seed = UInt64(300 + 10 * n)
            let x = randomValues(rows * cols, seed: seed, scale: 2)
            let dy = randomValues(rows * cols, seed: seed + 1)
            let gamma = randomValues(cols, seed: seed + 2).map { 1 + 0.3 * $0 }
            let beta = randomValues(cols, seed: seed + 3)
            let runMean = randomValues(cols, seed: seed + 4)
            let runVariance = randomValues(cols, seed: seed + 5).map { 1 + 0.5 * abs($0) }
            for profile in [NumericsProfile.keras, .pytorch] {
                let settings = profile.batchNorm
                func run<B: Backend>(_ b: B, synchronized: Bool) throws -> [[Double]] {
                    let xs = try b.tensor(x, shape: [rows, cols])
                    let g = try b.tensor(gamma, shape: [cols])
                    let be = try b.tensor(beta, shape: [cols])
                    let rm = try b.tensor(runMean, shape: [cols])
                    let rv = try b.tensor(runVariance, shape: [cols])
                    let (sm, si, y) = (try b.scratch([cols]), try b.scratch([cols]), try b.scratch([rows, cols]))
                    let dys = try b.tensor(dy, shape: [rows, cols])
                    let (dx, dg, db) = (try b.scratch([rows, cols]), try b.scratch([cols]), try b.scratch([cols]))
                    if synchronized {
                        let total = try SynchronizedBatchNorm.forward(
                            b, input: xs, gamma: g, beta: be, runningMean: rm, runningVariance: rv, savedMean: sm,
                            savedInverseStd: si, settings: settings, output: y, reduce: { _ in })
                        XCTAssertEqual(total, rows)
                        try SynchronizedBatchNorm.backward(
                            b, outputGradient: dys, input: xs, gamma: g, savedMean: sm, savedInverseStd: si,
                            totalRows: rows, gradientWeight: 1, inputGradient: dx, gammaGradient: dg,
                            betaGradient: db, reduce: { _ in })
                    } else {
                        try b.batchNormTraining(
                            xs, gamma: g, beta: be, runningMean: rm, runningVariance: rv, savedMean: sm,
                            savedInverseStd: si, settings: settings, into: y)
                        try b.batchNormBackward(
                            outputGradient: dys, input: xs, gamma: g, savedMean: sm, savedInverseStd: si,
                            inputGradient: dx, gammaGradient: dg, betaGradient: db)
                    }
                    return try [y, sm, si, rm, rv, dx, dg, db].map { try b.read($0) }
                }
                let expected = try run(reference, synchronized: false)
                let names = ["y", "mean", "inverse std", "running mean", "running var", "dx", "dγ", "dβ"]
                for (name, (got, want)) in zip(names, zip(try run(reference, synchronized: true), expected)) {
                    assertClose(got, want, limit: 1e-13, floor: 1e-12, "reference \(rows)×\(cols) \(name)")
                }
                let device = try SharedDevice.backend()
                for (name, (got, want)) in zip(names, zip(try run(device, synchronized: true), expected)) {
                    // Float32 inputs and outputs around a Double computation; dx cancels: judged against the
                    // size of its terms, ‖dy‖ (unit normal entries).
                    assertClose(
                        got, want, limit: 2e-6, floor: name == "dx" ? Double(rows * cols).squareRoot() : 0,
                        "device \(rows)×\(cols) \(name)")
                }
            }
        }
    }

    /// With synchronised batch norm a rank may hold a single row of the batch (the whole batch's statistics
    /// count): two ranks holding 2 and 1 rows of a 3-row batch give the network's training-mode forward of the
    /// whole batch.
    func testSynchronizedBatchNormAcceptsAOneRowShare() throws {
        let spec = NetworkSpec(inputSize: 4, hiddenSizes: [5, 3], outputSize: 2)
        let initial = Network<ReferenceBackend>.initialValues(spec: spec, profile: .keras, seed: 5)
        let x = randomValues(3 * 4, seed: 911)
        @Sendable func network(_ backend: ReferenceBackend) throws -> Network<ReferenceBackend> {
            try Network(
                backend: backend, spec: spec, profile: .keras, parameters: initial.parameters,
                runningStatistics: initial.runningStatistics)
        }
        let reference = ReferenceBackend()
        let batch = try reference.tensor(x, shape: [3, 4])
        let whole = try reference.read(try network(reference).forward(batch, training: true))
        let reduction = InProcessReduction(parts: 2)
        let outputs = ResultSlots<[Double]>(count: 2)
        try reduction.run { rank in
            let b = ReferenceBackend()
            let range = Sharding.range(count: 3, parts: 2, index: rank)
            let net = try network(b)
            net.batchNormSynchronization = BatchNormSynchronization(
                reduce: { reduction.reduce(rank: rank, &$0) },
                gradientWeight: Sharding.gradientWeight(rows: 3, ranks: 2, rank: rank))
            let mine = try b.tensor(Array(x[range.lowerBound * 4..<range.upperBound * 4]), shape: [range.count, 4])
            outputs[rank] = try b.read(try net.forward(mine, training: true))
        }
        XCTAssertEqual(Sharding.range(count: 3, parts: 2, index: 1).count, 1, "rank 1 holds one row")
        assertClose((0..<2).flatMap { outputs[$0]! }, whole, limit: 1e-13, "outputs")
    }

    /// Three ranks holding 13, 12 and 12 rows of a 37-row batch compute, with the statistics all-reduced, the
    /// batch norm of the whole batch: the same y, running statistics, and (after weighting) gradients.
    func testSynchronizedBatchNormOverRanksEqualsTheWholeBatch() throws {
        let (rows, cols, parts) = (37, 9, 3)
        let x = randomValues(rows * cols, seed: 901, scale: 2)
        let dy = randomValues(rows * cols, seed: 902)  // dL/dy of the whole batch's mean loss
        let gamma = randomValues(cols, seed: 903).map { 1 + 0.3 * $0 }
        let beta = randomValues(cols, seed: 904)
        let settings = NumericsProfile.pytorch.batchNorm
        let reference = ReferenceBackend()
        @Sendable func tensors(_ b: ReferenceBackend, _ range: Range<Int>) throws -> [ReferenceBackend.Tensor] {
            let n = range.count
            return [
                try b.tensor(Array(x[range.lowerBound * cols..<range.upperBound * cols]), shape: [n, cols]),
                try b.tensor(gamma, shape: [cols]), try b.tensor(beta, shape: [cols]),
                try b.tensor([Double](repeating: 0.5, count: cols), shape: [cols]),
                try b.tensor([Double](repeating: 2, count: cols), shape: [cols]), try b.scratch([cols]),
                try b.scratch([cols]), try b.scratch([n, cols]), try b.scratch([n, cols]), try b.scratch([cols]),
                try b.scratch([cols]),
            ]
        }
        let whole = try tensors(reference, 0..<rows)
        try reference.batchNormTraining(
            whole[0], gamma: whole[1], beta: whole[2], runningMean: whole[3], runningVariance: whole[4],
            savedMean: whole[5], savedInverseStd: whole[6], settings: settings, into: whole[7])
        try reference.batchNormBackward(
            outputGradient: try reference.tensor(dy, shape: [rows, cols]), input: whole[0], gamma: whole[1],
            savedMean: whole[5], savedInverseStd: whole[6], inputGradient: whole[8], gammaGradient: whole[9],
            betaGradient: whole[10])

        let reduction = InProcessReduction(parts: parts)
        let outputs = ResultSlots<[[Double]]>(count: parts)
        try reduction.run { rank in
            let b = ReferenceBackend()
            let range = Sharding.range(count: rows, parts: parts, index: rank)
            let t = try tensors(b, range)
            let reduce: SynchronizedBatchNorm.Reduction = { reduction.reduce(rank: rank, &$0) }
            let total = try SynchronizedBatchNorm.forward(
                b, input: t[0], gamma: t[1], beta: t[2], runningMean: t[3], runningVariance: t[4], savedMean: t[5],
                savedInverseStd: t[6], settings: settings, output: t[7], reduce: reduce)
            // The rank's loss is the mean over its share: its dy is the batch's divided by its weight.
            let w = Sharding.gradientWeight(rows: rows, ranks: parts, rank: rank)
            let mine = Array(dy[range.lowerBound * cols..<range.upperBound * cols]).map { $0 / w }
            try SynchronizedBatchNorm.backward(
                b, outputGradient: try b.tensor(mine, shape: [range.count, cols]), input: t[0], gamma: t[1],
                savedMean: t[5], savedInverseStd: t[6], totalRows: total, gradientWeight: w, inputGradient: t[8],
                gammaGradient: t[9], betaGradient: t[10], reduce: reduce)
            // Back to the batch's scale, as the gradient all-reduce does.
            outputs[rank] =
                try [t[7], t[3], t[4]].map { try b.read($0) }
                + [t[8], t[9], t[10]].map {
                    try b.read($0).map { $0 * w }
                }
        }
        let results = (0..<parts).map { outputs[$0]! }
        assertClose(results.flatMap { $0[0] }, try reference.read(whole[7]), limit: 1e-13, "y")
        for rank in 0..<parts {
            assertClose(results[rank][1], try reference.read(whole[3]), limit: 1e-14, "running mean, rank \(rank)")
            assertClose(results[rank][2], try reference.read(whole[4]), limit: 1e-14, "running var, rank \(rank)")
        }
        assertClose(results.flatMap { $0[3] }, try reference.read(whole[8]), limit: 1e-12, floor: 1e-12, "dx")
        let sum = { (k: Int) in (0..<cols).map { c in results.reduce(0) { $0 + $1[k][c] } } }
        assertClose(sum(4), try reference.read(whole[9]), limit: 1e-12, "dγ")
        assertClose(sum(5), try reference.read(whole[10]), limit: 1e-12, floor: 1e-12, "dβ")
    }
}

/// Values written by several threads, one slot each.
final class ResultSlots<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [T?]
    init(count: Int) { values = Array(repeating: nil, count: count) }
    subscript(index: Int) -> T? {
        get { lock.withLock { values[index] } }
        set { lock.withLock { values[index] = newValue } }
    }
}
