import Foundation
import XCTest

@testable import HRTrain

/// `hrtrain` under `mpirun -np 2` (Open MPI; skipped, saying why, where mpirun is not installed): two ranks
/// with --sync-batchnorm train what one process trains, and a rank that dies, fails, hangs or diverges ends
/// the whole job with the last checkpoint intact.
final class MPITests: XCTestCase {
    /// The training configuration of every run here: small, so that two ranks on two cores take about a second.
    let common = [
        "--epochs", "4", "--batch-size", "401", "--hidden", "32,32", "--seed", "9", "--quiet", "--profile", "pytorch",
    ]

    func mpirun() throws -> URL {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let url = URL(fileURLWithPath: String(dir)).appendingPathComponent("mpirun")
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        throw XCTSkip("MPI tests skipped: no mpirun in PATH (Debian: apt-get install openmpi-bin libopenmpi-dev)")
    }

    /// Runs `hrtrain arguments` on `ranks` ranks (`ranks == 0`: plainly, without mpirun), killing it after
    /// `timeout` seconds; returns the exit status, the outputs and the seconds it took. `whileRunning` is called
    /// on another thread with the launcher's process id once it started (to act on the running ranks).
    func run(
        ranks: Int, _ arguments: [String], environment: [String: String] = [:], timeout: Double = 300,
        whileRunning: (@Sendable (Int32) -> Void)? = nil
    ) throws -> (status: Int32, out: String, err: String, seconds: Double) {
        try launch(
            ranks == 0 ? nil : ["-np", "\(ranks)", hrtrainExecutable().path] + arguments,
            plain: arguments, environment: environment, timeout: timeout, whileRunning: whileRunning)
    }

    /// Runs `mpirun --allow-run-as-root --oversubscribe` with `mpirunArguments` (nil: `hrtrain plain`, without
    /// mpirun); see `run`.
    func launch(
        _ mpirunArguments: [String]?, plain: [String] = [], environment: [String: String] = [:],
        timeout: Double = 300, whileRunning: (@Sendable (Int32) -> Void)? = nil
    ) throws -> (status: Int32, out: String, err: String, seconds: Double) {
        let process = Process()
        if let mpirunArguments {
            process.executableURL = try mpirun()
            process.arguments = ["--allow-run-as-root", "--oversubscribe"] + mpirunArguments
        } else {
            process.executableURL = hrtrainExecutable()
            process.arguments = plain
        }
        var env = ProcessInfo.processInfo.environment
        // Containers often forbid the cross-memory attach of Open MPI's shared-memory transport.
        env["OMPI_MCA_btl_vader_single_copy_mechanism"] = env["OMPI_MCA_btl_vader_single_copy_mechanism"] ?? "none"
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let start = Date()
        try process.run()
        let timer = DispatchWorkItem { process.terminate() }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: timer)
        if let whileRunning {
            let pid = process.processIdentifier
            DispatchQueue.global().async { whileRunning(pid) }
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        timer.cancel()
        return (
            process.terminationStatus, String(decoding: outData, as: UTF8.self),
            String(decoding: errData, as: UTF8.self), Date().timeIntervalSince(start)
        )
    }

    /// The process id of rank `rank` of the job `mpirun` (process `launcher`) started: the descendant of the
    /// launcher whose environment holds `OMPI_COMM_WORLD_RANK=rank` (Linux /proc); nil while there is none.
    static func rankProcess(_ rank: Int, of launcher: Int32) -> Int32? {
        func parent(_ pid: Int32) -> Int32? {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return nil }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 ? Int32(fields[1]) : nil
        }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for pid in entries.compactMap(Int32.init) where pid != launcher {
            var ancestor = parent(pid)
            var depth = 0
            while let current = ancestor, current != launcher, current > 1, depth < 4 {
                ancestor = parent(current)
                depth += 1
            }
            guard ancestor == launcher,
                let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ")
            else { continue }
            let variables = environ.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if variables.contains("OMPI_COMM_WORLD_RANK=\(rank)") { return pid }
        }
        return nil
    }

    /// Waits (up to `seconds`) until `url` exists; then sends `signal` to rank `rank` of the job of `launcher`.
    /// Returns whether it did.
    @discardableResult
    static func signalRank(
        _ rank: Int, of launcher: Int32, _ signal: Int32, after url: URL, within seconds: Double = 200
    ) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if FileManager.default.fileExists(atPath: url.path), let pid = rankProcess(rank, of: launcher) {
                return kill(pid, signal) == 0
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return false
    }

    /// 2,400 generated events (1,920 training rows: batches of 401 split 201/200 over two ranks, then 316).
    func sample(in dir: URL) throws -> URL {
        let url = dir.appendingPathComponent("events.csv")
        let result = try runHRTrain(["generate", "--events", "2400", "--seed", "11", "--output", url.path])
        XCTAssertEqual(result.status, 0, result.err)
        return url
    }

    func metrics(_ url: URL) throws -> [EpochRecord] {
        try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map {
            try JSONDecoder().decode(EpochRecord.self, from: Data($0.utf8))
        }
    }

    func relativeDifference(_ a: [Double], _ b: [Double]) -> Double {
        let difference = zip(a, b).reduce(0.0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
        return (difference / b.reduce(0.0) { $0 + $1 * $1 }).squareRoot()
    }

    func testMPICheckSumsAndTimesAnAllReduceOnTwoRanks() throws {
        _ = try mpirun()
        let result = try run(ranks: 2, ["mpi-check", "--no-device", "--repetitions", "5"])
        XCTAssertEqual(result.status, 0, result.err)
        XCTAssertTrue(result.out.contains("2 ranks (MPI)"), result.out)
        XCTAssertEqual(result.out.components(separatedBy: "  ok").count - 1, 2, result.out)
        XCTAssertTrue(result.out.contains("all-reduce of 143618 floats (0.57 MB"), result.out)
    }

    /// The tolerance stated in the README: loss trajectories within 1e-5 and final weights within 1e-4
    /// (relative L2) of one process with the same global batch; observed ~1e-7 (Float32 summation order).
    func testTwoRanksWithSynchronizedBatchNormTrainWhatOneProcessTrains() throws {
        _ = try mpirun()
        let dir = try temporaryDirectory(self)
        let data = try sample(in: dir).path
        func train(ranks: Int, _ name: String, _ extra: [String] = []) throws -> (Model, [EpochRecord]) {
            let model = dir.appendingPathComponent("\(name).safetensors")
            let metrics = dir.appendingPathComponent("\(name).jsonl")
            let result = try run(
                ranks: ranks,
                ["train", "--data", data, "--model", model.path, "--metrics", metrics.path] + common + extra)
            XCTAssertEqual(result.status, 0, result.err)
            return (try Model.read(from: model), try self.metrics(metrics))
        }
        let (single, singleHistory) = try train(ranks: 0, "single")
        let (synchronized, synchronizedHistory) = try train(ranks: 2, "sync", ["--sync-batchnorm"])
        let (perRank, perRankHistory) = try train(ranks: 2, "per-rank")
        XCTAssertEqual(synchronized.metadata.training?.ranks, 2)
        XCTAssertEqual(synchronized.metadata.training?.synchronizedBatchNorm, true)
        XCTAssertEqual(synchronizedHistory.count, 4)
        let losses = { (h: [EpochRecord]) in h.map(\.trainLoss) + h.compactMap(\.validationLoss) }
        let lossError = relativeDifference(losses(synchronizedHistory), losses(singleHistory))
        let weightError = relativeDifference(
            synchronized.parameters.map(Double.init), single.parameters.map(Double.init))
        let runningError = relativeDifference(
            synchronized.runningStatistics.map(Double.init), single.runningStatistics.map(Double.init))
        print(
            "2 ranks --sync-batchnorm vs 1 process: losses \(lossError), weights \(weightError), "
                + "running \(runningError)")
        XCTAssertLessThanOrEqual(lossError, 1e-5)
        XCTAssertLessThanOrEqual(weightError, 1e-4)
        XCTAssertLessThanOrEqual(runningError, 1e-4)
        // Without --sync-batchnorm each rank normalises its own share: a different (DDP) computation.
        let perRankError = relativeDifference(losses(perRankHistory), losses(singleHistory))
        print("2 ranks, batch norm per rank, vs 1 process: losses \(perRankError)")
        XCTAssertGreaterThan(perRankError, 1e-5)
        XCTAssertLessThan(perRankError, 0.05)
        XCTAssertNotEqual(perRank.parameters, single.parameters)
    }

    /// A real SIGKILL: once rank 0 has written a checkpoint, the test kills rank 1's process (found through
    /// /proc); mpirun notices, names the rank and ends the job, and the checkpoint resumes on two ranks only.
    func testAKilledRankEndsTheJobAndTheCheckpointResumesOnTwoRanksOnly() throws {
        _ = try mpirun()
        let dir = try temporaryDirectory(self)
        let data = try sample(in: dir).path
        let model = dir.appendingPathComponent("model.safetensors")
        let checkpoint = dir.appendingPathComponent("model.safetensors.checkpoint")
        let rest = Array(common.dropFirst(2))  // all but --epochs 4
        let long = ["--epochs", "400"] + rest  // still training when the kill comes
        let killed = try run(
            ranks: 2, ["train", "--data", data, "--model", model.path] + long, timeout: 240,
            whileRunning: { launcher in
                XCTAssertTrue(Self.signalRank(1, of: launcher, SIGKILL, after: checkpoint), "rank 1 not found")
            })
        XCTAssertNotEqual(killed.status, 0)
        XCTAssertLessThan(killed.seconds, 240, "the job must end by itself")
        XCTAssertTrue(killed.err.contains("rank 1"), killed.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: model.path), "no model from a failed job")
        let saved = try Checkpoint.read(from: checkpoint)
        let epoch = saved.metadata.state.epoch
        XCTAssertTrue((1..<400).contains(epoch), "checkpoint of epoch \(epoch)")

        let alone = try run(ranks: 0, ["train", "--data", data, "--model", model.path, "--resume", checkpoint.path])
        XCTAssertEqual(alone.status, 1)
        XCTAssertTrue(alone.err.contains("written by a run of 2 ranks"), alone.err)
        XCTAssertTrue(alone.err.contains("mpirun -np 2"), alone.err)

        let total = ["--epochs", "\(epoch + 1)"]
        let resumed = try run(
            ranks: 2, ["train", "--data", data, "--model", model.path, "--resume", checkpoint.path, "--quiet"] + total)
        XCTAssertEqual(resumed.status, 0, resumed.err)
        let whole = dir.appendingPathComponent("whole.safetensors")
        let uninterrupted = try run(ranks: 2, ["train", "--data", data, "--model", whole.path] + total + rest)
        XCTAssertEqual(uninterrupted.status, 0, uninterrupted.err)
        XCTAssertEqual(
            try Model.read(from: model).parameters, try Model.read(from: whole).parameters,
            "killed and resumed on two ranks ends with bitwise the weights of the uninterrupted run")
    }

    /// A real error on one rank: a NaN in a training row only rank 1 reads (rank-local reading of a `.npy`
    /// file: rank 0 never sees it). Rank 1 names the file, the row and its rank, and MPI_Abort ends rank 0,
    /// which waits for it in the scaler's all-reduce; nothing is written.
    func testAnErrorOnOneRankAbortsTheJobNamingTheRank() throws {
        _ = try mpirun()
        let dir = try temporaryDirectory(self)
        var table = try readTable(try sample(in: dir))
        table.values[1500 * table.columnCount + 4] = .nan  // training row 1501 of 1920: rank 1's (961–1920)
        let data = dir.appendingPathComponent("events.npy")
        try writeTable(table, to: data)
        let model = dir.appendingPathComponent("m.safetensors")
        let result = try run(
            ranks: 2, ["train", "--data", data.path, "--model", model.path] + common, timeout: 120)
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.err.contains("error: rank 1/2: "), result.err)
        XCTAssertTrue(result.err.contains("row 1501 holds nan"), result.err)
        XCTAssertTrue(result.err.contains("events.npy"), result.err)
        XCTAssertFalse(result.err.contains("rank 0/2: error"), result.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: model.path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: model.path + ".checkpoint"))
    }

    /// A real hang: the test stops rank 1 (SIGSTOP) after the first checkpoint; rank 0's next collective
    /// waits, and the watchdog ends the job after HRTRAIN_MPI_TIMEOUT seconds, the checkpoint intact.
    func testAHungRankIsEndedByTheWatchdog() throws {
        _ = try mpirun()
        let dir = try temporaryDirectory(self)
        let data = try sample(in: dir).path
        let model = dir.appendingPathComponent("m.safetensors")
        let long = ["--epochs", "400"] + common.dropFirst(2)
        let result = try run(
            ranks: 2, ["train", "--data", data, "--model", model.path] + long,
            environment: ["HRTRAIN_MPI_TIMEOUT": "2"], timeout: 240,
            whileRunning: { launcher in
                let checkpoint = URL(fileURLWithPath: model.path + ".checkpoint")
                XCTAssertTrue(Self.signalRank(1, of: launcher, SIGSTOP, after: checkpoint), "rank 1 not found")
            })
        XCTAssertNotEqual(result.status, 0)
        XCTAssertLessThan(result.seconds, 240)
        XCTAssertTrue(result.err.contains("rank 0/2: MPI_"), result.err)  // MPI_Allreduce or MPI_Alltoallv
        XCTAssertTrue(result.err.contains("waited more than 2.0 s for the other ranks"), result.err)
        XCTAssertNoThrow(try Checkpoint.read(from: URL(fileURLWithPath: model.path + ".checkpoint")))
    }

    /// Ranks whose arithmetic differs (as on nodes with other hardware or libraries): an MPMD job whose rank 1
    /// trains on the Double reference backend, rank 0 on the default one. The parameter check after the first
    /// epoch stops the job.
    func testRanksThatDivergeStopTheJob() throws {
        _ = try mpirun()
        let dir = try temporaryDirectory(self)
        let data = try sample(in: dir).path
        let arguments =
            [hrtrainExecutable().path, "train", "--data", data, "--model", dir.appendingPathComponent("m.st").path]
            + common
        let result = try launch(
            ["-np", "1"] + arguments + [":", "-np", "1"] + arguments + ["--backend", "reference"], timeout: 120)
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.err.contains("differ between ranks: rank 0 and rank 1 hold different values"), result.err)
    }

    /// Rank-local reading changes nothing: two ranks reading only their rows of a `.npy` and of an HDF5 file
    /// train bitwise what two ranks reading the whole CSV train.
    func testRanksReadingOnlyTheirRowsOfNPYAndHDF5TrainWhatTheWholeCSVTrains() throws {
        _ = try mpirun()
        let dir = try temporaryDirectory(self)
        let csv = try sample(in: dir)
        let table = try readTable(csv)
        var parameters: [String: [Float]] = [:]
        for format in ["csv", "npy", "h5"] {
            let data = dir.appendingPathComponent("events.\(format)")
            if format != "csv" { try writeTable(table, to: data) }
            let model = dir.appendingPathComponent("\(format).safetensors")
            let flags = common.filter { $0 != "--quiet" } + ["--sync-batchnorm", "--verbose"]
            let result = try run(ranks: 2, ["train", "--data", data.path, "--model", model.path] + flags)
            XCTAssertEqual(result.status, 0, result.err)
            let how = format == "csv" ? "which read the whole file" : "which read only its rows"
            let read = "read 1200 of the 2400 rows × 40 columns on rank 0, \(how)"
            XCTAssertTrue(result.err.contains(read), result.err)  // --verbose details go to stderr
            parameters[format] = try Model.read(from: model).parameters
        }
        XCTAssertEqual(parameters["npy"], parameters["csv"])
        XCTAssertEqual(parameters["h5"], parameters["csv"])
    }

    /// The weighted MSE across ranks (a weight column times |target| flattening fitted on the all-reduced
    /// histogram; each batch's Σw all-reduced): two ranks with --sync-batchnorm train what one process trains,
    /// within the tolerance of the plain MSE.
    func testTwoRanksWithEventWeightsTrainWhatOneProcessTrains() throws {
        _ = try mpirun()
        let dir = try temporaryDirectory(self)
        let table = try readTable(try sample(in: dir))
        var rng = SplitMix64(seed: 4)
        let weights = (0..<table.rowCount).map { _ in Float(0.5 + Double(rng.next() % 1000) / 1000) }
        var values: [Float] = []
        for r in 0..<table.rowCount {
            values += table.values[r * table.columnCount..<(r + 1) * table.columnCount] + [weights[r]]
        }
        let data = dir.appendingPathComponent("weighted.npy")
        try writeTable(
            Table(columnNames: table.columnNames + ["event_weight"], rowCount: table.rowCount, values: values),
            to: data)
        let weighting = ["--weights", "event_weight", "--flatten-target-magnitude", "0,10,20,40,80"]
        func train(ranks: Int, _ name: String, _ extra: [String]) throws -> (Model, [EpochRecord]) {
            let model = dir.appendingPathComponent("\(name).safetensors")
            let metrics = dir.appendingPathComponent("\(name).jsonl")
            let result = try run(
                ranks: ranks,
                ["train", "--data", data.path, "--model", model.path, "--metrics", metrics.path] + common + extra)
            XCTAssertEqual(result.status, 0, result.err)
            return (try Model.read(from: model), try self.metrics(metrics))
        }
        let (single, singleHistory) = try train(ranks: 0, "single", weighting)
        let (parallel, parallelHistory) = try train(ranks: 2, "parallel", weighting + ["--sync-batchnorm"])
        XCTAssertEqual(parallel.metadata.training?.weightColumn, "event_weight")
        let losses = { (h: [EpochRecord]) in h.map(\.trainLoss) + h.compactMap(\.validationLoss) }
        let lossError = relativeDifference(losses(parallelHistory), losses(singleHistory))
        let weightError = relativeDifference(parallel.parameters.map(Double.init), single.parameters.map(Double.init))
        print("2 ranks, weighted MSE, --sync-batchnorm vs 1 process: losses \(lossError), weights \(weightError)")
        XCTAssertLessThanOrEqual(lossError, 1e-5)
        XCTAssertLessThanOrEqual(weightError, 1e-4)
        // The weights matter: the plain MSE trains something else.
        let (plain, _) = try train(ranks: 0, "plain", [])
        XCTAssertGreaterThan(
            relativeDifference(plain.parameters.map(Double.init), single.parameters.map(Double.init)), 1e-3)
    }

    func testBenchUnderMPIReportsTheJobsThroughputAndTheAllReduce() throws {
        _ = try mpirun()
        for sync in [false, true] {
            let result = try run(
                ranks: 2,
                ["bench", "--batch", "64", "--hidden", "16,16", "--steps", "3", "--warmup-steps", "1", "--json"]
                    + (sync ? ["--sync-batchnorm"] : []))
            XCTAssertEqual(result.status, 0, result.err)
            let report = try JSONDecoder().decode(DataParallelBenchmark.Report.self, from: Data(result.out.utf8))
            XCTAssertEqual(report.ranks, 2)
            XCTAssertEqual(report.largestShare, 32)
            XCTAssertGreaterThan(report.eventsPerSecond, 0)
            XCTAssertGreaterThan(report.allReduceMillisecondsPerStep, 0)
            XCTAssertGreaterThanOrEqual(report.gradientExchangeMillisecondsPerStep, 0)
            // One gradient all-reduce per step; synchronised batch norm adds three per block.
            XCTAssertEqual(report.allReducesPerStep, sync ? 7 : 1)
        }
    }
}
