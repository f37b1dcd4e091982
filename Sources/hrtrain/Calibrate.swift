import ArgumentParser
import Foundation
import HRTrain

extension HRTrainCommand {
    struct Calibrate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fit a response calibration of a model's recoil on a sample with truth, store it in a copy.",
            discussion: """
                Predicts --data as `hrtrain predict --no-calibration` does (baseline included), then measures the \
                response R = Σ û·n / Σ |u_t| (n = u_t/|u_t|) in --bins bins of the predicted |û| holding equal \
                numbers of events (|û| is what a measurement has; |u_t| is not), fits a monotone, continuous \
                R(|û|): isotonic (pool-adjacent-violators) regression of the binned responses, one knot per \
                pooled block at its mean |û|, linear in ln|û| between knots, constant beyond the outer ones, the \
                log-slope held below 1 so that |û|/R(|û|) keeps the order of |û|. Writes the model with the \
                calibration to --output (atomically); predict, evaluate and report apply û/R(|û|) by default. \
                A sample with fewer than --bins × --min-events-per-bin events (with |u_t| > 0) is refused. Use a \
                sample the model was not trained on, and not the one it is evaluated on.
                """)

        @OptionGroup var inference: InferenceOptions
        @Option(help: "Where to write the calibrated model (safetensors).") var output: String
        @Option(help: "Bins of the predicted |û| (equal numbers of events).") var bins = 20
        @Option(help: "The fewest events a bin may hold.") var minEventsPerBin = 200
        @Flag(name: .shortAndLong, help: "No summary table.") var quiet = false

        func validate() throws {
            if bins < 1 { throw ValidationError("--bins must be at least 1, got \(bins)") }
            if minEventsPerBin < 1 {
                throw ValidationError("--min-events-per-bin must be at least 1, got \(minEventsPerBin)")
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
                calibration = try ResponseCalibration.fit(
                    predictions: result, truth: truth, bins: bins, minimumEventsPerBin: minEventsPerBin,
                    sample: inference.data)
            } catch let error as ResponseCalibration.FitError {
                throw CommandError("--data \(inference.data): \(error.description)")
            }
            model.metadata.calibration = calibration
            try model.write(to: outputURL)
            if !quiet {
                var rows: [[String]] = []
                for k in 0..<calibration.counts.count {
                    rows.append([
                        "[\(number(calibration.edges[k])), \(number(calibration.edges[k + 1]))]",
                        "\(calibration.counts[k])", number(calibration.measured[k]),
                    ])
                }
                print(
                    "response in bins of the predicted |û| [GeV] (\(calibration.events) events of \(inference.data)):")
                print(table(["|û| bin", "events", "measured R"], rows, rightAligned: [1, 2]))
                print(
                    "\nfitted knots (isotonic, linear in ln|û|; \(calibration.cappedKnots) capped to keep the order):")
                print(
                    table(
                        ["|û|", "R"],
                        zip(calibration.magnitudes, calibration.responses).map { [number($0), number($1)] },
                        rightAligned: [0, 1]))
            }
            log.result("calibrated model written to \(output)")
        }

        /// Four significant digits.
        private func number(_ x: Double) -> String { String(format: "%.4g", x) }
    }
}
