import Foundation
import ONNXProto
import XCTest

@testable import HRTrain

/// `hrtrain export --format onnx` against the real thing: the exported graph run by ONNX Runtime (from
/// PyPI, in `.ci/run`'s venv) must match `hrtrain predict --backend reference` for both profiles, both layer
/// orders, with and without target scaling, with batch norm folded and as nodes; `onnx.checker` must accept
/// it; and a model holding something the exporter does not know is refused.
final class ONNXExportTests: XCTestCase {
    /// A model with every parameter and statistic moved off its trivial value: γ, β, biases, running means
    /// and variances (down to 0.05, so that ε matters) drawn from `seed`; the feature scaler fitted on
    /// `features` (38 columns of the generated sample); an optional target scaler like the generated sample's
    /// (σ ≈ 12 GeV), so that the outputs have the recoil's magnitude (tens of GeV).
    static func randomModel(
        profile: NumericsProfile, layout: LayerOrder, scaleTargets: Bool, features: [Float], rows: Int,
        seed: UInt64
    ) -> Model {
        let spec = NetworkSpec(inputSize: 38, hiddenSizes: [23, 17, 9], outputSize: 2, layerOrder: layout)
        var values = Network<ReferenceBackend>.initialValues(spec: spec, profile: profile, seed: seed)
        var rng = SplitMix64(seed: seed &+ 99)
        let layoutOf = ParameterLayout(spec)
        for entry in layoutOf.parameters {
            for i in entry.offset..<entry.offset + entry.count {
                if entry.name.hasSuffix(".gamma") {
                    values.parameters[i] = 1 + 0.4 * rng.normal()
                } else if entry.name.hasSuffix(".beta") || entry.name.hasSuffix(".bias") {
                    values.parameters[i] = 0.3 * rng.normal()
                }
            }
        }
        for entry in layoutOf.runningStatistics {
            for i in entry.offset..<entry.offset + entry.count {
                values.runningStatistics[i] =
                    entry.name.hasSuffix("running_mean") ? 0.3 * rng.normal() : Foundation.exp(rng.uniform(-3, 1))
            }
        }
        let targetScaler = scaleTargets ? StandardScaler(mean: [0.25, -0.5], scale: [11.5, 12.25]) : nil
        return Model(
            metadata: ModelMetadata(
                spec: spec, profile: profile, featureNames: EventGenerator.featureNames,
                targetNames: ["truth_hr_x", "truth_hr_y"]),
            parameters: values.parameters.map(Float.init), runningStatistics: values.runningStatistics.map(Float.init),
            featureScaler: StandardScaler.fit(features, columns: 38, rows: 0..<rows), targetScaler: targetScaler)
    }

    /// Generates `events` events into `dir/events.npy`; returns the file and its 38 feature columns.
    func generateEvents(_ events: Int, in dir: URL) throws -> (url: URL, features: [Float]) {
        let url = dir.appendingPathComponent("events.npy")
        let generated = try runHRTrain(["generate", "--events", "\(events)", "--seed", "11", "--output", url.path])
        XCTAssertEqual(generated.status, 0, generated.err)
        let table = try readTable(url)
        let features = table.selecting(try table.indices(of: EventGenerator.featureNames, file: url.path)).values
        return (url, features)
    }

    /// What the checks below run in Python, for a JSON list of jobs {name, onnx, data, reference, control}:
    /// onnx.checker (full), the input/output signature and metadata, ONNX Runtime on all rows and on one row
    /// (dynamic N), and the errors against hrtrain's reference predictions (and against the control, the same
    /// weights predicted under the other profile, which must differ). One JSON line per job.
    static let runtimeScript = """
        import json, sys
        import numpy as np, onnx, onnxruntime as ort
        for job in json.load(open(sys.argv[1])):
            model = onnx.load(job["onnx"])
            onnx.checker.check_model(model, full_check=True)
            meta = {p.key: p.value for p in model.metadata_props}
            assert model.opset_import[0].version >= 13 and model.doc_string.startswith("hrtrain "), model.doc_string
            columns = open(job["data"] + ".columns").read().split("\\n")
            data = np.load(job["data"])
            features = np.ascontiguousarray(data[:, [columns.index(n) for n in json.loads(meta["feature_names"])]])
            session = ort.InferenceSession(job["onnx"], providers=["CPUExecutionProvider"])
            (i,), (o,) = session.get_inputs(), session.get_outputs()
            assert (i.name, i.type, i.shape[1], o.name, o.type, o.shape[1]) == \\
                ("features", "tensor(float)", 38, "recoil", "tensor(float)", 2), (i, o)
            assert isinstance(i.shape[0], str) and isinstance(o.shape[0], str), (i.shape, o.shape)
            y = session.run(["recoil"], {"features": features.astype(np.float32)})[0]
            one = session.run(["recoil"], {"features": features[3:4].astype(np.float32)})[0]
            assert y.dtype == np.float32 and y.shape == (len(features), 2) and one.shape == (1, 2)
            def errors(path):
                ref = np.load(path).astype(np.float64)
                d = y.astype(np.float64) - ref
                return float(np.linalg.norm(d) / np.linalg.norm(ref)), float(np.abs(d).max())
            rel, mx = errors(job["reference"])
            print(json.dumps({"name": job["name"], "rel_l2": rel, "max_abs": mx,
                "control_rel_l2": errors(job["control"])[0], "single_row_max_abs": float(np.abs(one - y[3:4]).max()),
                "max_abs_output": float(np.abs(y).max()), "profile": meta["profile"],
                "layer_order": meta["layer_order"], "target_scaling": meta["target_scaling"],
                "hrtrain_version": meta["hrtrain_version"], "targets": json.loads(meta["target_names"])}))
        """

    /// The 8 configurations × 2 batch-norm forms, and a model trained for one epoch, exported with the CLI and
    /// run by ONNX Runtime.
    func testONNXRuntimeMatchesReferencePredictions() throws {
        try requirePythonModules(["numpy", "onnx", "onnxruntime"])
        let dir = try temporaryDirectory(self)
        let (data, features) = try generateEvents(300, in: dir)
        var jobs: [[String: String]] = []
        var seed: UInt64 = 1
        for profile in NumericsProfile.allCases {
            for layout in LayerOrder.allCases {
                for scaleTargets in [false, true] {
                    seed += 1
                    let name = "\(profile.rawValue) \(layout.rawValue)\(scaleTargets ? " scaled-targets" : "")"
                    let stem = "\(profile.rawValue)-\(layout.rawValue)-\(scaleTargets)"
                    let model = Self.randomModel(
                        profile: profile, layout: layout, scaleTargets: scaleTargets, features: features, rows: 300,
                        seed: seed)
                    let modelURL = dir.appendingPathComponent("\(stem).safetensors")
                    try model.write(to: modelURL)
                    var other = model
                    other.metadata.profile = profile == .keras ? .pytorch : .keras
                    let otherURL = dir.appendingPathComponent("\(stem)-other-profile.safetensors")
                    try other.write(to: otherURL)
                    for (url, output) in [(modelURL, "\(stem).npy"), (otherURL, "\(stem)-other.npy")] {
                        let predicted = try runHRTrain([
                            "predict", "--model", url.path, "--data", data.path, "--backend", "reference", "--output",
                            dir.appendingPathComponent(output).path, "--quiet",
                        ])
                        XCTAssertEqual(predicted.status, 0, predicted.err)
                    }
                    for form in ONNXBatchNormForm.allCases {
                        let onnx = dir.appendingPathComponent("\(stem)-\(form.rawValue).onnx")
                        let exported = try runHRTrain([
                            "export", "--model", modelURL.path, "--format", "onnx", "--output", onnx.path,
                            "--batch-norm", form.rawValue,
                        ])
                        XCTAssertEqual(exported.status, 0, exported.err)
                        XCTAssertTrue(exported.out.contains("ONNX IR 8, opset 17"), exported.out)
                        jobs.append([
                            "name": "\(name), batch norm \(form.rawValue)", "onnx": onnx.path, "data": data.path,
                            "reference": dir.appendingPathComponent("\(stem).npy").path,
                            "control": dir.appendingPathComponent("\(stem)-other.npy").path,
                        ])
                    }
                }
            }
        }
        // A really trained model (one epoch on the OpenCL device, scaled targets): its metadata holds the
        // training configuration too.
        let trained = dir.appendingPathComponent("trained.safetensors")
        let training = try runHRTrain([
            "train", "--data", data.path, "--model", trained.path, "--hidden", "16,12", "--batch-size", "64",
            "--epochs", "1", "--scale-targets", "--quiet",
        ])
        XCTAssertEqual(training.status, 0, training.err)
        var other = try Model.read(from: trained)
        other.metadata.profile = .pytorch
        try other.write(to: dir.appendingPathComponent("trained-other.safetensors"))
        for (model, output) in [("trained", "trained.npy"), ("trained-other", "trained-other.npy")] {
            let predicted = try runHRTrain([
                "predict", "--model", dir.appendingPathComponent("\(model).safetensors").path, "--data", data.path,
                "--backend", "reference", "--output", dir.appendingPathComponent(output).path, "--quiet",
            ])
            XCTAssertEqual(predicted.status, 0, predicted.err)
        }
        let trainedONNX = dir.appendingPathComponent("trained.onnx")
        let exported = try runHRTrain(["export", "--model", trained.path, "--output", trainedONNX.path])
        XCTAssertEqual(exported.status, 0, exported.err)
        jobs.append([
            "name": "keras dense-tanh-bn scaled-targets, trained 1 epoch, batch norm folded", "onnx": trainedONNX.path,
            "data": data.path, "reference": dir.appendingPathComponent("trained.npy").path,
            "control": dir.appendingPathComponent("trained-other.npy").path,
        ])
        let jobsURL = dir.appendingPathComponent("jobs.json")
        try JSONSerialization.data(withJSONObject: jobs).write(to: jobsURL)
        guard let run = runPython(Self.runtimeScript, [jobsURL.path]) else { return XCTFail("python did not start") }
        XCTAssertEqual(run.status, 0, run.output)
        let results = run.output.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        XCTAssertEqual(results.count, 17, run.output)
        for result in results {
            let name = result["name"] as? String ?? "?"
            let rel = result["rel_l2"] as? Double ?? .nan
            let maxAbs = result["max_abs"] as? Double ?? .nan
            let control = result["control_rel_l2"] as? Double ?? .nan
            print(
                String(
                    format: "ONNX Runtime vs reference, %@: rel. L2 %.2e, max abs %.2e GeV (|y| ≤ %.1f; other ε %.1e)",
                    name, rel, maxAbs, result["max_abs_output"] as? Double ?? .nan, control))
            XCTAssertLessThanOrEqual(rel, 1e-5, name)
            XCTAssertLessThanOrEqual(maxAbs, 1e-4, name)
            XCTAssertGreaterThan(control, 1e-4, "\(name): the other profile's ε must make a visible difference")
            XCTAssertLessThanOrEqual(result["single_row_max_abs"] as? Double ?? .nan, 1e-5, name)
            XCTAssertEqual(result["hrtrain_version"] as? String, HRTrainVersion.string)
            XCTAssertEqual(result["targets"] as? [String], ["truth_hr_x", "truth_hr_y"])
            XCTAssertEqual(result["target_scaling"] as? String == "none", !name.contains("scaled-targets"), name)
        }
    }

    /// The graph's structure, decoded with the generated messages (no Python needed).
    func testExportedGraphStructure() throws {
        let dir = try temporaryDirectory(self)
        let features = (0..<38 * 5).map { Float($0 % 7) }
        for (layout, form, expected) in [
            (
                LayerOrder.denseTanhBatchNorm, ONNXBatchNormForm.folded,
                "Sub Div Gemm Tanh Gemm Tanh Gemm Tanh Gemm Mul Add"
            ),
            (.denseBatchNormTanh, .folded, "Sub Div Gemm Tanh Gemm Tanh Gemm Tanh Gemm Mul Add"),
            (
                .denseTanhBatchNorm, .nodes,
                "Sub Div " + String(repeating: "Gemm Tanh BatchNormalization ", count: 3) + "Gemm Mul Add"
            ),
            (
                .denseBatchNormTanh, .nodes,
                "Sub Div " + String(repeating: "Gemm BatchNormalization Tanh ", count: 3) + "Gemm Mul Add"
            ),
        ] {
            let model = Self.randomModel(
                profile: .pytorch, layout: layout, scaleTargets: true, features: features, rows: 5, seed: 4)
            let url = dir.appendingPathComponent("m.safetensors")
            try model.write(to: url)
            let onnxURL = dir.appendingPathComponent("m.onnx")
            let summary = try ONNXExport.export(modelFile: url, to: onnxURL, batchNorm: form)
            let proto = try Onnx_ModelProto(serializedBytes: try Data(contentsOf: onnxURL))
            XCTAssertEqual(proto.graph.node.map(\.opType).joined(separator: " "), expected)
            XCTAssertEqual(summary.operators.joined(separator: " "), expected)
            XCTAssertEqual(proto.irVersion, 8)
            XCTAssertEqual(proto.opsetImport.map(\.version), [17])
            XCTAssertEqual(proto.graph.input.map(\.name), ["features"])
            XCTAssertEqual(proto.graph.output.map(\.name), ["recoil"])
            XCTAssertEqual(proto.graph.input[0].type.tensorType.shape.dim.map(\.dimParam), ["N", ""])
            XCTAssertEqual(proto.graph.input[0].type.tensorType.shape.dim.map(\.dimValue), [0, 38])
            XCTAssertEqual(proto.graph.output[0].type.tensorType.shape.dim.map(\.dimValue), [0, 2])
            let props = Dictionary(uniqueKeysWithValues: proto.metadataProps.map { ($0.key, $0.value) })
            XCTAssertEqual(props["profile"], "pytorch")
            XCTAssertEqual(props["layer_order"], layout.rawValue)
            XCTAssertEqual(props["batch_norm_epsilon"], "1e-05")
            XCTAssertEqual(props["target_names"], #"["truth_hr_x","truth_hr_y"]"#)
            XCTAssertEqual(props["feature_names"]?.hasPrefix(#"["hr_charged_x","hr_charged_y""#), true)
            XCTAssertTrue(proto.docString.contains("pytorch profile, ε = 1e-05"), proto.docString)
            if form == .nodes {
                let epsilons = proto.graph.node.filter { $0.opType == "BatchNormalization" }.map { $0.attribute[0].f }
                XCTAssertEqual(epsilons, [1e-5, 1e-5, 1e-5])
            }
            // Every node input is the graph input, an initialiser or an earlier node's output.
            var known = Set(["features"] + proto.graph.initializer.map(\.name))
            for node in proto.graph.node {
                for input in node.input { XCTAssertTrue(known.contains(input), "\(node.name) reads \(input)") }
                known.formUnion(node.output)
            }
        }
    }

    /// A model file with a metadata key, spec key or tensor the exporter does not know is refused, naming it;
    /// no ONNX file appears and an existing one is left as it was.
    func testRefusesWhatItCannotExport() throws {
        let dir = try temporaryDirectory(self)
        let features = (0..<38 * 4).map { Float($0 % 5) }
        let model = Self.randomModel(
            profile: .keras, layout: .denseTanhBatchNorm, scaleTargets: false, features: features, rows: 4, seed: 9)
        let good = model.safeTensors()
        func withJSON(_ edit: (inout [String: Any]) -> Void) throws -> SafeTensorsFile {
            var file = good
            var json = try JSONSerialization.jsonObject(with: Data(file.metadata["hrtrain"]!.utf8)) as! [String: Any]
            edit(&json)
            file.metadata["hrtrain"] = String(decoding: try JSONSerialization.data(withJSONObject: json), as: UTF8.self)
            return file
        }
        var extraTensor = good
        extraTensor.tensors["baseline.weight"] = SafeTensor(shape: [2], floats: [1, 1])
        var relabelled = good
        relabelled.metadata["batch_norm_epsilon"] = "1e-05"
        var extraFileKey = good
        extraFileKey.metadata["calibration"] = "isotonic-log-linear"
        let cases: [(SafeTensorsFile, String)] = [
            (
                try withJSON { $0["calibration"] = ["magnitudes": [1, 10], "responses": [0.5, 0.8]] },
                "hrtrain metadata has the key \"calibration\""
            ),
            (
                try withJSON { $0["baseline"] = ["hr_all_x", "hr_all_y"] },
                "hrtrain metadata has the key \"baseline\""
            ),
            (
                try withJSON { json in
                    var spec = json["spec"] as! [String: Any]
                    spec["activation"] = "relu"
                    json["spec"] = spec
                }, "network spec has the key \"activation\""
            ),
            (extraFileKey, "the model file's metadata has the key \"calibration\""),
            (
                try withJSON { json in
                    var inference = json["inference"] as! [String: Any]
                    inference["activation"] = "relu"
                    json["inference"] = inference
                }, "states inference conventions"
            ),
            (
                try withJSON { json in
                    var inference = json["inference"] as! [String: Any]
                    inference["dropout"] = 0.1
                    json["inference"] = inference
                }, "inference conventions have the key \"dropout\""
            ),
            (relabelled, "the model file's metadata says batch_norm_epsilon = 1e-05, not 0.001"),
        ]
        for (file, message) in cases {
            XCTAssertThrowsError(try ONNXExport.checkExportable(file, model: model, path: "m")) {
                XCTAssertTrue("\($0)".contains(message), "\($0)")
                XCTAssertTrue("\($0)".contains("cannot export"), "\($0)")
            }
        }
        XCTAssertThrowsError(try ONNXExport.checkExportable(extraTensor, model: model, path: "m")) {
            XCTAssertTrue("\($0)".contains("the model file has the tensor \"baseline.weight\""), "\($0)")
        }
        XCTAssertNoThrow(try ONNXExport.checkExportable(good, model: model, path: "m"))

        // Through the command line: exit status 1, the reason, no file written or replaced.
        let modelURL = dir.appendingPathComponent("calibrated.safetensors")
        try cases[1].0.write(to: modelURL)
        let onnx = dir.appendingPathComponent("calibrated.onnx")
        for existing in [false, true] {
            if existing { try Data("previous".utf8).write(to: onnx) }
            let result = try runHRTrain(["export", "--model", modelURL.path, "--output", onnx.path])
            XCTAssertEqual(result.status, 1, result.err)
            XCTAssertTrue(result.err.contains("\"baseline\""), result.err)
            XCTAssertTrue(result.err.contains(modelURL.path), result.err)
            XCTAssertEqual(try? Data(contentsOf: onnx), existing ? Data("previous".utf8) : nil)
            XCTAssertEqual(
                try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".tmp-") }, [])
        }
        let missing = try runHRTrain([
            "export", "--model", dir.appendingPathComponent("none").path, "--output", onnx.path,
        ])
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.err.contains("--model"), missing.err)
        let badFormat = try runHRTrain([
            "export", "--model", modelURL.path, "--format", "tflite", "--output", onnx.path,
        ])
        XCTAssertEqual(badFormat.status, 64, badFormat.err)
    }
}
