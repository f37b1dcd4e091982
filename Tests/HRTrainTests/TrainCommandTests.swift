import Foundation
import XCTest

@testable import HRTrain

/// The command line end to end: every bad input of `hrtrain train` (message, exit status, no output files),
/// `hrtrain init`, `predict` and `evaluate`, and the train → save → load → predict round trip.
final class TrainCommandTests: XCTestCase {
    // MARK: Helpers

    /// The header and `rows` lines of a small sample: features f0…f3, the raw recoil hr_all_x/y
    /// (0.7 × truth + noise), pile-up mu, n_pv, and the targets truth_hr_x/y.
    static func sampleLines(rows: Int, seed: UInt64 = 3) -> [String] {
        var rng = SplitMix64(seed: seed)
        var lines = ["f0,f1,f2,f3,hr_all_x,hr_all_y,mu,n_pv,truth_hr_x,truth_hr_y"]
        for _ in 0..<rows {
            let tx = 20 * rng.normal()
            let ty = 20 * rng.normal()
            let hx = 0.7 * tx + 5 * rng.normal()
            let hy = 0.7 * ty + 5 * rng.normal()
            let mu = rng.uniform(5, 60)
            let values = [
                hx + rng.normal(), hy + rng.normal(), rng.normal(), mu / 10, hx, hy, mu, (0.6 * mu).rounded(.down), tx,
                ty,
            ]
            lines.append(values.map { "\(Float($0))" }.joined(separator: ","))
        }
        return lines
    }

    /// Writes `lines` (newline-terminated) to `name` in `dir`.
    @discardableResult
    func write(_ lines: [String], _ name: String, in dir: URL) throws -> URL {
        let url = dir.appendingPathComponent(name)
        try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// Options for a quick training run: tiny network, one epoch.
    static let quick = ["--hidden", "8,8", "--batch-size", "32", "--epochs", "1"]

    /// The paths of the files in `dir` (recursively), with their contents.
    func snapshot(_ dir: URL) throws -> [String: Data] {
        var files: [String: Data] = [:]
        let enumerator = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: [.isRegularFileKey])
        while let url = enumerator?.nextObject() as? URL {
            if try url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile == true {
                files[url.path] = (try? Data(contentsOf: url)) ?? Data()
            }
        }
        return files
    }

    /// Runs `hrtrain train --data data --model dir/model.safetensors --metrics dir/metrics.jsonl` plus `extra`
    /// twice, expecting failure: a non-zero status (`status` when given), every string of `messages` in the
    /// error output, and no file written: first with no outputs present (none may appear), then with
    /// existing model, checkpoint and metrics files (they must stay byte-identical).
    func assertTrainFails(
        data: String, _ extra: [String] = [], in dir: URL, status: Int32? = nil, messages: [String],
        file: StaticString = #filePath,
        line: UInt = #line
    ) throws {
        let model = dir.appendingPathComponent("model.safetensors")
        let outputs = [
            model, dir.appendingPathComponent("model.safetensors.checkpoint"),
            dir.appendingPathComponent("metrics.jsonl"),
        ]
        let arguments = ["train", "--data", data, "--model", model.path, "--metrics", outputs[2].path] + extra
        for existing in [false, true] {
            if existing {
                for (i, url) in outputs.enumerated() { try Data("previous output \(i)\n".utf8).write(to: url) }
            }
            let before = try snapshot(dir)
            let result = try runHRTrain(arguments)
            XCTAssertNotEqual(result.status, 0, "train must fail: \(arguments)", file: file, line: line)
            if let status { XCTAssertEqual(result.status, status, result.err, file: file, line: line) }
            for message in messages {
                XCTAssertTrue(
                    result.err.contains(message), "expected \"\(message)\" in: \(result.err)", file: file, line: line)
            }
            XCTAssertFalse(result.err.contains("Fatal error"), "must not trap: \(result.err)", file: file, line: line)
            XCTAssertEqual(
                try snapshot(dir), before,
                "a failed run must leave the folder as it was (existing outputs: \(existing))", file: file, line: line)
        }
        for url in outputs { try? FileManager.default.removeItem(at: url) }
    }

    /// Runs `hrtrain train` expecting success; returns its standard error.
    @discardableResult
    func train(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let result = try runHRTrain(["train"] + arguments)
        XCTAssertEqual(result.status, 0, result.err, file: file, line: line)
        return result.err
    }

    /// The relative L2 difference ‖a − b‖ / ‖b‖.
    func relativeL2(_ a: [Float], _ b: [Float]) -> Double {
        let difference = zip(a, b).reduce(0.0) { $0 + (Double($1.0) - Double($1.1)) * (Double($1.0) - Double($1.1)) }
        let norm = b.reduce(0.0) { $0 + Double($1) * Double($1) }
        return (difference / norm).squareRoot()
    }

    // MARK: Bad inputs of hrtrain train

    func testTrainRejectsAMissingFile() throws {
        let dir = try temporaryDirectory(self)
        let path = dir.appendingPathComponent("absent.csv").path
        try assertTrainFails(data: path, in: dir, status: 1, messages: ["--data", path, "cannot open: No such file"])
    }

    func testTrainRejectsAPathThatIsNotAFile() throws {
        let dir = try temporaryDirectory(self)
        let folder = dir.appendingPathComponent("folder.csv")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: false)
        try assertTrainFails(
            data: folder.path, in: dir, status: 1, messages: ["--data", folder.path, "not a regular file"])
    }

    func testTrainRejectsAnUnreadableFile() throws {
        if getuid() == 0 {
            throw XCTSkip(
                "running as root: chmod 000 does not block reads (testTrainRejectsAPathThatIsNotAFile covers an "
                    + "unreadable path)"
            )
        }
        let dir = try temporaryDirectory(self)
        let csv = try write(Self.sampleLines(rows: 50), "locked.csv", in: dir)
        try FileManager.default.setAttributes([.posixPermissions: 0], ofItemAtPath: csv.path)
        defer { try? FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: csv.path) }
        try assertTrainFails(data: csv.path, in: dir, status: 1, messages: ["--data", csv.path, "Permission denied"])
    }

    func testTrainRejectsUnknownFeatureAndTargetColumns() throws {
        let dir = try temporaryDirectory(self)
        let csv = try write(Self.sampleLines(rows: 50), "sample.csv", in: dir)
        try assertTrainFails(
            data: csv.path, ["--features", "f0,f9"], in: dir, status: 1,
            messages: ["--features", csv.path, "no column named \"f9\"", "Available columns: f0, f1"])
        try assertTrainFails(
            data: csv.path, ["--targets", "truth_hr_x,truth_hr_z"], in: dir, status: 1,
            messages: ["--targets", csv.path, "no column named \"truth_hr_z\"", "did you mean \"truth_hr_x\""])
    }

    func testTrainRejectsARaggedRow() throws {
        let dir = try temporaryDirectory(self)
        var lines = Self.sampleLines(rows: 50)
        lines[4] = "1,2,3"
        let csv = try write(lines, "ragged.csv", in: dir)
        try assertTrainFails(
            data: csv.path, in: dir, status: 1,
            messages: ["--data", "\(csv.path):5:", "expected 10 fields (as in the header), found 3"])
    }

    func testTrainRejectsANonNumericField() throws {
        let dir = try temporaryDirectory(self)
        var lines = Self.sampleLines(rows: 50)
        lines[7] = "1,2,abc,4,5,6,7,8,9,10"
        let csv = try write(lines, "text.csv", in: dir)
        try assertTrainFails(
            data: csv.path, in: dir, status: 1,
            messages: ["--data", "\(csv.path):8:", "column 3 (\"f2\")", "cannot parse \"abc\""])
    }

    func testTrainRejectsNaNAndInfinityUnlessDropped() throws {
        let dir = try temporaryDirectory(self)
        let clean = Self.sampleLines(rows: 80)
        for (value, column) in [("nan", 2), ("inf", 5), ("-inf", 10)] {
            var lines = clean
            var fields = lines[3].split(separator: ",").map(String.init)
            fields[column - 1] = value
            lines[3] = fields.joined(separator: ",")
            let csv = try write(lines, "nonfinite.csv", in: dir)
            let name = clean[0].split(separator: ",")[column - 1]
            try assertTrainFails(
                data: csv.path, in: dir, status: 1,
                messages: ["--data", "\(csv.path):4:", "column \(column) (\"\(name)\")", "not finite"])
        }

        _ = try SharedDevice.backend()
        var lines = clean
        for (row, value) in [(3, "nan"), (10, "inf"), (20, "-inf")] {
            var fields = lines[row].split(separator: ",").map(String.init)
            fields[row % 10] = value
            lines[row] = fields.joined(separator: ",")
        }
        let csv = try write(lines, "nonfinite.csv", in: dir)
        let model = dir.appendingPathComponent("dropped.safetensors")
        let err = try train(["--data", csv.path, "--model", model.path, "--drop-nonfinite"] + Self.quick)
        XCTAssertTrue(err.contains("warning: --drop-nonfinite: dropped 3 rows with NaN or Inf"), err)
        XCTAssertTrue(FileManager.default.fileExists(atPath: model.path))
    }

    func testTrainRejectsEmptyAndHeaderOnlyFiles() throws {
        let dir = try temporaryDirectory(self)
        let empty = dir.appendingPathComponent("empty.csv")
        try Data().write(to: empty)
        try assertTrainFails(
            data: empty.path, in: dir, status: 1, messages: ["--data", empty.path, "the file is empty"])
        let header = try write([Self.sampleLines(rows: 0)[0]], "header.csv", in: dir)
        try assertTrainFails(
            data: header.path, in: dir, status: 1, messages: ["--data", header.path, "no data rows after the header"])
    }

    func testTrainRejectsTooFewEventsForTheSplit() throws {
        let dir = try temporaryDirectory(self)
        let csv = try write(Self.sampleLines(rows: 2), "two.csv", in: dir)
        try assertTrainFails(
            data: csv.path, ["--validation-split", "0.5"], in: dir, status: 1,
            messages: ["--validation-split", csv.path, "only 1 training row left", "training needs at least 2"])
    }

    func testTrainRejectsAnUnknownExtension() throws {
        let dir = try temporaryDirectory(self)
        let txt = try write(Self.sampleLines(rows: 50), "sample.txt", in: dir)
        try assertTrainFails(
            data: txt.path, in: dir, status: 1,
            messages: ["--data", txt.path, "unknown table format (extension \".txt\")"])
    }

    func testTrainRejectsBadFlagValues() throws {
        let dir = try temporaryDirectory(self)
        let csv = try write(Self.sampleLines(rows: 50), "sample.csv", in: dir)
        let cases: [([String], String)] = [
            (["--epochs", "0"], "--epochs must be at least 1, got 0"),
            (["--batch-size", "1"], "--batch-size must be at least 2"),
            (
                ["--hidden", "2,x"],
                "--hidden must be a comma-separated list of positive sizes such as 256,256,256, got '2,x'"
            ),
        ]
        for (flags, message) in cases {
            try assertTrainFails(data: csv.path, flags, in: dir, status: 64, messages: [message])
        }
    }

    func testTrainWarnsAboutAConstantFeature() throws {
        _ = try SharedDevice.backend()
        let dir = try temporaryDirectory(self)
        let lines = Self.sampleLines(rows: 100).enumerated().map {
            $0.offset == 0 ? $0.element + ",flat" : $0.element + ",2.5"
        }
        let csv = try write(lines, "constant.csv", in: dir)
        let model = dir.appendingPathComponent("model.safetensors")
        let err = try train(["--data", csv.path, "--model", model.path] + Self.quick)
        XCTAssertTrue(err.contains("warning: feature \"flat\" is constant"), err)
        XCTAssertEqual(try Model.read(from: model).metadata.featureNames.last, "flat")
    }

    func testTrainWarnsWhenTheSampleIsSmallerThanOneBatch() throws {
        _ = try SharedDevice.backend()
        let dir = try temporaryDirectory(self)
        let csv = try write(Self.sampleLines(rows: 40), "small.csv", in: dir)
        let model = dir.appendingPathComponent("model.safetensors")
        let err = try train([
            "--data", csv.path, "--model", model.path, "--hidden", "8,8", "--batch-size", "64", "--epochs", "1",
        ])
        XCTAssertTrue(err.contains("warning: --batch-size 64 is larger than the 32 training rows"), err)
        XCTAssertTrue(FileManager.default.fileExists(atPath: model.path))
    }

    // MARK: init

    func testInitWritesAReproducibleModelThatTrainStartsFrom() throws {
        let dir = try temporaryDirectory(self)
        let csv = try write(Self.sampleLines(rows: 120), "sample.csv", in: dir)
        let features = ["--features", "f0,f1,f2,f3,mu", "--hidden", "8,8", "--seed", "7"]
        let a = dir.appendingPathComponent("a.safetensors")
        let b = dir.appendingPathComponent("b.safetensors")
        for url in [a, b] {
            let result = try runHRTrain(["init", "--out", url.path] + features)
            XCTAssertEqual(result.status, 0, result.err)
        }
        XCTAssertEqual(try Data(contentsOf: a), try Data(contentsOf: b), "the same seed gives the same file")
        let initial = try Model.read(from: a)
        let expected = Network<ReferenceBackend>.initialValues(spec: initial.metadata.spec, profile: .keras, seed: 7)
        XCTAssertEqual(initial.parameters, expected.parameters.map(Float.init))
        XCTAssertEqual(initial.featureScaler.mean, [0, 0, 0, 0, 0])
        XCTAssertEqual(initial.featureScaler.scale, [1, 1, 1, 1, 1])
        XCTAssertEqual(initial.metadata.targetNames, ["truth_hr_x", "truth_hr_y"])

        // The default features are the generated sample's; --scaler-from fits the scaler on a file.
        let generated = dir.appendingPathComponent("generated.safetensors")
        XCTAssertEqual(try runHRTrain(["init", "--out", generated.path, "--hidden", "4"]).status, 0)
        XCTAssertEqual(try Model.read(from: generated).metadata.featureNames, EventGenerator.featureNames)
        let scaled = dir.appendingPathComponent("scaled.safetensors")
        let fitted = try runHRTrain(["init", "--out", scaled.path, "--scaler-from", csv.path] + features)
        XCTAssertEqual(fitted.status, 0, fitted.err)
        let table = try readTable(csv, options: ReadOptions(columns: ["f0", "f1", "f2", "f3", "mu"]))
        let scaler = StandardScaler.fit(table.values, columns: 5, rows: 0..<table.rowCount)
        XCTAssertEqual(try Model.read(from: scaled).featureScaler.mean, scaler.mean)
        XCTAssertEqual(try Model.read(from: scaled).featureScaler.scale, scaler.scale)
        let missing = try runHRTrain(["init", "--out", scaled.path, "--features", "f0,nope", "--scaler-from", csv.path])
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.err.contains("--scaler-from \(csv.path): no column named \"nope\""), missing.err)
        let both = try runHRTrain(["init", "--out", scaled.path, "--features", "f0", "--inputs", "3"])
        XCTAssertEqual(both.status, 64)
        XCTAssertTrue(both.err.contains("give either --features or --inputs"), both.err)

        // train --init-from starts from exactly the weights train draws itself from the same seed.
        _ = try SharedDevice.backend()
        let common = [
            "--data", csv.path, "--features", "f0,f1,f2,f3,mu", "--batch-size", "32", "--epochs", "2", "--seed", "7",
            "--quiet",
        ]
        let fromInit = dir.appendingPathComponent("from-init.safetensors")
        let fromSeed = dir.appendingPathComponent("from-seed.safetensors")
        try train(common + ["--model", fromInit.path, "--init-from", a.path])
        try train(common + ["--model", fromSeed.path, "--hidden", "8,8"])
        let x = try Model.read(from: fromInit)
        let y = try Model.read(from: fromSeed)
        XCTAssertEqual(x.metadata.epochsTrained, 2)
        XCTAssertNotEqual(x.parameters, initial.parameters, "training moved the weights")
        XCTAssertEqual(x.parameters.map(\.bitPattern), y.parameters.map(\.bitPattern))
        XCTAssertEqual(x.runningStatistics.map(\.bitPattern), y.runningStatistics.map(\.bitPattern))

        // What a Python user needs is in the file: the conventions, and where the weights came from.
        XCTAssertEqual(initial.metadata.initialization?.seed, 7)
        XCTAssertEqual(x.metadata.initialization?.file, a.path)
        XCTAssertEqual(x.metadata.initialization?.seed, 7)
        XCTAssertEqual(y.metadata.initialization?.seed, 7)
        let conventions = try XCTUnwrap(x.metadata.inference)
        XCTAssertEqual(conventions.batchNormEpsilon, 1e-3)
        XCTAssertEqual(conventions.batchNormMomentum, 0.99)
        XCTAssertEqual(conventions.activation, "tanh")
        XCTAssertEqual(conventions.layerOrder, "dense -> tanh -> batch norm")
        XCTAssertTrue(conventions.weightLayout.hasPrefix("[in, out], row-major"))
        XCTAssertEqual(conventions.featureScaling, "z = (x - feature_scaler.mean) / feature_scaler.scale")
        let header = try SafeTensorsFile.read(from: fromInit).metadata
        XCTAssertEqual(header["batch_norm_epsilon"], "0.001")
        XCTAssertEqual(header["activation"], "tanh")

        // --init-from with an architecture or profile that disagrees with the model is an error naming the flag.
        for (flags, message) in [
            (["--hidden", "8,4"], "--hidden 8,4 disagrees with the initial model \(a.path) (8,8)"),
            (["--layout", "dense-bn-tanh"], "--layout dense-bn-tanh disagrees with the initial model"),
            (["--profile", "pytorch"], "--profile pytorch disagrees with the initial model"),
        ] {
            let refused = try runHRTrain(
                ["train"] + common + [
                    "--model", dir.appendingPathComponent("no.safetensors").path, "--init-from", a.path,
                ]
                    + flags)
            XCTAssertEqual(refused.status, 1, refused.err)
            XCTAssertTrue(refused.err.contains("error: " + message), refused.err)
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("no.safetensors").path))
        }
    }

    // MARK: predict

    func testPredictWritesCSVNPYAndHDF5() throws {
        let dir = try temporaryDirectory(self)
        let csv = try write(Self.sampleLines(rows: 75), "sample.csv", in: dir)
        let model = dir.appendingPathComponent("model.safetensors")
        XCTAssertEqual(
            try runHRTrain(["init", "--out", model.path, "--features", "f0,f1,f2,f3", "--hidden", "8,8"]).status, 0)
        var tables: [Table] = []
        for name in ["p.csv", "p.npy", "p.h5"] {
            let output = dir.appendingPathComponent(name)
            let result = try runHRTrain([
                "predict", "--model", model.path, "--data", csv.path, "--output", output.path, "--backend", "reference",
                "--batch-size", "16",
            ])
            XCTAssertEqual(result.status, 0, result.err)
            XCTAssertTrue(result.err.contains("predicted 75 events in"), result.err)
            XCTAssertTrue(result.err.contains("events/s"), result.err)
            let table = try readTable(output)
            XCTAssertEqual(table.columnNames, ["truth_hr_x", "truth_hr_y"], name)
            XCTAssertEqual(table.rowCount, 75, name)
            tables.append(table)
        }
        XCTAssertEqual(tables[0], tables[1])
        XCTAssertEqual(tables[0], tables[2])
        let features = try readTable(csv, options: ReadOptions(columns: ["f0", "f1", "f2", "f3"]))
        let direct = try Model.read(from: model).predict(
            features.values, rows: 75, on: ReferenceBackend(), batchSize: 16)
        XCTAssertEqual(tables[0].values, direct, "rows in input order, the library's values")

        let quiet = try runHRTrain([
            "predict", "--model", model.path, "--data", csv.path, "--output", dir.appendingPathComponent("q.csv").path,
            "--backend", "reference", "--quiet",
        ])
        XCTAssertEqual(quiet.status, 0, quiet.err)
        XCTAssertEqual(quiet.err, "")
    }

    func testPredictNamesMissingFeatureColumns() throws {
        let dir = try temporaryDirectory(self)
        let csv = try write(Self.sampleLines(rows: 20), "sample.csv", in: dir)
        let model = dir.appendingPathComponent("model.safetensors")
        XCTAssertEqual(
            try runHRTrain(["init", "--out", model.path, "--features", "f0,f1,f2,f9", "--hidden", "4"]).status, 0)
        let output = dir.appendingPathComponent("p.csv")
        let result = try runHRTrain([
            "predict", "--model", model.path, "--data", csv.path, "--output", output.path, "--backend", "reference",
        ])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(
            result.err.contains(
                "--data \(csv.path): the model \(model.path) needs a feature column that the data lacks: no column "
                    + "named \"f9\""
            ), result.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output.path))
        let badExtension = try runHRTrain([
            "predict", "--model", model.path, "--data", csv.path, "--output", dir.appendingPathComponent("p.txt").path,
        ])
        XCTAssertNotEqual(badExtension.status, 0)
        XCTAssertTrue(badExtension.err.contains("--output"), badExtension.err)
    }

    func testPredictRejectsCorruptedModelFiles() throws {
        let dir = try temporaryDirectory(self)
        let csv = try write(Self.sampleLines(rows: 20), "sample.csv", in: dir)
        let good = dir.appendingPathComponent("good.safetensors")
        XCTAssertEqual(
            try runHRTrain(["init", "--out", good.path, "--features", "f0,f1,f2,f3", "--hidden", "8,8"]).status, 0)
        let bytes = try Data(contentsOf: good)
        var garbledHeader = bytes
        garbledHeader.replaceSubrange(8..<24, with: Data(repeating: UInt8(ascii: "#"), count: 16))
        let foreign = dir.appendingPathComponent("foreign.safetensors")
        try SafeTensorsFile(tensors: ["w": SafeTensor(shape: [2], floats: [1, 2])]).write(to: foreign)
        let cases: [(String, Data?, String)] = [
            ("truncated", bytes.prefix(bytes.count / 2), "truncated"),
            ("short", bytes.prefix(5), "shorter than the 8-byte header length"),
            ("garbled", garbledHeader, "header"),
            ("empty", Data(), "safetensors"),
            ("foreign", nil, "not an hrtrain model file"),
        ]
        for (name, contents, message) in cases {
            let model = contents == nil ? foreign : dir.appendingPathComponent("\(name).safetensors")
            if let contents { try contents.write(to: model) }
            let output = dir.appendingPathComponent("\(name).csv")
            for backend in ["reference", "opencl"] {
                let result = try runHRTrain([
                    "predict", "--model", model.path, "--data", csv.path, "--output", output.path, "--backend", backend,
                ])
                XCTAssertEqual(result.status, 1, "\(name): \(result.err)")
                XCTAssertTrue(result.err.contains("error: --model \(model.path): "), "\(name): \(result.err)")
                XCTAssertTrue(result.err.contains(message), "\(name): \(result.err)")
                XCTAssertFalse(FileManager.default.fileExists(atPath: output.path), name)
            }
        }
    }

    // MARK: evaluate

    func testEvaluateJSONDecodesWithFiniteFigures() throws {
        let dir = try temporaryDirectory(self)
        let csv = try write(Self.sampleLines(rows: 400, seed: 9), "sample.csv", in: dir)
        let model = dir.appendingPathComponent("model.safetensors")
        XCTAssertEqual(
            try runHRTrain([
                "init", "--out", model.path, "--features", "f0,f1,f2,f3", "--hidden", "8,8", "--scaler-from", csv.path,
            ]).status, 0)
        let arguments = [
            "evaluate", "--model", model.path, "--data", csv.path, "--backend", "reference", "--compare",
            "hr_all_x,hr_all_y", "--compare", "f0,f1",
        ]
        let result = try runHRTrain(arguments + ["--json"])
        XCTAssertEqual(result.status, 0, result.err)
        let evaluation = try Evaluation.jsonDecoder().decode(Evaluation.self, from: Data(result.out.utf8))
        XCTAssertEqual(evaluation.events, 400)
        XCTAssertEqual(evaluation.targetNames, ["truth_hr_x", "truth_hr_y"])
        XCTAssertEqual(evaluation.estimates.map(\.name), ["network", "hr_all", "f0,f1"])

        let table = try readTable(csv)
        for estimate in evaluation.estimates {
            XCTAssertTrue(estimate.loss.isFinite && estimate.rmse.allSatisfy(\.isFinite), estimate.name)
            let summary = try XCTUnwrap(estimate.summary)
            XCTAssertEqual(summary.count, 400)
            for x in [
                summary.response, summary.parallelRMS, summary.perpendicularRMS, summary.rmseX, summary.rmseY,
                summary.rmse,
            ] {
                XCTAssertTrue(x.isFinite, "\(estimate.name): \(summary)")
            }
            XCTAssertEqual(estimate.binned.map(\.binning.variable), ["|u_t|", "mu", "n_pv"])
            for binned in estimate.binned {
                XCTAssertEqual(
                    binned.bins.map(\.count).reduce(0, +), 400,
                    "every event falls in one \(binned.binning.variable) bin")
                for bin in binned.bins where bin.count >= 2 {
                    let figures = [
                        bin.meanTruthMagnitude, bin.response, bin.responseError, bin.parallelBias, bin.parallelRMS,
                        bin.parallelRMSError,
                        bin.parallelWidth, bin.perpendicularMean, bin.perpendicularRMS, bin.perpendicularRMSError,
                        bin.perpendicularWidth,
                    ]
                    XCTAssertTrue(figures.allSatisfy(\.isFinite), "\(estimate.name) \(binned.binning.variable) \(bin)")
                }
            }
        }
        // The raw recoil's loss is the MSE over all elements in target units, as in training.
        let raw = table.selecting(try table.indices(of: ["hr_all_x", "hr_all_y"], file: csv.path)).values
        let truth = table.selecting(try table.indices(of: ["truth_hr_x", "truth_hr_y"], file: csv.path)).values
        let mse =
            zip(raw, truth).reduce(0.0) { $0 + (Double($1.0) - Double($1.1)) * (Double($1.0) - Double($1.1)) }
            / Double(raw.count)
        XCTAssertEqual(evaluation.estimates[1].loss, mse, accuracy: 1e-9 * mse)
        XCTAssertEqual(
            evaluation.estimates[1].summary!.response, 0.7, accuracy: 0.05, "the sample's raw recoil has response 0.7")

        let text = try runHRTrain(arguments)
        XCTAssertEqual(text.status, 0, text.err)
        for part in [
            "loss (MSE)", "RMSE x", "σ(u∥−|u_t|)", "hr_all_x,hr_all_y", "in bins of |u_t| [GeV]", "in bins of mu",
            "in bins of n_pv", "[100, ∞)",
        ] {
            XCTAssertTrue(text.out.contains(part), "missing \(part) in:\n\(text.out)")
        }
        let wrongArity = try runHRTrain([
            "evaluate", "--model", model.path, "--data", csv.path, "--backend", "reference", "--compare", "hr_all_x",
        ])
        XCTAssertEqual(wrongArity.status, 1)
        XCTAssertTrue(
            wrongArity.err.contains("--compare hr_all_x gives 1 column; give one per target of the model"),
            wrongArity.err)
        let unknown = try runHRTrain([
            "evaluate", "--model", model.path, "--data", csv.path, "--backend", "reference", "--compare",
            "hr_all_x,hr_al_y",
        ])
        XCTAssertEqual(unknown.status, 1)
        XCTAssertTrue(
            unknown.err.contains("--compare \(csv.path): no column named \"hr_al_y\"; did you mean \"hr_all_y\"?"),
            unknown.err)
    }

    // MARK: Round trip

    /// Train on OpenCL → save → load → predict on the Double reference: agrees with the device's prediction
    /// within Float32 accuracy (relative L2 ≤ 1e-5).
    func testTrainSaveLoadPredictAgreesAcrossBackends() throws {
        _ = try SharedDevice.backend()
        let dir = try temporaryDirectory(self)
        let csv = try write(Self.sampleLines(rows: 300, seed: 4), "sample.csv", in: dir)
        let model = dir.appendingPathComponent("model.safetensors")
        try train([
            "--data", csv.path, "--model", model.path, "--features", "f0,f1,f2,f3,mu,n_pv", "--hidden", "16,16",
            "--batch-size", "32", "--epochs", "3", "--scale-targets", "--quiet",
        ])

        let deviceOutput = dir.appendingPathComponent("opencl.csv")
        let referenceOutput = dir.appendingPathComponent("reference.csv")
        let onDevice = try runHRTrain([
            "predict", "--model", model.path, "--data", csv.path, "--output", deviceOutput.path, "--batch-size", "64",
        ])
        XCTAssertEqual(onDevice.status, 0, onDevice.err)
        let onReference = try runHRTrain([
            "predict", "--model", model.path, "--data", csv.path, "--output", referenceOutput.path, "--backend",
            "reference",
        ])
        XCTAssertEqual(onReference.status, 0, onReference.err)

        let loaded = try Model.read(from: model)
        XCTAssertNotNil(loaded.targetScaler)
        let features = try readTable(csv, options: ReadOptions(columns: loaded.metadata.featureNames))
        let reference = try loaded.predict(features.values, rows: features.rowCount, on: ReferenceBackend())
        let device = try readTable(deviceOutput)
        XCTAssertEqual(device.rowCount, 300)
        XCTAssertEqual(
            try readTable(referenceOutput).values, reference, "the CLI's reference prediction is the library's")
        let error = relativeL2(device.values, reference)
        XCTAssertLessThanOrEqual(error, 1e-5, "OpenCL (Float32) vs reference (Double) prediction: relative L2 \(error)")
        XCTAssertTrue(device.values.allSatisfy(\.isFinite))
    }
}
