import ArgumentParser
import Foundation
import HRTrain

extension HRTrainCommand {
    struct Evaluate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Evaluate a model on events: loss, RMSE, and the recoil response and resolutions in bins.",
            discussion: """
                Predicts as `hrtrain predict` does, then compares with the truth columns (the model's target \
                names) in the target units: the MSE loss (mean over events and components, as in training), the \
                RMSE of each component, and, for x/y targets, the recoil-calibration figures with n = u_t/|u_t|, \
                u∥ = u·n, u⊥ = u × n: the response ⟨u∥⟩/⟨|u_t|⟩ (ratio of means), \
                σ(u∥ − |u_t|) and σ(u⊥) (RMS \
                about the mean, and the robust width (q84 − q16)/2), overall and in bins of |u_t| (0, 10, 20, \
                30, 50, 100, ∞ GeV), of pile-up μ (column mu: 0, 20, 30, 40, 50, ∞) and of the number of \
                primary vertices (column n_pv: 0, 10, 20, 30, ∞) where the data has those columns. Events with \
                |u_t| = 0 have no direction and are left out of the recoil figures. --compare adds the same \
                figures for raw recoil estimates of the data (repeat it for several). Every bin also gets the \
                response-corrected resolutions σ(u∥ − |u_t|)/R and σ(u⊥)/R, and with --compare a verdict \
                table: \
                the network's σ/R over the best compared estimate's, with its statistical error. The model's \
                baseline and response calibration are applied as in `hrtrain predict` (--no-calibration skips \
                the calibration).
                """)

        @OptionGroup var inference: InferenceOptions
        @Option(help: ArgumentHelp("A raw recoil to compare with, as its x,y columns (repeatable).", valueName: "x,y"))
        var compare: [String] = []
        @Flag(help: "Print the evaluation as JSON (NaN and ∞ as the strings \"nan\" and \"inf\").") var json = false
        @Flag(name: .shortAndLong, help: "More detail: device, prediction time.") var verbose = false

        func validate() throws {
            for pair in compare where parseList(pair).count < 1 {
                throw ValidationError("--compare needs column names such as hr_all_x,hr_all_y, got '\(pair)'")
            }
        }

        func run() throws {
            let evaluation = try reportingErrors { try evaluate() }
            print(
                json
                    ? String(decoding: try Evaluation.jsonEncoder().encode(evaluation), as: UTF8.self)
                    : render(evaluation))
        }

        private func evaluate() throws -> Evaluation {
            let log = Log(quiet: false, verbose: verbose)
            let model = try inference.loadModel()
            let targets = model.metadata.targetNames
            for pair in compare where parseList(pair).count != targets.count {
                throw DataError(
                    "--compare \(pair) gives \(parseList(pair).count) column\(parseList(pair).count == 1 ? "" : "s"); "
                        + "give one per target of the model (\(targets.joined(separator: ",")))",
                    file: inference.model)
            }
            let table = try inference.readData(log: log)
            let features = try inference.features(of: model, in: table)
            let result = try inference.predict(model, features: features, rows: table.rowCount, log: log)
            log.detail(
                "predicted \(table.rowCount) events in \(String(format: "%.3f", result.seconds)) s on \(result.backend)"
            )
            return try Evaluation(
                predictions: result.values, table: table, targetNames: targets, comparisons: compare.map(parseList),
                model: inference.model, data: inference.data, backend: result.backend,
                calibrated: model.metadata.calibration != nil && !inference.noCalibration)
        }

        private func render(_ e: Evaluation) -> String {
            let componentNames = e.targetNames.count == 2 ? ["x", "y"] : e.targetNames
            var text = "hrtrain evaluate: \(e.model) on \(e.data) (\(e.events) events), network on \(e.backend)"
            text += e.calibrated ? ", response calibration applied\n\n" : "\n\n"
            let recoil = e.estimates.allSatisfy { $0.summary != nil }
            var header = ["estimate", "columns", "loss (MSE)"] + componentNames.map { "RMSE \($0)" }
            if recoil { header += ["response", "σ(u∥−|u_t|)", "σ(u⊥)"] }
            let rows = e.estimates.map { s -> [String] in
                var row = [s.name, s.columns.joined(separator: ","), number(s.loss)] + s.rmse.map(number)
                if let r = s.summary { row += [number(r.response), number(r.parallelRMS), number(r.perpendicularRMS)] }
                return row
            }
            text += table(header, rows, rightAligned: Set(2..<header.count))
            guard recoil, let first = e.estimates.first else { return text }
            if let excluded = first.summary.map({ e.events - $0.count }), excluded > 0 {
                text += "\n\n\(excluded) event\(excluded == 1 ? "" : "s") with |u_t| = 0 left out of the recoil figures"
            }
            for (b, binned) in first.binned.enumerated() {
                let binning = binned.binning
                text +=
                    "\n\nin bins of \(binning.variable)\(binning.column == nil ? " [GeV]" : ""): response "
                    + "⟨u∥⟩/⟨|u_t|⟩, σ = RMS, w = (q84 − q16)/2\n"
                var rows: [[String]] = []
                for i in binned.bins.indices {
                    for s in e.estimates {
                        let bin = s.binned[b].bins[i]
                        var row = [edgeLabel(bin.lowerEdge, bin.upperEdge), s.name, "\(bin.count)"]
                        row +=
                            bin.count == 0
                            ? Array(repeating: "-", count: 10)
                            : [
                                number(bin.meanTruthMagnitude),
                                "\(number(bin.response)) ± \(number(bin.responseError))", number(bin.parallelBias),
                                "\(number(bin.parallelRMS)) ± \(number(bin.parallelRMSError))",
                                number(bin.parallelWidth), number(bin.perpendicularMean),
                                "\(number(bin.perpendicularRMS)) ± \(number(bin.perpendicularRMSError))",
                                number(bin.perpendicularWidth),
                                "\(number(bin.correctedParallelRMS)) ± \(number(bin.correctedParallelRMSError))",
                                "\(number(bin.correctedPerpendicularRMS)) ± "
                                    + "\(number(bin.correctedPerpendicularRMSError))",
                            ]
                        rows.append(row)
                    }
                }
                text += table(
                    [
                        "bin", "estimate", "events", "⟨|u_t|⟩", "response", "⟨u∥−|u_t|⟩",
                        "σ(u∥−|u_t|)", "w(u∥−|u_t|)", "⟨u⊥⟩", "σ(u⊥)", "w(u⊥)",
                        "σ(u∥−|u_t|)/R", "σ(u⊥)/R",
                    ], rows, rightAligned: Set(2..<13))
            }
            for verdict in e.verdicts {
                let binning = verdict.binning
                text +=
                    "\n\nverdict in bins of \(binning.variable)\(binning.column == nil ? " [GeV]" : ""): the "
                    + "network's σ/R over the best compared estimate's (below 1: the network is better; "
                    + "better/worse: more than 2σ from 1)\n"
                let rows = verdict.bins.map { bin -> [String] in
                    [
                        edgeLabel(bin.lowerEdge, bin.upperEdge), "\(bin.count)", number(bin.networkResponse),
                        "\(number(bin.parallelRatio)) ± \(number(bin.parallelRatioError))", bin.bestParallel,
                        RecoilVerdictBin.verdict(ratio: bin.parallelRatio, error: bin.parallelRatioError),
                        "\(number(bin.perpendicularRatio)) ± \(number(bin.perpendicularRatioError))",
                        bin.bestPerpendicular,
                        RecoilVerdictBin.verdict(ratio: bin.perpendicularRatio, error: bin.perpendicularRatioError),
                    ]
                }
                text += table(
                    [
                        "bin", "events", "response", "σ(u∥−|u_t|)/R ratio", "best", "verdict", "σ(u⊥)/R ratio",
                        "best", "verdict",
                    ], rows, rightAligned: [1, 2, 3, 6])
            }
            return text
        }

        /// `[10, 20)`, `[100, ∞)`.
        private func edgeLabel(_ low: Double, _ high: Double) -> String {
            func edge(_ x: Double) -> String { x.isInfinite ? "∞" : x == x.rounded() ? String(Int(x)) : number(x) }
            return "[\(edge(low)), \(edge(high)))"
        }

        /// Four significant digits.
        private func number(_ x: Double) -> String { String(format: "%.4g", x) }
    }
}
