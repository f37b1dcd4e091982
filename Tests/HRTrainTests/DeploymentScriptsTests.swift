import Foundation
import XCTest

@testable import HRTrain

/// The Python scripts of the deployment path, run for real (Python packages from `.ci/run`'s venv):
/// `scripts/predict-numpy.py` against `hrtrain predict --backend reference`, and `scripts/root-to-hdf5.py`
/// on a ROOT file written by uproot, then trained on.
final class DeploymentScriptsTests: XCTestCase {
    /// Predictions in an `.npy` file, as Double.
    func predictions(_ url: URL) throws -> [Double] { try readTable(url).values.map(Double.init) }

    /// The numpy-only inference reproduces `hrtrain predict --backend reference` for both profiles, both
    /// layer orders, with and without target scaling (npy and CSV input), and refuses unknown metadata.
    func testNumpyPredictionMatchesReference() throws {
        try requirePythonModules(["numpy", "safetensors"])
        let dir = try temporaryDirectory(self)
        let data = dir.appendingPathComponent("events.npy")
        let generated = try runHRTrain(["generate", "--events", "200", "--seed", "5", "--output", data.path])
        XCTAssertEqual(generated.status, 0, generated.err)
        let csv = dir.appendingPathComponent("events.csv")
        XCTAssertEqual(try runHRTrain(["generate", "--events", "200", "--seed", "5", "--output", csv.path]).status, 0)
        let table = try readTable(data)
        let features = table.selecting(try table.indices(of: EventGenerator.featureNames, file: data.path)).values
        let script = repositoryRoot.appendingPathComponent("scripts/predict-numpy.py")
        var seed: UInt64 = 20
        for profile in NumericsProfile.allCases {
            for layout in LayerOrder.allCases {
                for scaleTargets in [false, true] {
                    seed += 1
                    let name = "\(profile.rawValue) \(layout.rawValue) scale-targets \(scaleTargets)"
                    let model = ONNXExportTests.randomModel(
                        profile: profile, layout: layout, scaleTargets: scaleTargets, features: features, rows: 200,
                        seed: seed)
                    let modelURL = dir.appendingPathComponent("m\(seed).safetensors")
                    try model.write(to: modelURL)
                    let reference = dir.appendingPathComponent("ref\(seed).npy")
                    let predicted = try runHRTrain([
                        "predict", "--model", modelURL.path, "--data", data.path, "--backend", "reference",
                        "--output", reference.path, "--quiet",
                    ])
                    XCTAssertEqual(predicted.status, 0, predicted.err)
                    let input = seed % 2 == 0 ? csv : data
                    let output = dir.appendingPathComponent("numpy\(seed).npy")
                    let run = runPythonFile(script, [modelURL.path, input.path, output.path])
                    XCTAssertEqual(run?.status, 0, run?.output ?? "python did not start")
                    let ours = try predictions(reference)
                    let theirs = try predictions(output)
                    XCTAssertEqual(try readTable(output).columnNames, ["truth_hr_x", "truth_hr_y"])
                    XCTAssertEqual(ours.count, theirs.count, name)
                    let difference = zip(ours, theirs).map { abs($0 - $1) }.max() ?? .nan
                    let norm =
                        zip(ours, theirs).map { ($0 - $1) * ($0 - $1) }.reduce(0, +).squareRoot()
                        / ours.map { $0 * $0 }.reduce(0, +).squareRoot()
                    print(String(format: "numpy vs reference, %@: rel. L2 %.2e, max abs %.2e", name, norm, difference))
                    XCTAssertLessThanOrEqual(norm, 1e-6, name)
                    XCTAssertLessThanOrEqual(difference, 1e-5, name)
                }
            }
        }
        // A model with a transform the script does not know, or other stated conventions, is refused, and
        // nothing is written.
        let original = try SafeTensorsFile.read(from: dir.appendingPathComponent("m21.safetensors"))
        for (key, edit) in [
            ("outputTransform", { (json: inout [String: Any]) in json["outputTransform"] = "exp" }),
            (
                "isotonic-spline",
                { (json: inout [String: Any]) in
                    json["calibration"] = [
                        "method": "isotonic-spline", "magnitudes": [1, 10], "responses": [0.5, 0.8],
                    ]
                }
            ),
            (
                "activation",
                { (json: inout [String: Any]) in
                    var inference = json["inference"] as! [String: Any]
                    inference["activation"] = "relu"
                    json["inference"] = inference
                }
            ),
        ] {
            var file = original
            var json = try JSONSerialization.jsonObject(with: Data(file.metadata["hrtrain"]!.utf8)) as! [String: Any]
            edit(&json)
            file.metadata["hrtrain"] = String(decoding: try JSONSerialization.data(withJSONObject: json), as: UTF8.self)
            let refused = dir.appendingPathComponent("refused-\(key).safetensors")
            try file.write(to: refused)
            let output = dir.appendingPathComponent("refused-\(key).npy")
            let run = runPythonFile(script, [refused.path, data.path, output.path])
            XCTAssertEqual(run?.status, 1, run?.output ?? "")
            XCTAssertTrue(
                run?.output.contains(key) == true && run?.output.contains("refusing") == true, run?.output ?? "")
            XCTAssertFalse(FileManager.default.fileExists(atPath: output.path))
        }
    }

    /// Residual models (baseline) and calibrated models (hand-made knots, a fit by `hrtrain calibrate`, the
    /// newer method name with its provenance keys), from their metadata alone, against `hrtrain predict
    /// --backend reference`, with and without `--no-calibration`.
    func testNumpyPredictionWithBaselineAndCalibration() throws {
        try requirePythonModules(["numpy", "safetensors"])
        let dir = try temporaryDirectory(self)
        let data = dir.appendingPathComponent("events.npy")
        let generated = try runHRTrain(["generate", "--events", "300", "--seed", "6", "--output", data.path])
        XCTAssertEqual(generated.status, 0, generated.err)
        let table = try readTable(data)
        let features = table.selecting(try table.indices(of: EventGenerator.featureNames, file: data.path)).values
        let script = repositoryRoot.appendingPathComponent("scripts/predict-numpy.py")
        func model(_ profile: NumericsProfile, _ layout: LayerOrder, seed: UInt64) -> Model {
            ONNXExportTests.randomModel(
                profile: profile, layout: layout, scaleTargets: true, features: features, rows: 300, seed: seed)
        }
        var residual = model(.keras, .denseTanhBatchNorm, seed: 41)
        residual.metadata.baseline = ["hr_all_x", "hr_all_y"]
        var calibrated = model(.pytorch, .denseBatchNormTanh, seed: 42)
        calibrated.metadata.calibration = ONNXExportTests.calibration([2, 4, 7, 11], [0.5, 0.62, 0.8, 0.9])
        var both = model(.pytorch, .denseTanhBatchNorm, seed: 43)
        both.metadata.baseline = ["hr_charged_x", "hr_charged_y"]
        both.metadata.calibration = ONNXExportTests.calibration([5, 20, 40], [0.6, 0.85, 0.95])
        both.metadata.calibration!.method = "inverted-log-linear"
        var urls: [(String, URL)] = []
        for (name, m) in [("baseline", residual), ("calibration", calibrated), ("baseline and calibration", both)] {
            let url = dir.appendingPathComponent("\(urls.count).safetensors")
            try m.write(to: url)
            urls.append((name, url))
        }
        // The newer fit's provenance keys (notes-calibration.md) in the last file.
        var file = try SafeTensorsFile.read(from: urls[2].1)
        var json = try JSONSerialization.jsonObject(with: Data(file.metadata["hrtrain"]!.utf8)) as! [String: Any]
        var stored = json["calibration"] as! [String: Any]
        stored["binning"] = "truth"
        stored["iterations"] = 4
        json["calibration"] = stored
        file.metadata["hrtrain"] = String(decoding: try JSONSerialization.data(withJSONObject: json), as: UTF8.self)
        try file.write(to: urls[2].1)
        let fitted = dir.appendingPathComponent("fitted.safetensors")
        let calibration = try runHRTrain([
            "calibrate", "--model", urls[0].1.path, "--data", data.path, "--backend", "reference",
            "--binning", "predicted", "--bins", "6", "--min-events-per-bin", "20", "--output", fitted.path, "--quiet",
        ])
        XCTAssertEqual(calibration.status, 0, calibration.err)
        urls.append(("baseline, `hrtrain calibrate`", fitted))
        for (index, (name, url)) in urls.enumerated() {
            for extra in [[], ["--no-calibration"]] {
                let label = "\(name)\(extra.isEmpty ? "" : ", --no-calibration")"
                let reference = dir.appendingPathComponent("ref\(index)\(extra.count).npy")
                let predicted = try runHRTrain(
                    [
                        "predict", "--model", url.path, "--data", data.path, "--backend", "reference", "--output",
                        reference.path, "--quiet",
                    ] + extra)
                XCTAssertEqual(predicted.status, 0, predicted.err)
                let output = dir.appendingPathComponent("numpy\(index)\(extra.count).npy")
                let run = runPythonFile(script, extra + [url.path, data.path, output.path])
                XCTAssertEqual(run?.status, 0, run?.output ?? "python did not start")
                let ours = try predictions(reference)
                let theirs = try predictions(output)
                XCTAssertEqual(ours.count, theirs.count, label)
                let difference = zip(ours, theirs).map { abs($0 - $1) }.max() ?? .nan
                let norm =
                    zip(ours, theirs).map { ($0 - $1) * ($0 - $1) }.reduce(0, +).squareRoot()
                    / ours.map { $0 * $0 }.reduce(0, +).squareRoot()
                print(String(format: "numpy vs reference, %@: rel. L2 %.2e, max abs %.2e", label, norm, difference))
                XCTAssertLessThanOrEqual(norm, 1e-6, label)
                XCTAssertLessThanOrEqual(difference, 1e-5, label)
            }
            // With a calibration, --no-calibration must make a difference (the script does apply it).
            if name.contains("calibrat") {
                let with = try predictions(dir.appendingPathComponent("numpy\(index)0.npy"))
                let without = try predictions(dir.appendingPathComponent("numpy\(index)1.npy"))
                XCTAssertGreaterThan(zip(with, without).map { abs($0 - $1) }.max() ?? 0, 0.1, name)
            }
        }
    }

    /// uproot writes a TTree with scalar and jagged branches; the converter takes the scalars and the two
    /// leading jets (zero-padded); hrtrain reads the HDF5 file with the same values and trains on it.
    func testROOTTreeConvertsAndTrains() throws {
        try requirePythonModules(["numpy", "uproot", "awkward", "h5py"])
        let dir = try temporaryDirectory(self)
        let root = dir.appendingPathComponent("events.root")
        let expected = dir.appendingPathComponent("expected.npy")
        // The expected table is built by plain Python loops, independently of the converter.
        let writer = """
            import sys, numpy as np, awkward as ak, uproot
            rng = np.random.default_rng(5)
            n = 300
            njet = rng.poisson(1.2, n)
            tx, ty = rng.normal(0, 15, n), rng.normal(0, 15, n)
            px = [list(rng.normal(0, 20, k).astype(np.float32)) for k in njet]
            py = [list(rng.normal(0, 20, k).astype(np.float32)) for k in njet]
            met_x = (0.7 * tx + rng.normal(0, 5, n)).astype(np.float32)
            met_y = (0.7 * ty + rng.normal(0, 5, n)).astype(np.float32)
            n_pv = rng.integers(1, 30, n).astype(np.int32)
            with uproot.recreate(sys.argv[1]) as f:
                f.mktree("events", {"met_x": "float32", "met_y": "float32", "n_pv": "int32",
                                    "jet_px": "var * float32", "jet_py": "var * float32",
                                    "truth_x": "float64", "truth_y": "float64"})
                for lo, hi in ((0, 128), (128, n)):  # two baskets
                    f["events"].extend({"met_x": met_x[lo:hi], "met_y": met_y[lo:hi], "n_pv": n_pv[lo:hi],
                                        "jet_px": ak.Array(px[lo:hi]), "jet_py": ak.Array(py[lo:hi]),
                                        "truth_x": tx[lo:hi], "truth_y": ty[lo:hi]})
            rows = []
            for i in range(n):
                jets = [(px[i][j] if j < len(px[i]) else 0.0, py[i][j] if j < len(py[i]) else 0.0) for j in range(2)]
                rows.append([met_x[i], met_y[i], n_pv[i], tx[i], ty[i], jets[0][0], jets[0][1], jets[1][0], jets[1][1]])
            np.save(sys.argv[2], np.array(rows, dtype=np.float32))
            print("events with more than 2 jets:", int((njet > 2).sum()), "without jets:", int((njet == 0).sum()))
            """
        let written = runPython(writer, [root.path, expected.path])
        XCTAssertEqual(written?.status, 0, written?.output ?? "python did not start")
        let h5 = dir.appendingPathComponent("events.h5")
        let converted = runPythonFile(
            repositoryRoot.appendingPathComponent("scripts/root-to-hdf5.py"),
            [
                root.path, h5.path, "--tree", "events", "--scalar", "met_x,met_y,n_pv,truth_x,truth_y", "--leading",
                "jet_px,jet_py:2:jet{i}_px,jet{i}_py",
            ])
        XCTAssertEqual(converted?.status, 0, converted?.output ?? "python did not start")
        XCTAssertTrue(converted?.output.contains("300 entries x 9 columns") == true, converted?.output ?? "")

        let table = try readTable(h5)
        let columns = ["met_x", "met_y", "n_pv", "truth_x", "truth_y", "jet1_px", "jet1_py", "jet2_px", "jet2_py"]
        XCTAssertEqual(table.columnNames, columns)
        XCTAssertEqual(table.rowCount, 300)
        XCTAssertEqual(table.values, try readTable(expected).values)

        let model = dir.appendingPathComponent("model.safetensors")
        let trained = try runHRTrain([
            "train", "--data", h5.path, "--targets", "truth_x,truth_y", "--model", model.path, "--hidden", "8,8",
            "--batch-size", "64", "--epochs", "1",
        ])
        XCTAssertEqual(trained.status, 0, trained.err)
        XCTAssertTrue(trained.err.contains("epoch 1/1"), trained.err)
        let metadata = try Model.read(from: model).metadata
        XCTAssertEqual(metadata.featureNames, ["met_x", "met_y", "n_pv", "jet1_px", "jet1_py", "jet2_px", "jet2_py"])
        XCTAssertEqual(metadata.targetNames, ["truth_x", "truth_y"])

        // A branch that does not exist: a message naming it, exit status 1, no output file.
        let bad = dir.appendingPathComponent("bad.h5")
        let failed = runPythonFile(
            repositoryRoot.appendingPathComponent("scripts/root-to-hdf5.py"),
            [root.path, bad.path, "--tree", "events", "--scalar", "met_z"])
        XCTAssertEqual(failed?.status, 1, failed?.output ?? "")
        XCTAssertTrue(failed?.output.contains("has no branch met_z") == true, failed?.output ?? "")
        XCTAssertFalse(FileManager.default.fileExists(atPath: bad.path))
    }
}
