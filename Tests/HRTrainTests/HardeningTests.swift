import Foundation
import XCTest

@testable import HRTrain

/// Issue 10: hostile inputs, flags and file-system situations end with a clear message and a non-zero exit
/// status; no signal, no hang, no lost or mismatched file, no silent acceptance. One test per class.
final class HardeningTests: XCTestCase {
    // MARK: Helpers

    /// The bytes of `url` (to check a file is unchanged).
    private func bytes(_ url: URL) throws -> Data { try Data(contentsOf: url) }

    /// Runs hrtrain and checks the exit status and that standard error contains every one of `expected`.
    @discardableResult
    private func refused(
        _ arguments: [String], status: Int32 = 1, _ expected: [String], environment: [String: String] = [:],
        line: UInt = #line
    ) throws -> String {
        let result = try runHRTrain(arguments, environment: environment)
        XCTAssertEqual(result.status, status, "\(arguments): \(result.err)", line: line)
        for text in expected {
            XCTAssertTrue(result.err.contains(text), "\(arguments): \(result.err) lacks \(text)", line: line)
        }
        return result.err
    }

    /// A small training sample written to `name` in `dir`.
    private func sample(_ name: String, in dir: URL, rows: Int = 120, seed: UInt64 = 3) throws -> URL {
        let url = dir.appendingPathComponent(name)
        let lines = TrainCommandTests.sampleLines(rows: rows, seed: seed)
        try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// An untrained model (no device needed) for the sample's columns.
    private func model(in dir: URL) throws -> URL {
        let url = dir.appendingPathComponent("init.safetensors")
        let result = try runHRTrain([
            "init", "--out", url.path, "--features", "f0,f1,f2,f3", "--hidden", "4",
        ])
        XCTAssertEqual(result.status, 0, result.err)
        return url
    }

    // MARK: 1-3. Sizes from headers, metadata and flags

    func testSizesFromFileHeadersAreBoundedBeforeAllocation() throws {
        let dir = try temporaryDirectory(self)
        // Overflowing shapes (40 columns of 2⁵⁸ rows) are refused by the one size helper.
        XCTAssertThrowsError(try SizeLimits.requireHostArray(shape: [1 << 58, 40], elementSize: 4, what: "t")) {
            XCTAssertTrue("\($0)".contains("overflows"), "\($0)")
        }
        // Every reader checks the table it is about to allocate against the host memory (here set to 1000 bytes).
        let table = Table(
            columnNames: (0..<40).map { "c\($0)" }, rowCount: 20, values: (0..<800).map { Float($0) })
        for name in ["t.h5", "t.npy", "t.csv"] {
            let url = dir.appendingPathComponent(name)
            try writeTable(table, to: url)
            try refused(
                [
                    "init", "--out", dir.appendingPathComponent("m.safetensors").path, "--scaler-from", url.path,
                    "--features", "c0,c1", "--targets", "c2", "--hidden", "2",
                ],
                ["--scaler-from", url.path, "needs", "bytes", "more than this machine's memory (1000 B)"],
                environment: ["HRTRAIN_MEMORY_LIMIT": "1000"])
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("m.safetensors").path))
    }

    func testModelMetadataCannotDeclareMoreThanTheFileHolds() throws {
        let dir = try temporaryDirectory(self)
        let url = try model(in: dir)
        var file = try SafeTensorsFile.read(from: url)
        let json = try XCTUnwrap(file.metadata["hrtrain"])
        XCTAssertTrue(json.contains("\"hiddenSizes\":[4]"), json)
        file.metadata["hrtrain"] = json.replacingOccurrences(
            of: "\"hiddenSizes\":[4]", with: "\"hiddenSizes\":[1000000,1000000]")
        let hostile = dir.appendingPathComponent("hostile.safetensors")
        try file.write(to: hostile)
        let data = try sample("d.csv", in: dir)
        let output = dir.appendingPathComponent("p.csv")
        try refused(
            [
                "predict", "--model", hostile.path, "--data", data.path, "--output", output.path, "--backend",
                "reference",
            ],
            ["--model", "declared in the metadata", "needs", "more than"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: output.path))
        // A column named twice would leave another column unread: refused.
        var twice = try SafeTensorsFile.read(from: url)
        var metadata = try JSONDecoder().decode(ModelMetadata.self, from: Data(json.utf8))
        metadata.featureNames[1] = metadata.featureNames[0]
        twice.metadata["hrtrain"] = try JSON.string(metadata)
        try twice.write(to: hostile)
        try refused(
            [
                "predict", "--model", hostile.path, "--data", data.path, "--output", output.path, "--backend",
                "reference",
            ],
            ["--model", "its feature list names two columns"])
    }

    func testFlagsAreBoundedAndNegativeValuesMeetTheRangeCheck() throws {
        let dir = try temporaryDirectory(self)
        let out = dir.appendingPathComponent("g.csv").path
        try refused(
            ["generate", "--events", "4611686018427387904", "--output", out], status: 64, ["--events", "overflows"])
        try refused(
            ["generate", "--events", "1000000000000", "--output", out], status: 64,
            ["--events", "more than this machine's memory"])
        try refused(
            ["generate", "--events", "-5", "--output", out], status: 64, ["--events must be at least 1, got -5"])
        try refused(["verify", "--steps=-1"], status: 64, ["--steps must be ≥ 0, got -1"])
        try refused(["verify", "--fd-probes", "-1"], status: 64, ["--fd-probes must be ≥ 0, got -1"])
        try refused(
            ["verify", "--hidden", "1000000,1000000"], status: 64, ["--hidden", "more than this machine's memory"])
        let data = try sample("d.csv", in: dir)
        let model = dir.appendingPathComponent("m.safetensors").path
        try refused(
            ["train", "--data", data.path, "--model", model, "--epochs", "-1"], status: 64, ["--epochs", "-1"])
        try refused(
            ["train", "--data", data.path, "--model", model, "--batch-size", "4611686018427387904"], status: 64,
            ["--batch-size", "overflows"])
        try refused(
            ["train", "--data", data.path, "--model", model, "--patience", "2", "--min-delta", "nan"], status: 64,
            ["--min-delta"])
        try refused(
            ["train", "--data", data.path, "--model", model, "--learning-rate", "-1e-3"], status: 64,
            ["--learning-rate", "-0.001"])
        try refused(
            [
                "train", "--data", data.path, "--model", model, "--reduce-lr-patience", "2", "--reduce-lr-min-delta",
                "nan",
            ], status: 64, ["--reduce-lr-min-delta must be finite"])
        try refused(
            [
                "train", "--data", data.path, "--model", model, "--reduce-lr-patience", "2", "--min-learning-rate",
                "inf",
            ], status: 64, ["--min-learning-rate must be a finite number"])
        try refused(
            ["train", "--data", data.path, "--model", model, "--epochs", "4611686018427387904"], status: 64,
            ["--epochs must be at most 1000000"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        XCTAssertFalse(FileManager.default.fileExists(atPath: model))
    }

    // MARK: 4. Program cache

    func testDamagedProgramCacheFilesAreRebuiltWithAWarning() throws {
        _ = try SharedDevice.backend()
        let cache = ProgramCache(directory: try temporaryDirectory(self))
        let first = try ComputeContext(handle: DeviceCatalog.select(nil), cache: cache)
        let file = URL(fileURLWithPath: try XCTUnwrap(first.programBuild.cacheFile))
        let good = try bytes(file)
        var flipped = good
        flipped[flipped.count - 10] ^= 0xFF
        for (damage, reason) in [(good.prefix(good.count / 2), "truncated"), (flipped[...], "checksum")] {
            try Data(damage).write(to: file)
            let context = try ComputeContext(handle: DeviceCatalog.select(nil), cache: cache)
            XCTAssertEqual(context.programBuild.origin, "compiled")
            XCTAssertTrue(context.programBuild.warning?.contains(reason) == true, "\(context.programBuild)")
            XCTAssertEqual(try bytes(file).count, good.count, "the rebuilt program is stored again")
        }
        let again = try ComputeContext(handle: DeviceCatalog.select(nil), cache: cache)
        XCTAssertEqual(again.programBuild.origin, "cached")
        XCTAssertNil(again.programBuild.warning)
    }

    // MARK: 5. Writing on a full disk (a file-size limit gives the same failed write)

    func testAFailedHDF5WriteGivesAReasonAndKeepsTheOldFile() throws {
        let dir = try temporaryDirectory(self)
        let output = dir.appendingPathComponent("events.h5")
        XCTAssertEqual(try runHRTrain(["generate", "--events", "10", "--output", output.path]).status, 0)
        let old = try bytes(output)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = [
            "-c", "ulimit -f 64; exec \"$0\" generate --events 20000 --output \"$1\"", hrtrainExecutable().path,
            output.path,
        ]
        let err = Pipe()
        process.standardError = err
        try process.run()
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationReason, .exit, message)
        XCTAssertEqual(process.terminationStatus, 1, message)
        XCTAssertTrue(message.contains(output.path) && message.contains("write failed: File too large"), message)
        XCTAssertEqual(try bytes(output), old)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains("tmp") }
        XCTAssertEqual(leftovers, [])
    }

    // MARK: 6. FIFOs and directories as inputs and outputs

    func testFIFOsAndDirectoriesAreRefusedWithoutBlocking() throws {
        let dir = try temporaryDirectory(self)
        let fifo = dir.appendingPathComponent("pipe.csv")
        XCTAssertEqual(mkfifo(fifo.path, 0o644), 0)
        let model = try model(in: dir)
        let output = dir.appendingPathComponent("p.csv").path
        try refused(
            ["predict", "--model", model.path, "--data", fifo.path, "--output", output],
            ["--data", "is a FIFO (named pipe), not a regular file"])
        try refused(
            ["predict", "--model", dir.path, "--data", fifo.path, "--output", output],
            ["--model", "is a directory, not a regular file"])
        let data = try sample("d.csv", in: dir)
        try refused(
            ["train", "--data", data.path, "--model", dir.appendingPathComponent("m").path, "--metrics", dir.path],
            ["--metrics", "is a directory; give the path of a regular file"])
        try refused(
            ["train", "--data", data.path, "--model", dir.appendingPathComponent("m").path, "--resume", fifo.path],
            ["--resume", "is a FIFO"])
        try refused(
            [
                "report", "--model", model.path, "--data", data.path, "--metrics", fifo.path, "--output",
                dir.appendingPathComponent("r.html").path,
            ],
            ["--metrics", "is a FIFO"])
    }

    // MARK: 7. Outputs that are inputs or other outputs

    func testOutputsThatCollideWithInputsOrEachOtherAreRefused() throws {
        let dir = try temporaryDirectory(self)
        let data = try sample("d.csv", in: dir)
        let model = try model(in: dir)
        let before = try bytes(data)
        let link = dir.appendingPathComponent("hard-link.csv")
        try FileManager.default.linkItem(at: data, to: link)
        try refused(
            ["predict", "--model", model.path, "--data", data.path, "--output", data.path],
            ["--output", "is the same file as the input --data"])
        try refused(
            ["predict", "--model", model.path, "--data", data.path, "--output", link.path],
            ["--output", "is the same file as the input --data"])
        try refused(
            ["train", "--data", data.path, "--model", data.path], ["--model", "is the same file as the input --data"])
        let m = dir.appendingPathComponent("m.safetensors").path
        try refused(
            ["train", "--data", data.path, "--model", m, "--checkpoint", data.path],
            ["--checkpoint", "is the same file as the input --data"])
        try refused(["train", "--data", data.path, "--model", m, "--checkpoint", m], ["--checkpoint", "--model"])
        try refused(["train", "--data", data.path, "--model", m, "--metrics", m], ["--metrics", "--model"])
        let g = dir.appendingPathComponent("g.csv").path
        try refused(["generate", "--events", "10", "--split", "--output", g, "--test-output", g], ["--test-output"])
        let summary = dir.appendingPathComponent("r_summary.csv")
        try FileManager.default.copyItem(at: data, to: summary)
        try refused(
            [
                "report", "--model", model.path, "--data", summary.path, "--output",
                dir.appendingPathComponent("r.html").path,
            ],
            ["figure CSV", "is the same file as the input --data"])
        XCTAssertEqual(try bytes(data), before)
        XCTAssertEqual(try bytes(summary), before)
        XCTAssertFalse(FileManager.default.fileExists(atPath: m))
        XCTAssertFalse(FileManager.default.fileExists(atPath: g))
    }

    // MARK: 8. Multi-file outputs: all or nothing

    func testMultiFileWritesReplaceAllOrNothing() throws {
        let dir = try temporaryDirectory(self)
        let url = dir.appendingPathComponent("t.npy")
        let old = Table(columnNames: ["a", "b"], rowCount: 1, values: [1, 2])
        try writeTable(old, to: url)
        let oldArray = try bytes(url)
        // The sidecar cannot be replaced (a non-empty folder took its name): the array must not change either.
        let sidecar = NPYFormat.columnsURL(for: url)
        try FileManager.default.removeItem(at: sidecar)
        try FileManager.default.createDirectory(at: sidecar, withIntermediateDirectories: false)
        try Data().write(to: sidecar.appendingPathComponent("x"))
        XCTAssertThrowsError(
            try writeTable(Table(columnNames: ["c", "d"], rowCount: 2, values: [1, 2, 3, 4]), to: url))
        XCTAssertEqual(try bytes(url), oldArray)
        // A new target that was written before the failure is removed again.
        let fresh = dir.appendingPathComponent("fresh.txt")
        XCTAssertThrowsError(
            try AtomicFile.write([
                (fresh, { try $0.write("new") }), (sidecar, { try $0.write("names") }),
            ]))
        XCTAssertFalse(FileManager.default.fileExists(atPath: fresh.path))
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        XCTAssertEqual(names, ["t.npy", "t.npy.columns"])
        // A replaced file keeps its permissions; a new one gets 0666 less the umask, as `open` would give it.
        func permissions(_ url: URL) throws -> Int {
            try XCTUnwrap(FileManager.default.attributesOfItem(atPath: url.path)[.posixPermissions] as? Int)
        }
        let kept = dir.appendingPathComponent("kept.txt")
        try AtomicFile.write(to: kept) { try $0.write("old") }
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: kept.path)
        try AtomicFile.write(to: kept) { try $0.write("new") }
        XCTAssertEqual(try permissions(kept), 0o600, "the replaced file")
        XCTAssertEqual(try String(contentsOf: kept, encoding: .utf8), "new")
        try AtomicFile.write(to: fresh) { try $0.write("new") }
        XCTAssertEqual(try permissions(fresh), 0o666 & ~Int(AtomicFile.processUmask), "a new file")
        // A name of 249 bytes (the file system allows 255) still gets its temporary sibling, and several files
        // their backups.
        let long = dir.appendingPathComponent("a" + String(repeating: "é", count: 124))
        XCTAssertEqual(long.lastPathComponent.utf8.count, 249)
        try AtomicFile.write(to: long) { try $0.write("one") }
        try AtomicFile.write([(long, { try $0.write("two") }), (kept, { try $0.write("three") })])
        XCTAssertEqual(try String(contentsOf: long, encoding: .utf8), "two")
        XCTAssertEqual(AtomicFile.siblingStem(of: long).utf8.count, 199, "whole characters, at most 200 bytes")
    }

    // MARK: 9. Duplicate column names

    func testDuplicateColumnNamesAreRefusedInEveryFormat() throws {
        let dir = try temporaryDirectory(self)
        let npy = dir.appendingPathComponent("t.npy")
        try writeTable(Table(columnNames: ["a", "b"], rowCount: 1, values: [1, 2]), to: npy)
        try Data("x\nx\n".utf8).write(to: NPYFormat.columnsURL(for: npy))
        XCTAssertThrowsError(try readTable(npy)) {
            XCTAssertTrue("\($0)".contains("names two columns \"x\" (columns 1 and 2)"), "\($0)")
        }
        let h5 = dir.appendingPathComponent("t.h5")
        try HDF5Format.locked {
            let file = try HDF5File(creating: h5, reportingAs: h5)
            try file.writeFloats("data", shape: [1, 2], [1, 2])
            try file.writeStrings(["y", "y"], object: "data", attribute: "columns")
            try file.close()
        }
        XCTAssertThrowsError(try readTable(h5)) {
            XCTAssertTrue("\($0)".contains("attribute \"columns\" of \"data\" names two columns \"y\""), "\($0)")
        }
    }

    // MARK: 10, 11, 4(b). Resume on other data, options from a checkpoint, divergence

    func testResumeFingerprintCheckpointOptionsAndDivergence() throws {
        _ = try SharedDevice.backend()
        let dir = try temporaryDirectory(self)
        let data = try sample("d.csv", in: dir, seed: 3)
        let model = dir.appendingPathComponent("m.safetensors")
        let quick = ["--hidden", "4", "--batch-size", "32", "--epochs", "1"]
        let trained = try runHRTrain(["train", "--data", data.path, "--model", model.path, "--quiet"] + quick)
        XCTAssertEqual(trained.status, 0, trained.err)
        let checkpoint = URL(fileURLWithPath: model.path + ".checkpoint")
        let savedCheckpoint = try bytes(checkpoint)
        let savedModel = try bytes(model)

        // --epochs is the run's total: fewer than the checkpoint has done is refused (exit 64), naming the file;
        // settings given with --resume are named as ignored.
        let two = dir.appendingPathComponent("two.safetensors")
        let twice = try runHRTrain(
            [
                "train", "--data", data.path, "--model", two.path, "--quiet", "--hidden", "4", "--batch-size", "32",
                "--epochs", "2",
            ])
        XCTAssertEqual(twice.status, 0, twice.err)
        try refused(
            ["train", "--data", data.path, "--model", two.path, "--resume", two.path + ".checkpoint", "--epochs", "1"],
            status: 64, ["--epochs 1", two.path + ".checkpoint", "has 2 epochs done", "give at least 2"])
        let ignored = try runHRTrain(
            [
                "train", "--data", data.path, "--model", two.path, "--resume", two.path + ".checkpoint", "--epochs",
                "3",
                "--patience", "1", "--no-shuffle",
            ])
        XCTAssertEqual(ignored.status, 0, ignored.err)
        XCTAssertTrue(
            ignored.err.contains("--no-shuffle, --patience given on the command line are ignored"), ignored.err)

        // Same columns and row count, other values: refused, naming what differs.
        let other = try sample("other.csv", in: dir, seed: 4)
        try refused(
            ["train", "--data", other.path, "--model", model.path, "--resume", checkpoint.path, "--epochs", "2"],
            ["--resume", "other data", "same columns and 120 rows but other values"])

        // Options read back from a checkpoint are validated as flags are (a stored batch size of 0), when it is read.
        var file = try SafeTensorsFile.read(from: checkpoint)
        let json = try XCTUnwrap(file.metadata["checkpoint"])
        XCTAssertTrue(json.contains("\"batchSize\":32"), json)
        file.metadata["checkpoint"] = json.replacingOccurrences(of: "\"batchSize\":32", with: "\"batchSize\":0")
        let zero = dir.appendingPathComponent("zero.checkpoint")
        try file.write(to: zero)
        try refused(
            ["train", "--data", data.path, "--model", model.path, "--resume", zero.path, "--epochs", "2"],
            ["--resume", zero.path, "training options are not valid", "batch size must be at least 2", "got 0"])

        // Divergence: a learning rate that blows the weights up stops training with epoch and step named;
        // the model and the last good checkpoint stay as they were.
        try refused(
            [
                "train", "--data", data.path, "--model", model.path, "--resume", checkpoint.path, "--epochs", "3",
                "--quiet",
            ],
            status: 0, [])
        let goodCheckpoint = try bytes(checkpoint)
        let goodModel = try bytes(model)
        XCTAssertNotEqual(goodCheckpoint, savedCheckpoint)
        XCTAssertNotEqual(goodModel, savedModel)
        try refused(
            [
                "train", "--data", data.path, "--model", model.path, "--learning-rate", "1e30", "--epochs", "3",
                "--checkpoint", checkpoint.path,
            ] + ["--hidden", "4", "--batch-size", "32"],
            ["the loss became non-finite", "at epoch 1, step", "unchanged"])
        XCTAssertEqual(try bytes(model), goodModel)
        XCTAssertEqual(try bytes(checkpoint), goodCheckpoint)
    }

    // MARK: Interruption (issue 10, item 5): SIGINT and SIGTERM

    /// Starts hrtrain, sends `signals` (back to back) once standard error contains `marker`, and returns the
    /// exit status and all of standard error.
    private func interrupted(_ arguments: [String], after marker: String, signals: [Int32]) throws -> (
        status: Int32, err: String
    ) {
        let process = Process()
        process.executableURL = hrtrainExecutable()
        process.arguments = arguments
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        var text = Data()
        var sent = false
        while true {
            let chunk = err.fileHandleForReading.availableData
            if chunk.isEmpty { break }  // end of file: the process closed standard error
            text.append(chunk)
            if !sent && String(decoding: text, as: UTF8.self).contains(marker) {
                for signal in signals { kill(process.processIdentifier, signal) }
                sent = true
            }
        }
        process.waitUntilExit()
        XCTAssertTrue(sent, "\(marker) never appeared: \(String(decoding: text, as: UTF8.self))")
        XCTAssertEqual(process.terminationReason, .exit, "hrtrain must exit, not die of the signal")
        return (process.terminationStatus, String(decoding: text, as: UTF8.self))
    }

    /// The command after "To resume:" in an interruption message, as arguments (the program name dropped).
    private func resumeArguments(_ err: String, line: UInt = #line) throws -> [String] {
        let hint = try XCTUnwrap(err.components(separatedBy: "To resume:\n  ").last, line: line)
        let words = hint.split(separator: "\n")[0].split(separator: " ").map(String.init)
        XCTAssertEqual(words.first, "hrtrain", line: line)
        return Array(words.dropFirst())
    }

    /// SIGINT during a run and SIGTERM during the resumed run: each finishes its step, writes a checkpoint at
    /// that step (mid-epoch), prints the command that resumes and exits 130 / 143 without writing the model;
    /// running the printed commands ends with a model file identical, byte for byte, to the one of an
    /// uninterrupted run, and the same per-epoch losses. A second SIGINT during the wind-down ends the process
    /// at once, losing nothing. (CPU backend, one thread: bitwise deterministic, and no device needed.)
    func testSIGINTAndSIGTERMCheckpointMidEpochAndResumeToTheSameModel() throws {
        let dir = try temporaryDirectory(self)
        // 2,400 training rows in batches of 2: 1,200 steps per epoch, so a signal sent when the "training" line
        // appears (the handlers are installed before it is printed) arrives in the middle of an epoch.
        let data = try sample("d.csv", in: dir, rows: 3000, seed: 7)
        let common = [
            "train", "--data", data.path, "--hidden", "8", "--batch-size", "2", "--epochs", "3", "--seed", "5",
            "--backend", "cpu", "--threads", "1",
        ]
        let marker = "training 8 dense-tanh-bn (keras profile)"
        let straightModel = dir.appendingPathComponent("straight.safetensors")
        let straightMetrics = dir.appendingPathComponent("straight.jsonl")
        let straight = try runHRTrain(
            common + ["--model", straightModel.path, "--metrics", straightMetrics.path, "--quiet"])
        XCTAssertEqual(straight.status, 0, straight.err)

        let model = dir.appendingPathComponent("m.safetensors")
        let metrics = dir.appendingPathComponent("m.jsonl")
        let checkpoint = URL(fileURLWithPath: model.path + ".checkpoint")  // the default next to the model
        let first = try interrupted(
            common + ["--model", model.path, "--metrics", metrics.path], after: marker, signals: [SIGINT])
        XCTAssertEqual(first.status, 130, first.err)
        let saved = try Checkpoint.read(from: checkpoint).metadata
        let partial = try XCTUnwrap(saved.state.partialEpoch, "the checkpoint is not mid-epoch: \(first.err)")
        for text in [
            "SIGINT received: finishing the current step",
            "interrupted by SIGINT during epoch \(partial.epoch) of 3, after its step \(partial.steps);",
            "checkpoint written to \(checkpoint.path)", "was not written", "To resume:",
        ] {
            XCTAssertTrue(first.err.contains(text), "\(first.err) lacks \(text)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: model.path), "no model from an interrupted run")
        XCTAssertEqual(saved.state.epoch, partial.epoch - 1)
        XCTAssertTrue((1..<1200).contains(partial.steps), "\(partial.steps)")
        XCTAssertEqual(partial.losses.count, partial.steps)
        XCTAssertEqual(saved.adamStep, 1200 * saved.state.epoch + partial.steps, "the Adam state after that step")

        // The printed command resumes it; SIGTERM stops the resumed run in the middle of an epoch too.
        let resume = try resumeArguments(first.err)
        XCTAssertEqual(Array(resume.suffix(2)), ["--resume", checkpoint.path])
        let second = try interrupted(resume, after: marker, signals: [SIGTERM])
        XCTAssertEqual(second.status, 143, second.err)
        XCTAssertTrue(
            second.err.contains("resuming epoch \(partial.epoch) of 3 after its step \(partial.steps)"), second.err)
        let again = try XCTUnwrap(try Checkpoint.read(from: checkpoint).metadata.state.partialEpoch, second.err)
        XCTAssertTrue(
            second.err.contains(
                "interrupted by SIGTERM during epoch \(again.epoch) of 3, after its step \(again.steps)"),
            second.err)
        XCTAssertTrue(again.epoch > partial.epoch || again.steps > partial.steps, "\(again) after \(partial)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: model.path))

        let last = try runHRTrain(try resumeArguments(second.err) + ["--quiet"])
        XCTAssertEqual(last.status, 0, last.err)
        XCTAssertEqual(try bytes(model), try bytes(straightModel), "resumed twice mid-epoch: not the same model")
        XCTAssertNil(try Checkpoint.read(from: checkpoint).metadata.state.partialEpoch)
        let losses = { (url: URL) in try readMetrics(from: url).map { [$0.trainLoss, $0.validationLoss ?? -1] } }
        XCTAssertEqual(try losses(metrics), try losses(straightMetrics), "the epochs' losses differ")

        // Two signals back to back: the second ends the process at once (status 128 + 2); a checkpoint left
        // behind is whole, and no model was written.
        let hurried = dir.appendingPathComponent("h.safetensors")
        let twice = try interrupted(common + ["--model", hurried.path], after: marker, signals: [SIGINT, SIGINT])
        XCTAssertEqual(twice.status, 130, twice.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: hurried.path))
        let left = URL(fileURLWithPath: hurried.path + ".checkpoint")
        if FileManager.default.fileExists(atPath: left.path) { XCTAssertNoThrow(try Checkpoint.read(from: left)) }
    }

    // MARK: 12-13. Messages that say what is wrong

    func testLineEndingsLongNumbersAndHDF5RootTables() throws {
        let dir = try temporaryDirectory(self)
        // CRLF in a sidecar and in a metrics file; CR-only CSV is named as such.
        let npy = dir.appendingPathComponent("t.npy")
        try writeTable(Table(columnNames: ["a", "b"], rowCount: 1, values: [1, 2]), to: npy)
        try Data("a\r\nb\r\n".utf8).write(to: NPYFormat.columnsURL(for: npy))
        XCTAssertEqual(try readTable(npy).columnNames, ["a", "b"])
        let metrics = dir.appendingPathComponent("m.jsonl")
        let record =
            "{\"epoch\":1,\"train_loss\":2,\"val_loss\":3,\"learning_rate\":0.001,\"seconds\":1,"
            + "\"events_per_second\":5}"
        try Data((record + "\r\n" + record.replacingOccurrences(of: "\"epoch\":1", with: "\"epoch\":2") + "\r\n").utf8)
            .write(to: metrics)
        XCTAssertEqual(try readMetrics(from: metrics).map(\.epoch), [1, 2])
        let crOnly = dir.appendingPathComponent("cr.csv")
        try Data("a,b\r1,2\r3,4\r".utf8).write(to: crOnly)
        XCTAssertThrowsError(try readTable(crOnly)) {
            XCTAssertTrue("\($0)".contains("CR-only (classic Mac) line endings"), "\($0)")
        }
        // A valid number with 75 significant digits.
        let long = dir.appendingPathComponent("long.csv")
        let digits = "1." + String(repeating: "2", count: 74)
        try Data("a\n\(digits)\n".utf8).write(to: long)
        XCTAssertEqual(try readTable(long).values, [Float(digits)!])
        // A root table whose columns differ in length says so, not that `data` is missing.
        let h5 = dir.appendingPathComponent("root.h5")
        try HDF5Format.locked {
            let file = try HDF5File(creating: h5, reportingAs: h5)
            try file.writeFloats("/x", shape: [3], [1, 2, 3])
            try file.writeFloats("/y", shape: [2], [1, 2])
            try file.close()
        }
        XCTAssertThrowsError(try readTable(h5)) {
            XCTAssertTrue("\($0)".contains("cannot be read as a table of 1-D columns"), "\($0)")
            XCTAssertTrue("\($0)".contains("columns of different lengths"), "\($0)")
        }
    }

    func testAFileThatCrashesLibHDF5GivesAnError() throws {
        // Found by the hdf5 fuzz target: four bytes changed in Fuzz/corpus/hdf5/generated.h5 make libhdf5
        // copy out of bounds (a segmentation fault); its reader runs in a child process, so this is an error.
        let seed = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Fuzz/corpus/hdf5/generated.h5")
        var damaged = try bytes(seed)
        for (offset, value) in [(2473, 0o264), (3354, 0o207), (3827, 0o115), (4964, 0o7)] {
            damaged[offset] = UInt8(value)
        }
        let url = try temporaryDirectory(self).appendingPathComponent("damaged.h5")
        try damaged.write(to: url)
        XCTAssertThrowsError(try readTable(url)) { error in
            XCTAssertTrue(error is DataError, "\(error)")
            XCTAssertTrue("\(error)".hasPrefix(url.path), "\(error)")
        }
        XCTAssertEqual(try readTable(seed).rowCount, 4)
    }

    /// Every input in Fuzz/libhdf5-crashers (files on which libhdf5 itself crashes, found by fuzzing) gives a
    /// DataError naming the file, through the reader and through `hrtrain train` (exit status 1, no model).
    func testLibHDF5CrashersFoundByFuzzingGiveAnError() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Fuzz/libhdf5-crashers")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".h5") }
        XCTAssertFalse(files.isEmpty)
        for name in files {
            let url = folder.appendingPathComponent(name)
            XCTAssertThrowsError(try readTable(url)) { error in
                XCTAssertTrue(error is DataError, "\(name): \(error)")
                XCTAssertTrue("\(error)".hasPrefix(url.path), "\(error)")
            }
            let model = try temporaryDirectory(self).appendingPathComponent("model.safetensors")
            let (status, _, err) = try runHRTrain(["train", "--data", url.path, "--epochs", "1", "--model", model.path])
            XCTAssertEqual(status, 1, err)
            XCTAssertTrue(err.contains(url.path), err)
            XCTAssertFalse(FileManager.default.fileExists(atPath: model.path))
        }
    }
}
