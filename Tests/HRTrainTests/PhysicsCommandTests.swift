import Foundation
import XCTest

@testable import HRTrain

/// `train --baseline --flatten-target-magnitude`, `calibrate`, and `predict`/`evaluate` applying them, end to end.
final class PhysicsCommandTests: XCTestCase {
    func testResidualFlattenedTrainingCalibrateAndPredict() throws {
        let dir = try temporaryDirectory(self)
        let sample = dir.appendingPathComponent("events.csv")
        let calibrationSample = dir.appendingPathComponent("calibration.csv")
        for (url, seed, events) in [(sample, "5", "700"), (calibrationSample, "6", "600")] {
            let g = try runHRTrain(["generate", "--events", events, "--seed", seed, "--output", url.path, "-q"])
            XCTAssertEqual(g.status, 0, g.err)
        }
        let model = dir.appendingPathComponent("model.safetensors")
        let train = try runHRTrain([
            "train", "--data", sample.path, "--model", model.path, "--epochs", "2", "--hidden", "8,8",
            "--batch-size", "100", "--baseline", "hr_all_x,hr_all_y", "--flatten-target-magnitude", "0,10,20,50",
            "--flatten-power", "0.5", "--test-fraction", "1/7",
        ])
        XCTAssertEqual(train.status, 0, train.err)
        let trained = try Model.read(from: model)
        XCTAssertEqual(trained.metadata.baseline, ["hr_all_x", "hr_all_y"])
        XCTAssertEqual(trained.metadata.formatVersion, 2)
        XCTAssertEqual(trained.metadata.training?.flattening?.power, 0.5)
        XCTAssertTrue(train.out.contains("test loss (MSE, 100 events)"), train.out)

        // Too small a sample for the bins: refused, nothing written.
        let calibrated = dir.appendingPathComponent("calibrated.safetensors")
        let refused = try runHRTrain([
            "calibrate", "--model", model.path, "--data", calibrationSample.path, "--output", calibrated.path,
            "--truth-bins", "0,5,10,15,20,30,40,50,70,100", "--min-events-per-bin", "100", "--backend", "reference",
        ])
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.err.contains("too few for 10 bins"), refused.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: calibrated.path))

        let fit = try runHRTrain([
            "calibrate", "--model", model.path, "--data", calibrationSample.path, "--output", calibrated.path,
            "--truth-bins", "0,10,20,40", "--min-events-per-bin", "100", "--backend", "reference",
        ])
        XCTAssertEqual(fit.status, 0, fit.err)
        XCTAssertTrue(fit.out.contains("response in bins of the truth |u_t|"), fit.out)
        let calibration = try XCTUnwrap(try Model.read(from: calibrated).metadata.calibration)
        XCTAssertEqual(calibration.counts.reduce(0, +), calibration.events)
        XCTAssertEqual(calibration.method, "inverted-log-linear")
        XCTAssertTrue(calibration.counts.allSatisfy { $0 >= 100 }, "\(calibration.counts)")
        // --bins goes with --binning predicted only.
        let mixed = try runHRTrain([
            "calibrate", "--model", model.path, "--data", calibrationSample.path, "--output", calibrated.path,
            "--bins", "4",
        ])
        XCTAssertEqual(mixed.status, 64, mixed.err)
        XCTAssertTrue(mixed.err.contains("--binning predicted"), mixed.err)

        // predict applies the calibration by default; --no-calibration gives the residual model's output, on
        // the reference and on the CPU backend.
        let plain = dir.appendingPathComponent("plain.csv")
        let withCalibration = dir.appendingPathComponent("calibrated.csv")
        var uncalibratedValues: [Float] = []
        for backend in ["cpu", "reference"] {
            for (output, extra) in [(plain, ["--no-calibration"]), (withCalibration, [])] {
                let p = try runHRTrain(
                    [
                        "predict", "--model", calibrated.path, "--data", sample.path, "--output", output.path, "-q",
                        "--backend", backend,
                    ] + extra)
                XCTAssertEqual(p.status, 0, p.err)
            }
            uncalibratedValues = try readTable(plain).values
            var expected = uncalibratedValues
            calibration.apply(to: &expected)
            let calibratedValues = try readTable(withCalibration).values
            XCTAssertEqual(calibratedValues, expected, backend)
            XCTAssertNotEqual(calibratedValues, uncalibratedValues, backend)
        }
        // The uncalibrated prediction is the network's output plus the raw baseline.
        let table = try readTable(sample)
        let features = table.selecting(try table.indices(of: trained.metadata.featureNames, file: "", field: nil))
        let network = try trained.networkOutput(features.values, rows: table.rowCount, on: ReferenceBackend())
        let allX = table.column(table.columnIndex("hr_all_x")!)
        let allY = table.column(table.columnIndex("hr_all_y")!)
        for r in 0..<table.rowCount {
            XCTAssertEqual(uncalibratedValues[2 * r], network[2 * r] + allX[r], "row \(r) x")
            XCTAssertEqual(uncalibratedValues[2 * r + 1], network[2 * r + 1] + allY[r], "row \(r) y")
        }

        // evaluate --json: the response-corrected figures and the verdict against the raw recoils.
        let evaluate = try runHRTrain([
            "evaluate", "--model", calibrated.path, "--data", sample.path, "--backend", "reference", "--compare",
            "hr_all_x,hr_all_y", "--compare", "hr_charged_x,hr_charged_y", "--json",
        ])
        XCTAssertEqual(evaluate.status, 0, evaluate.err)
        let evaluation = try Evaluation.jsonDecoder().decode(Evaluation.self, from: Data(evaluate.out.utf8))
        XCTAssertTrue(evaluation.calibrated)
        XCTAssertEqual(evaluation.verdicts.map(\.binning.variable), ["|u_t|", "mu", "n_pv"])
        let network0 = evaluation.estimates[0].binned[0].bins[0]
        XCTAssertEqual(network0.correctedParallelRMS, network0.parallelRMS / network0.response, accuracy: 1e-12)
        let verdict = evaluation.verdicts[0].bins[0]
        let raw = evaluation.estimates.dropFirst().map { $0.binned[0].bins[0].correctedPerpendicularRMS }
        XCTAssertEqual(verdict.perpendicularRatio, network0.correctedPerpendicularRMS / raw.min()!, accuracy: 1e-12)
        XCTAssertTrue(verdict.perpendicularRatioError > 0 && verdict.perpendicularRatioError.isFinite)
        let text = try runHRTrain([
            "evaluate", "--model", calibrated.path, "--data", sample.path, "--backend", "reference", "--compare",
            "hr_all_x,hr_all_y",
        ])
        XCTAssertTrue(text.out.contains("verdict in bins of |u_t|") && text.out.contains("σ(u⊥)/R"), text.out)
    }

    func testTrainRejectsBadPhysicsFlags() throws {
        let dir = try temporaryDirectory(self)
        let sample = dir.appendingPathComponent("events.csv")
        XCTAssertEqual(try runHRTrain(["generate", "--events", "50", "--output", sample.path, "-q"]).status, 0)
        let model = dir.appendingPathComponent("m.safetensors").path
        for (flags, message) in [
            (["--flatten-target-magnitude", "0,10,5"], "strictly ascending"),
            (["--flatten-power", "0.5"], "need --flatten-target-magnitude"),
            (["--baseline", "hr_all_x"], "give one per target"),
            (["--baseline", "hr_all_x,nope"], "nope"),
            (["--weights", "nope"], "no column named \"nope\""),
            (["--test-fraction", "1/0"], "--test-fraction"),
        ] {
            let r = try runHRTrain(["train", "--data", sample.path, "--model", model, "--epochs", "1"] + flags)
            XCTAssertNotEqual(r.status, 0, "\(flags)")
            XCTAssertTrue(r.err.contains(message), "\(flags): \(r.err)")
        }
    }
}
