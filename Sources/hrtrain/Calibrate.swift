import ArgumentParser
import Foundation
import HRTrain

/// `calibrate --binning`: in bins of the truth |u_t| (numerical inversion, iterated) or of the predicted |û|.
enum CalibrationBinning: String, ExpressibleByArgument, CaseIterable {
    case truth
    case predicted
}

extension HRTrainCommand {
    struct Calibrate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fit a response calibration of a model's recoil on a sample with truth, store it in a copy.",
            discussion: """
                Predicts --data as `hrtrain predict --no-calibration` does (baseline included) and fits a \
                correction R(|û|) of the predicted magnitude |û| (what a measurement has), applied as û/R(|û|): \
                linear in ln|û| between knots, constant beyond the outer ones, its log-slope held below 1 so \
                that |û|/R(|û|) keeps the order of |û| (where noise dominates, at small |û|, the correction is \
                held back). Default (--binning truth): numerical inversion in bins of the truth |u_t| \
                (--truth-bins, the last bin open; bins with fewer than --min-events-per-bin events are merged), \
                one knot per bin at its mean |û|, iterated — apply, measure the response \
                R = Σ û·n / Σ |u_t| (n = u_t/|u_t|) of each |u_t| bin, multiply the knot by it — until the \
                calibrated response is 1 in every |u_t| bin. --binning predicted: the response in --bins bins \
                of |û| with equal numbers of events, isotonic (pool-adjacent-violators) — response 1 in bins \
                of |û|, which on a falling spectrum is below 1 in bins of |u_t|. Writes the model with the \
                calibration to --output (atomically); predict, evaluate and report apply it by default. A \
                sample with fewer than (number of bins) × --min-events-per-bin events (with |u_t| > 0) is \
                refused. Use a sample the model was not trained on, and not the one it is evaluated on.
                """)

        @OptionGroup var inference: InferenceOptions
        @Option(help: "Where to write the calibrated model (safetensors).") var output: String
        @Option(help: "Bins of the truth |u_t| (truth) or of the predicted |û| (predicted).")
        var binning = CalibrationBinning.truth
        @Option(
            help: ArgumentHelp(
                "With --binning truth: the bin edges of |u_t| in GeV (the last bin open; default "
                    + ResponseCalibration.defaultTruthEdges.map { String(format: "%g", $0) }.joined(separator: ",")
                    + ").", valueName: "edges")) var truthBins: String?
        @Option(help: "With --binning predicted: bins of the predicted |û| (equal numbers of events; default 20).")
        var bins: Int?
        @Option(help: "The fewest events a bin may hold.") var minEventsPerBin = 200
        @Flag(name: .shortAndLong, help: "No summary table.") var quiet = false

        func validate() throws {
            if let bins, bins < 1 { throw ValidationError("--bins must be at least 1, got \(bins)") }
            if minEventsPerBin < 1 {
                throw ValidationError("--min-events-per-bin must be at least 1, got \(minEventsPerBin)")
            }
            if binning == .truth && bins != nil {
                throw ValidationError("--bins is for --binning predicted; with --binning truth give --truth-bins")
            }
            if binning == .predicted && truthBins != nil {
                throw ValidationError("--truth-bins is for --binning truth; with --binning predicted give --bins")
            }
            if let truthBins {
                do { _ = try parseBinEdges(truthBins) } catch let error as DataError {
                    throw ValidationError("--truth-bins: \(error.message)")
                }
            }
        }

        func run() throws {
            try reportingErrors { try calibrate() }
        }

        private func calibrate() throws {
            let log = Log(quiet: quiet, verbose: false)
            let outputURL = URL(fileURLWithPath: output)
            try requireWritableDirectory(of: outputURL, option: "--output")
            var model = try inference.loadModel()
            let targets = model.metadata.targetNames
            guard targets.count == 2 else {
                throw CommandError(
                    "--model \(inference.model): a response calibration needs a model of the recoil's x and y "
                        + "(two targets); this one has \(targets.count)"
                )
            }
            let data = try inference.readData(log: log)
            let features = try inference.features(of: model, in: data)
            model.metadata.calibration = nil
            var uncalibrated = inference
            uncalibrated.noCalibration = true
            let result = try uncalibrated.predict(model, features: features, rows: data.rowCount, log: log).values
            let truth = data.selecting(try data.indices(of: targets, file: inference.data, field: .data)).values
            let calibration: ResponseCalibration
            do {
                switch binning {
                case .truth:
                    calibration = try ResponseCalibration.fit(
                        predictions: result, truth: truth,
                        truthEdges: try truthBins.map(parseBinEdges) ?? ResponseCalibration.defaultTruthEdges,
                        minimumEventsPerBin: minEventsPerBin, sample: inference.data)
                case .predicted:
                    calibration = try ResponseCalibration.fitInPredictedBins(
                        predictions: result, truth: truth, bins: bins ?? 20, minimumEventsPerBin: minEventsPerBin,
                        sample: inference.data)
                }
            } catch let error as ResponseCalibration.FitError {
                throw CommandError("--data \(inference.data): \(error.description)")
            }
            model.metadata.calibration = calibration
            try model.write(to: outputURL)
            if !quiet { printSummary(calibration) }
            log.result("calibrated model written to \(output)")
        }

        private func printSummary(_ calibration: ResponseCalibration) {
            let source = "\(calibration.events) events of \(inference.data)"
            if let closure = calibration.closure {
                var rows: [[String]] = []
                for k in 0..<calibration.counts.count {
                    let upper = k + 1 < calibration.edges.count ? number(calibration.edges[k + 1]) : "∞"
                    rows.append([
                        "[\(number(calibration.edges[k])), \(upper))", "\(calibration.counts[k])",
                        number(calibration.magnitudes[k]), number(calibration.measured[k]),
                        number(calibration.responses[k]), number(closure[k]),
                    ])
                }
                print("response in bins of the truth |u_t| [GeV] (\(source)):")
                print(
                    table(
                        ["|u_t| bin", "events", "knot ⟨|û|⟩", "measured R", "knot R", "calibrated R"], rows,
                        rightAligned: [1, 2, 3, 4, 5]))
                print(
                    "\n\(calibration.iterations ?? 0) iterations; \(calibration.cappedKnots) knots held back by the "
                        + "order-keeping limit (their calibrated response stays below 1)")
                return
            }
            var rows: [[String]] = []
            for k in 0..<calibration.counts.count {
                rows.append([
                    "[\(number(calibration.edges[k])), \(number(calibration.edges[k + 1]))]",
                    "\(calibration.counts[k])", number(calibration.measured[k]),
                ])
            }
            print("response in bins of the predicted |û| [GeV] (\(source)):")
            print(table(["|û| bin", "events", "measured R"], rows, rightAligned: [1, 2]))
            print("\nfitted knots (isotonic, linear in ln|û|; \(calibration.cappedKnots) capped to keep the order):")
            print(
                table(
                    ["|û|", "R"], zip(calibration.magnitudes, calibration.responses).map { [number($0), number($1)] },
                    rightAligned: [0, 1]))
        }

        /// Four significant digits.
        private func number(_ x: Double) -> String { String(format: "%.4g", x) }
    }
}
