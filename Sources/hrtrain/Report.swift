import ArgumentParser
import Foundation
import HRTrain

extension HRTrainCommand {
    struct Report: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Write an HTML report of a model on a test sample: training curves, response, resolutions, residuals.",
            discussion: """
                Predicts as `hrtrain predict` does and evaluates as `hrtrain evaluate` does, then writes one \
                self-contained HTML page (inline SVG, no script, nothing fetched): the loss and learning rate per \
                epoch from --metrics (the JSON lines of `hrtrain train --metrics`); the response \
                ⟨u∥⟩/⟨|u_t|⟩ and the resolutions σ(u∥ − |u_t|) and σ(u⊥) against |u_t|, \
                μ (column mu) and N_PV (column n_pv), with \
                statistical errors, for the network and for each raw recoil in the data (hr_charged, hr_neutral, \
                hr_all, and every --compare pair); residual histograms of x and y; predicted against true x and y; \
                the summary of `hrtrain evaluate --json`; and the provenance. Each figure's numbers are also written \
                as CSV next to the page (report.html → report_<figure>.csv). All files are written atomically.
                """)

        @OptionGroup var inference: InferenceOptions
        @Option(help: "Where to write the page (.html); the CSV files go next to it.") var output = "report.html"
        @Option(help: "The metrics file of the training run (JSON lines from `hrtrain train --metrics`).") var metrics:
            String?
        @Option(
            help: ArgumentHelp("Another raw recoil to compare with, as its x,y columns (repeatable).", valueName: "x,y")
        ) var compare: [String] = []
        @Option(help: "The page's title.") var title = "Hadronic recoil regression report"
        @OptionGroup var verbosity: VerbosityOptions

        /// The raw recoils of a generated sample, compared when the data has them.
        static let standardComparisons = [
            ["hr_charged_x", "hr_charged_y"], ["hr_neutral_x", "hr_neutral_y"], ["hr_all_x", "hr_all_y"],
        ]

        func validate() throws {
            guard URL(fileURLWithPath: output).pathExtension.lowercased().hasPrefix("htm") else {
                throw ValidationError("--output \(output): give an .html file (the CSV files are written next to it)")
            }
            for pair in compare where parseList(pair).count != 2 {
                throw ValidationError("--compare needs two columns, x,y (such as hr_all_x,hr_all_y), got '\(pair)'")
            }
        }

        func run() throws {
            try reportingErrors { try report() }
        }

        private func report() throws {
            let log = verbosity.log
            let outputURL = URL(fileURLWithPath: output)
            func plan(_ plan: inout OutputPlan, figures: [String]) {
                plan.input(inference.model, option: "--model")
                plan.input(inference.data, option: "--data")
                if let metrics { plan.input(metrics, option: "--metrics") }
                plan.plainOutput(output, option: "--output")
                for id in figures {
                    plan.plainOutput(RecoilReport.csvURL(for: outputURL, id: id).path, option: "--output (figure CSV)")
                }
            }
            try checkOutputs { plan(&$0, figures: ["summary"]) }
            var history: [EpochRecord] = []
            if let metrics {
                do { history = try readMetrics(from: URL(fileURLWithPath: metrics)) } catch var error as DataError {
                    error.field = error.field ?? .metrics
                    throw error
                }
            }
            let model = try inference.loadModel()
            let targets = model.metadata.targetNames
            guard targets.count == 2 else {
                throw ValidationError(
                    "--model \(inference.model): the report needs a model of the recoil's x and y (two targets); this "
                        + "one has \(targets.count) (\(targets.joined(separator: ",")))"
                )
            }
            let table = try inference.readData(log: log)
            let features = try inference.features(of: model, in: table)
            let result = try inference.predict(model, features: features, rows: table.rowCount, log: log)
            log.detail(
                "predicted \(table.rowCount) events in \(String(format: "%.3f", result.seconds)) s on \(result.backend)"
            )

            var comparisons = Self.standardComparisons.filter { $0.allSatisfy { table.columnIndex($0) != nil } }
            for pair in compare.map(parseList) where !comparisons.contains(pair) { comparisons.append(pair) }
            let truth = try table.indices(of: targets, file: inference.data, field: .data).map(table.column)
            let evaluation = try Evaluation(
                predictions: result.values, table: table, targetNames: targets, comparisons: comparisons,
                model: inference.model, data: inference.data, backend: result.backend,
                binnings: RecoilReport.binnings(table: table, truthX: truth[0], truthY: truth[1]),
                calibrated: model.metadata.calibration != nil && !inference.noCalibration)
            let network = RecoilComponents(
                name: "network", x: stride(from: 0, to: result.values.count, by: 2).map { result.values[$0] },
                y: stride(from: 1, to: result.values.count, by: 2).map { result.values[$0] })
            let raw = evaluation.estimates.dropFirst().map { e in
                RecoilComponents(
                    name: e.name, x: table.column(table.columnIndex(e.columns[0])!),
                    y: table.column(table.columnIndex(e.columns[1])!))
            }
            let input = ReportInput(
                title: title, history: history, lossUnit: model.targetScaler == nil ? "GeV²" : nil,
                evaluation: evaluation,
                truthX: truth[0], truthY: truth[1], components: [network] + raw,
                provenance: provenance(model, table: table, backend: result.backend))
            let report = RecoilReport(input)
            try checkOutputs { plan(&$0, figures: ["summary"] + report.figures.map(\.id)) }
            try report.write(to: outputURL)
            let skipped = report.figures.reduce(0) { $0 + $1.rendered.skippedPoints }
            if skipped > 0 {
                log.warn(
                    "\(skipped) point\(skipped == 1 ? "" : "s") not drawn (NaN, ±Inf, or ≤ 0 on a log axis); "
                        + "the plots say where"
                )
            }
            log.result(
                "report written to \(output): \(report.figures.count) figures, \(evaluation.estimates.count) "
                    + "estimates, \(table.rowCount) events; CSV files "
                    + "\(RecoilReport.csvURL(for: outputURL, id: "*").lastPathComponent)"
            )
        }

        /// Where the page's numbers come from.
        private func provenance(_ model: Model, table: Table, backend: String) -> [(name: String, value: String)] {
            let m = model.metadata
            var rows: [(name: String, value: String)] = [
                ("data file", "\(absolute(inference.data)) (\(table.rowCount) events, \(table.columnCount) columns)"),
                ("model file", absolute(inference.model)),
                ("metrics file", metrics.map(absolute) ?? "none"),
                (
                    "network",
                    "\(m.spec.inputSize) inputs, hidden \(m.spec.hiddenSizes.map(String.init).joined(separator: ",")) "
                        + "\(m.spec.layerOrder.rawValue), \(m.spec.outputSize) outputs, \(m.profile.rawValue) "
                        + "profile\(model.targetScaler == nil ? "" : ", standardised targets")"
                ),
                ("targets", m.targetNames.joined(separator: ", ")),
                ("features", m.featureNames.joined(separator: ", ")),
            ]
            if let training = m.training, let json = try? jsonString(training) {
                rows.append(
                    (
                        "training configuration",
                        json.replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "  ", with: "")
                    ))
            }
            rows += [
                (
                    "trained",
                    m.epochsTrained > 0
                        ? "\(m.epochsTrained) "
                            + "epochs\(m.dataFile.map { " on \($0)" } ?? "")\(m.device.map { ", device \($0)" } ?? "")"
                        : "untrained (hrtrain init)"
                ),
                ("prediction backend", backend),
                ("model written by", "hrtrain \(m.hrtrainVersion)"),
                ("report written by", "hrtrain \(HRTrainVersion.string)"),
                ("date", ISO8601DateFormatter().string(from: Date())),
            ]
            return rows
        }

        /// `path` made absolute, for a page read elsewhere.
        private func absolute(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.path }
    }
}
