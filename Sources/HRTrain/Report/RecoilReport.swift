import Foundation

/// The x and y components of one recoil estimate, event by event (the network's prediction or a raw recoil).
public struct RecoilComponents: Sendable, Equatable {
    /// The estimate's name, as in `Evaluation.estimates` (`network`, `hr_charged`).
    public var name: String
    public var x: [Float]
    public var y: [Float]

    /// Creates the components.
    public init(name: String, x: [Float], y: [Float]) {
        precondition(x.count == y.count, "RecoilComponents: x and y differ in length")
        self.name = name
        self.x = x
        self.y = y
    }
}

/// Everything a report shows, as plain values.
public struct ReportInput: Sendable {
    /// The page's heading.
    public var title: String
    /// The training run's epochs (from the metrics file); empty when not given.
    public var history: [EpochRecord]
    /// The unit of the training history's loss (`GeV²` for unscaled targets); nil when the targets were standardised.
    public var lossUnit: String?
    /// The evaluation (`hrtrain evaluate --json`), binned with `RecoilReport.binnings`: the summary table and
    /// the response and resolution figures.
    public var evaluation: Evaluation
    /// The truth recoil, event by event.
    public var truthX: [Float]
    public var truthY: [Float]
    /// The components of each estimate of `evaluation`, in its order (the network first).
    public var components: [RecoilComponents]
    /// Data file, model file, configuration, device, date, version, … as (name, value) rows.
    public var provenance: [(name: String, value: String)]

    /// Creates the input; the components must name the evaluation's estimates in order.
    public init(
        title: String, history: [EpochRecord], lossUnit: String?, evaluation: Evaluation, truthX: [Float],
        truthY: [Float], components: [RecoilComponents], provenance: [(name: String, value: String)]
    ) {
        precondition(
            components.map(\.name) == evaluation.estimates.map(\.name),
            "ReportInput: the components do not match the evaluation's estimates")
        precondition(
            truthX.count == truthY.count && components.allSatisfy { $0.x.count == truthX.count },
            "ReportInput: event counts differ")
        self.title = title
        self.history = history
        self.lossUnit = lossUnit
        self.evaluation = evaluation
        self.truthX = truthX
        self.truthY = truthY
        self.components = components
        self.provenance = provenance
    }
}

/// A table written as CSV: a header and rows of already formatted cells.
public struct CSVTable: Sendable, Equatable {
    public var header: [String]
    public var rows: [[String]]

    /// The CSV text (RFC 4180 quoting where a cell needs it), one line per row, newline-terminated.
    public var text: String {
        func cell(_ s: String) -> String {
            s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" })
                ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
        }
        return ([header] + rows).map { $0.map(cell).joined(separator: ",") }.joined(separator: "\n") + "\n"
    }
}

/// One figure of the report: its plot, caption and the same numbers as CSV.
public struct ReportFigure: Sendable {
    /// Names the CSV file (`PREFIX_<id>.csv`) and the SVG element.
    public var id: String
    /// The heading of the group of figures it belongs to.
    public var section: String
    public var plot: SVGPlot
    /// The rendered plot.
    public var rendered: RenderedPlot
    /// A sentence or two on what this figure shows (plain text; the section's note says what its figures share).
    public var caption: String
    public var csv: CSVTable
}

/// The recoil-regression report: one self-contained HTML page (inline SVG, no script, no network) with the
/// training history, response and resolutions against |u_t|, μ and N_PV for the network and every raw recoil,
/// residual histograms, predicted-against-truth densities, the evaluation summary and the run's provenance;
/// each figure's numbers also as a CSV file next to the page.
public struct RecoilReport: Sendable {
    public let input: ReportInput
    public let figures: [ReportFigure]
    /// The summary table (one row per estimate), as shown and as written to `PREFIX_summary.csv`.
    public let summary: CSVTable
    /// What the figures of a section share, shown under its heading.
    public let sectionNotes: [String: String]

    /// Builds every figure from `input`.
    public init(_ input: ReportInput) {
        self.input = input
        var figures = Self.trainingFigures(input)
        figures += Self.binnedFigures(input)
        figures += Self.residualFigures(input)
        figures += Self.densityFigures(input)
        self.figures = figures
        summary = Self.summaryTable(input.evaluation)
        sectionNotes = Dictionary(
            Self.binnedQuantities.map { ($0.section, $0.caption) }, uniquingKeysWith: { first, _ in first })
    }

    // MARK: Binnings

    /// The bins the report uses: |u_t| in 5–50 GeV steps up to its 99th percentile plus an overflow bin; μ
    /// (column `mu`) and N_PV (column `n_pv`), where the table has them, in about 12 nice bins over their
    /// central 99.8 % (whole-number bins centred on the integers for integer-valued columns).
    public static func binnings(table: Table, truthX: [Float], truthY: [Float]) -> [RecoilBinning] {
        let magnitudes = zip(truthX, truthY).map { (x: Float, y: Float) -> Double in
            let (dx, dy) = (Double(x), Double(y))
            return (dx * dx + dy * dy).squareRoot()
        }.sorted()
        let limit = quantile(sorted: magnitudes, 0.99)
        let candidates: [Double] = [0, 5, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 125, 150, 200, 250, 300, 400, 500]
        var edges = candidates.filter { $0 < limit }
        if edges.isEmpty { edges = [0] }
        var binnings = [RecoilBinning(variable: "|u_t|", column: nil, edges: edges + [.infinity])]
        for column in ["mu", "n_pv"] {
            guard let index = table.columnIndex(column) else { continue }
            let values = table.column(index).filter(\.isFinite)
            guard !values.isEmpty else { continue }
            binnings.append(RecoilBinning(variable: column, column: column, edges: automaticEdges(values)))
        }
        return binnings
    }

    /// About 12 nice bins over the central 99.8 % of `values`; integer-valued data gets edges at n − ½.
    static func automaticEdges(_ values: [Float]) -> [Double] {
        let sorted = values.map(Double.init).sorted()
        let low = quantile(sorted: sorted, 0.001)
        let high = quantile(sorted: sorted, 0.999)
        if sorted.allSatisfy({ $0 == $0.rounded() }) {
            let step = max(1, niceStep(max(high - low, 1) / 12).rounded(.up))
            let first = low.rounded(.down) - 0.5
            return Array(stride(from: first, through: high + step, by: step).prefix { $0 - step <= high })
        }
        guard high > low else { return [low - 0.5, low + 0.5] }
        let step = niceStep((high - low) / 12)
        let first = (low / step).rounded(.down) * step
        var edges = [first]
        while edges.last! <= high { edges.append(edges.last! + step) }
        return edges
    }

    // MARK: Figures

    private static let trainingSection = "Training"

    private static func trainingFigures(_ input: ReportInput) -> [ReportFigure] {
        let history = input.history
        guard !history.isEmpty else { return [] }
        var loss = SVGPlot(
            id: "loss", title: "Loss per epoch", x: PlotAxis("epoch", integer: true),
            y: PlotAxis("loss (MSE)", unit: input.lossUnit, scale: .log10))
        loss.series = [
            PlotSeries(
                name: "training",
                points: history.map {
                    PlotPoint(
                        x: Double($0.epoch), y: $0.trainLoss,
                        note: "epoch \($0.epoch): training loss \(plainNumber($0.trainLoss))")
                }, style: 1)
        ]
        let validation = history.compactMap { r in
            r.validationLoss.map {
                PlotPoint(x: Double(r.epoch), y: $0, note: "epoch \(r.epoch): validation loss \(plainNumber($0))")
            }
        }
        if !validation.isEmpty { loss.series.append(PlotSeries(name: "validation", points: validation, style: 0)) }
        var rate = SVGPlot(
            id: "learning_rate", title: "Learning rate", x: PlotAxis("epoch", integer: true),
            y: PlotAxis("learning rate", scale: .log10))
        rate.series = [
            PlotSeries(
                name: "Adam learning rate",
                points: history.map {
                    PlotPoint(
                        x: Double($0.epoch), y: $0.learningRate,
                        note: "epoch \($0.epoch): \(plainNumber($0.learningRate))")
                }, style: 2)
        ]
        func number(_ v: Double?) -> String { v.map(csvNumber) ?? "" }
        let lossCSV = CSVTable(
            header: ["epoch", "train_loss", "val_loss", "learning_rate", "seconds", "events_per_second"],
            rows: history.map {
                [
                    "\($0.epoch)", csvNumber($0.trainLoss), number($0.validationLoss), csvNumber($0.learningRate),
                    csvNumber($0.seconds), csvNumber($0.eventsPerSecond),
                ]
            })
        let rateCSV = CSVTable(
            header: ["epoch", "learning_rate"], rows: history.map { ["\($0.epoch)", csvNumber($0.learningRate)] })
        let lossCaption =
            "Mean training loss over each epoch's steps (batch normalisation in training mode) and validation loss "
            + "(inference mode), log scale."
        return [
            figure(id: "loss", section: trainingSection, plot: loss, caption: lossCaption, csv: lossCSV),
            figure(
                id: "learning_rate", section: trainingSection, plot: rate,
                caption: "The learning rate used in each epoch (after any reduction on a plateau), log scale.",
                csv: rateCSV),
        ]
    }

    /// What a binned figure shows: its id stem, title, axis and the value and error of a bin.
    private struct BinnedQuantity {
        var id: String
        var section: String
        var title: String
        var axis: PlotAxis
        var reference: ReferenceLine?
        var value: @Sendable (RecoilBin) -> (value: Double, error: Double, width: Double?)
        var caption: String
    }

    private static let binnedQuantities = [
        BinnedQuantity(
            id: "response", section: "Response", title: "Response", axis: PlotAxis("⟨u_{∥}⟩ / ⟨|u_{t}|⟩"),
            reference: .horizontal(1),
            value: { ($0.response, $0.responseError, nil) },
            caption:
                "Response ⟨u∥⟩/⟨|u_t|⟩ (ratio of means), with u∥ the recoil's projection on the truth "
                + "direction; "
                + "statistical errors from the covariance of u∥ and |u_t|."
        ),
        BinnedQuantity(
            id: "resolution_parallel", section: "Resolution along the truth recoil",
            title: "Resolution of u_{∥} − |u_{t}|", axis: PlotAxis("σ(u_{∥} − |u_{t}|)", unit: "GeV"),
            reference: nil,
            value: { ($0.parallelRMS, $0.parallelRMSError, $0.parallelWidth) },
            caption:
                "RMS (about the mean) of u∥ − |u_t|; error RMS/√(2(N−1)). The CSV also has the robust width "
                + "(q84 − "
                + "q16)/2."
        ),
        BinnedQuantity(
            id: "resolution_perpendicular", section: "Resolution perpendicular to the truth recoil",
            title: "Resolution of u_{⊥}", axis: PlotAxis("σ(u_{⊥})", unit: "GeV"), reference: nil,
            value: { ($0.perpendicularRMS, $0.perpendicularRMSError, $0.perpendicularWidth) },
            caption:
                "RMS (about the mean) of u⊥ = u × n, the component perpendicular to the truth recoil; error "
                + "RMS/√(2(N−1)). The CSV also has the robust width (q84 − q16)/2."
        ),
        BinnedQuantity(
            id: "corrected_resolution_parallel", section: "Response-corrected resolutions",
            title: "σ(u_{∥} − |u_{t}|) / R", axis: PlotAxis("σ(u_{∥} − |u_{t}|) / R", unit: "GeV"),
            reference: nil,
            value: { ($0.correctedParallelRMS, $0.correctedParallelRMSError, nil) },
            caption:
                "Resolutions divided by the bin's response R (CMS DeepMET, arXiv:2509.12012, Fig. 3): an "
                + "estimate shrunk towards zero has a small resolution in GeV for free, so estimates are "
                + "compared on σ/R. Errors from those of σ and R, taken as independent."
        ),
        BinnedQuantity(
            id: "corrected_resolution_perpendicular", section: "Response-corrected resolutions",
            title: "σ(u_{⊥}) / R", axis: PlotAxis("σ(u_{⊥}) / R", unit: "GeV"), reference: nil,
            value: { ($0.correctedPerpendicularRMS, $0.correctedPerpendicularRMSError, nil) },
            caption:
                "Resolutions divided by the bin's response R (CMS DeepMET, arXiv:2509.12012, Fig. 3): an "
                + "estimate shrunk towards zero has a small resolution in GeV for free, so estimates are "
                + "compared on σ/R. Errors from those of σ and R, taken as independent."
        ),
    ]

    private static func binnedFigures(_ input: ReportInput) -> [ReportFigure] {
        let estimates = input.evaluation.estimates
        guard let first = estimates.first else { return [] }
        var figures: [ReportFigure] = []
        for quantity in binnedQuantities {
            for (b, binned) in first.binned.enumerated() {
                let variable = variableDescription(binned.binning)
                var plot = SVGPlot(
                    id: "\(quantity.id)_vs_\(variable.id)", title: "\(quantity.title) against \(variable.label)",
                    x: PlotAxis(variable.label, unit: variable.unit, integer: variable.id == "npv"), y: quantity.axis)
                plot.width = 440
                plot.height = 340
                plot.referenceLines = quantity.reference.map { [$0] } ?? []
                var rows: [[String]] = []
                var unplaced = 0
                for (e, estimate) in estimates.enumerated() {
                    var points: [PlotPoint] = []
                    for bin in estimate.binned[b].bins where bin.count >= 2 {
                        let x =
                            binned.binning.column == nil ? bin.meanTruthMagnitude : (bin.lowerEdge + bin.upperEdge) / 2
                        let (value, error, width) = quantity.value(bin)
                        guard x.isFinite else {
                            unplaced += 1
                            continue
                        }
                        let range =
                            "\(variable.plain) ∈ [\(plainNumber(bin.lowerEdge)), "
                            + "\(bin.upperEdge.isInfinite ? "∞" : plainNumber(bin.upperEdge)))"
                        points.append(
                            PlotPoint(
                                x: x, y: value, error: error,
                                note:
                                    "\(displayName(estimate.name)), \(range), \(bin.count) events: "
                                    + "\(plainNumber(value)) ± \(plainNumber(error))"
                            ))
                        rows.append(
                            [
                                estimate.name, csvNumber(bin.lowerEdge), csvNumber(bin.upperEdge), "\(bin.count)",
                                csvNumber(x), csvNumber(value), csvNumber(error),
                            ] + (width.map { [csvNumber($0)] } ?? []))
                    }
                    plot.series.append(PlotSeries(name: displayName(estimate.name), points: points, style: e))
                }
                var caption = variable.caption
                if unplaced > 0 {
                    caption += " \(unplaced) open-ended bin\(unplaced == 1 ? " is" : "s are") not drawn (no centre)."
                }
                var header = [
                    "estimate", "\(variable.id)_low", "\(variable.id)_high", "events", variable.id, quantity.id,
                    "\(quantity.id)_error",
                ]
                if quantity.id.hasPrefix("resolution") { header.append("\(quantity.id)_width") }
                figures.append(
                    figure(
                        id: plot.id, section: quantity.section, plot: plot, caption: caption,
                        csv: CSVTable(header: header, rows: rows)))
            }
        }
        return figures
    }

    /// How a binning variable is named on axes, in captions and in file names.
    private static func variableDescription(_ binning: RecoilBinning) -> (
        id: String, label: String, plain: String, unit: String?, caption: String
    ) {
        switch binning.column {
        case nil:
            return (
                "truth", "|u_{t}|", "|u_t|", "GeV",
                "Against the truth recoil |u_t|; points at the mean |u_t| of each bin (the last bin is open-ended)."
            )
        case "mu":
            return (
                "mu", "μ", "μ", nil,
                "Against μ, the mean number of interactions per bunch crossing; points at the bin centres."
            )
        case "n_pv":
            return (
                "npv", "N_{PV}", "N_PV", nil,
                "Against N_PV, the number of reconstructed primary vertices; points at the bin centres."
            )
        case let column?:
            let id = String(column.map { $0.isLetter || $0.isNumber ? $0 : "_" })
            return (id, column, column, nil, "Against \(column); points at the bin centres.")
        }
    }

    /// `network`, `raw charged` for `hr_charged`, the name otherwise (`a,b` for a --compare pair).
    static func displayName(_ name: String) -> String {
        name.hasPrefix("hr_") && name.count > 3 && !name.contains(",")
            ? "raw " + name.dropFirst(3).replacingOccurrences(of: "_", with: " ") : name
    }

    private static func residualFigures(_ input: ReportInput) -> [ReportFigure] {
        let events = input.truthX.count
        guard events > 0 else { return [] }
        return [("x", \RecoilComponents.x, input.truthX), ("y", \RecoilComponents.y, input.truthY)].map {
            axis, component, truth in
            let residuals = input.components.map { c in
                zip(c[keyPath: component], truth).map { Double($0) - Double($1) }
            }
            // The range holding the central 99 % of every estimate's residuals.
            let sorted = residuals.map { $0.filter(\.isFinite).sorted() }
            let low = sorted.compactMap { $0.isEmpty ? nil : quantile(sorted: $0, 0.005) }.min() ?? -1
            let high = sorted.compactMap { $0.isEmpty ? nil : quantile(sorted: $0, 0.995) }.max() ?? 1
            let ticks = niceTicks(lower: low, upper: max(high, low + 1e-3), target: 8)
            let (first, last) = (ticks.first!, ticks.last!)
            let binCount = 80
            let edges = (0...binCount).map { first + (last - first) * Double($0) / Double(binCount) }
            let width = (last - first) / Double(binCount)
            var plot = SVGPlot(
                id: "residual_\(axis)", title: "Residuals of u_{\(axis)}",
                x: PlotAxis("u_{\(axis)} − u_{\(axis)}^{true}", unit: "GeV", range: first...last),
                y: PlotAxis("1/N dN/d(Δu_{\(axis)})", unit: "1/GeV"))
            var rows: [[String]] = []
            var outside: [String] = []
            for (e, r) in residuals.enumerated() {
                var counts = [Int](repeating: 0, count: binCount)
                for v in r { if let i = binIndex(v, edges: edges) { counts[i] += 1 } }
                let density = counts.map { Double($0) / (Double(events) * width) }
                let name = displayName(input.components[e].name)
                plot.histograms.append(HistogramSeries(name: name, edges: edges, values: density, style: e))
                for i in 0..<binCount {
                    rows.append([
                        input.components[e].name, csvNumber(edges[i]), csvNumber(edges[i + 1]), "\(counts[i])",
                        csvNumber(density[i]),
                    ])
                }
                let finite = r.filter(\.isFinite)
                let mean = finite.reduce(0, +) / Double(max(finite.count, 1))
                let rms = (finite.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(max(finite.count, 1)))
                    .squareRoot()
                let out = events - counts.reduce(0, +)
                outside.append(
                    "\(name): mean \(plainNumber(mean)) GeV, RMS \(plainNumber(rms)) GeV, "
                        + "\(String(format: "%.2f", 100 * Double(out) / Double(events))) % outside"
                )
            }
            let caption =
                "Predicted minus true u_\(axis), normalised to unit area over all \(events) events (events outside the "
                + "range count in N). "
                + outside.joined(separator: "; ") + "."
            return figure(
                id: plot.id, section: "Residuals", plot: plot, caption: caption,
                csv: CSVTable(header: ["estimate", "low", "high", "events", "density_per_gev"], rows: rows))
        }
    }

    private static func densityFigures(_ input: ReportInput) -> [ReportFigure] {
        guard let network = input.components.first, !input.truthX.isEmpty else { return [] }
        return [("x", network.x, input.truthX), ("y", network.y, input.truthY)].map { axis, predicted, truth in
            let magnitudes = truth.map { abs(Double($0)) }.filter(\.isFinite).sorted()
            let extent = niceTicks(lower: 0, upper: max(quantile(sorted: magnitudes, 0.995), 1), target: 4).last!
            let binCount = 60
            let edges = (0...binCount).map { -extent + 2 * extent * Double($0) / Double(binCount) }
            let grid = DensityGrid(x: truth, y: predicted, xEdges: edges, yEdges: edges)
            var plot = SVGPlot(
                id: "density_\(axis)", title: "\(displayName(network.name)) against truth: u_{\(axis)}",
                x: PlotAxis("true u_{\(axis)}", unit: "GeV", range: -extent...extent),
                y: PlotAxis("\(displayName(network.name)) u_{\(axis)}", unit: "GeV", range: -extent...extent))
            plot.density = grid
            plot.referenceLines = [.diagonal]
            plot.height = 430
            var rows: [[String]] = []
            for (k, count) in grid.counts.enumerated() where count > 0 {
                let i = k % binCount
                let j = k / binCount
                rows.append([
                    csvNumber(edges[i]), csvNumber(edges[i + 1]), csvNumber(edges[j]), csvNumber(edges[j + 1]),
                    "\(count)",
                ])
            }
            let inside = grid.counts.reduce(0, +)
            let caption =
                "Events per bin of true and predicted u_\(axis), logarithmic colour scale; dashed: y = x. \(inside) of "
                + "\(truth.count) events inside the range."
            return figure(
                id: plot.id, section: "Predicted against truth", plot: plot, caption: caption,
                csv: CSVTable(
                    header: ["true_low", "true_high", "predicted_low", "predicted_high", "events"], rows: rows))
        }
    }

    private static func figure(id: String, section: String, plot: SVGPlot, caption: String, csv: CSVTable)
        -> ReportFigure
    {
        ReportFigure(id: id, section: section, plot: plot, rendered: plot.render(), caption: caption, csv: csv)
    }

    private static func summaryTable(_ evaluation: Evaluation) -> CSVTable {
        let components = evaluation.targetNames.count == 2 ? ["x", "y"] : evaluation.targetNames
        let header =
            ["estimate", "columns", "events", "loss_mse"] + components.map { "rmse_\($0)" } + [
                "rmse", "response", "sigma_parallel", "sigma_perpendicular",
            ]
        let rows = evaluation.estimates.map { e -> [String] in
            let recoil: [String] =
                e.summary.map { s in [s.rmse, s.response, s.parallelRMS, s.perpendicularRMS].map(csvNumber) } ?? [
                    "", "", "", "",
                ]
            let head: [String] = [
                e.name, e.columns.joined(separator: " "), String(e.summary?.count ?? evaluation.events),
                csvNumber(e.loss),
            ]
            return head + e.rmse.map(csvNumber) + recoil
        }
        return CSVTable(header: header, rows: rows)
    }

    // MARK: Output

    /// The CSV file of figure `id` (or `summary`) next to the page `html`: `report.html` → `report_<id>.csv`.
    public static func csvURL(for html: URL, id: String) -> URL {
        html.deletingLastPathComponent().appendingPathComponent(
            "\(html.deletingPathExtension().lastPathComponent)_\(id).csv")
    }

    /// Writes the page and its CSV files atomically (all or none replaced).
    public func write(to url: URL) throws {
        let page = html(csvStem: url.deletingPathExtension().lastPathComponent)
        var files: [(url: URL, body: (FileWriter) throws -> Void)] = [(url, { try $0.write(page) })]
        for (id, table) in [("summary", summary)] + figures.map({ ($0.id, $0.csv) }) {
            files.append((Self.csvURL(for: url, id: id), { try $0.write(table.text) }))
        }
        try AtomicFile.write(files)
    }

    /// The HTML page (XHTML-compatible HTML5: it is also well-formed XML), linking to `<csvStem>_<id>.csv`.
    public func html(csvStem: String) -> String {
        let e = input.evaluation
        var page = """
            <!DOCTYPE html>
            <html xmlns="http://www.w3.org/1999/xhtml" lang="en">
            <head>
            <meta charset="utf-8"/>
            <meta name="viewport" content="width=device-width, initial-scale=1"/>
            <meta name="color-scheme" content="light dark"/>
            <meta name="generator" content="hrtrain \(xmlEscaped(HRTrainVersion.string))"/>
            <title>\(xmlEscaped(input.title))</title>
            <style>
            \(Self.pageStyle)\(SVGPlot.styleSheet)</style>
            </head>
            <body>
            <header>
            <h1>\(xmlEscaped(input.title))</h1>
            <p class="lead">\(xmlEscaped(e.model)) on \(xmlEscaped(e.data)): \(e.events) events, network run on \
            \(xmlEscaped(e.backend)).</p>
            </header>

            """
        page += "<section id=\"summary\">\n<h2>Summary</h2>\n"
        page +=
            "<p class=\"note\">With n = u_t/|u_t| the truth recoil's direction: u∥ = u·n, u⊥ = u × n. Response "
            + "⟨u∥⟩/⟨|u_t|⟩ is a ratio of means; σ is the RMS about the mean. Events with |u_t| = 0 have no "
            + "direction and are left out of these figures. Loss and RMSE use every event.</p>\n"
        page += summaryHTML(csvStem: csvStem)
        page += "</section>\n"
        if !input.evaluation.verdicts.isEmpty { page += verdictHTML() }
        if input.history.isEmpty {
            page +=
                "<section id=\"training\">\n<h2>\(Self.trainingSection)</h2>\n<p class=\"note\">No training history: "
                + "give the run's metrics file with <code>--metrics</code>.</p>\n</section>\n"
        }
        var sections: [String] = []
        for f in figures where !sections.contains(f.section) { sections.append(f.section) }
        for section in sections {
            let anchor = String(section.lowercased().map { $0.isLetter ? $0 : "-" })
            let count = figures.filter { $0.section == section }.count
            page += "<section id=\"\(anchor)\">\n<h2>\(xmlEscaped(section))</h2>\n"
            if let note = sectionNotes[section] { page += "<p class=\"note\">\(xmlEscaped(note))</p>\n" }
            page += "<div class=\"figures n\(min(count, 3))\">\n"
            for f in figures where f.section == section {
                page +=
                    "<figure>\n\(f.rendered.svg)<figcaption>\(xmlEscaped(f.caption)) <a "
                    + "href=\"\(relativeLink("\(csvStem)_\(f.id).csv"))\">CSV</a></figcaption>\n</figure>\n"
            }
            page += "</div>\n</section>\n"
        }
        page += "<section id=\"provenance\">\n<h2>Provenance</h2>\n<table class=\"provenance\">\n<tbody>\n"
        for (name, value) in input.provenance {
            page += "<tr><th scope=\"row\">\(xmlEscaped(name))</th><td>\(xmlEscaped(value))</td></tr>\n"
        }
        page += "</tbody>\n</table>\n</section>\n</body>\n</html>\n"
        return page
    }

    /// The bin-by-bin verdict: the network's response-corrected resolutions over the best raw estimate's.
    private func verdictHTML() -> String {
        var html = "<section id=\"verdict\">\n<h2>Verdict: network against the best raw recoil</h2>\n"
        html +=
            "<p class=\"note\">Per bin, the network's σ/R divided by the smallest σ/R among the compared raw "
            + "recoils (named), with its statistical error: below 1 the network is better. better/worse: "
            + "more than 2σ from 1; equal: within "
            + "2σ.\(input.evaluation.calibrated ? " The network's response calibration is applied." : "")</p>\n"
        for verdict in input.evaluation.verdicts {
            let variable = verdict.binning.variable
            html += "<table class=\"summary\">\n<thead><tr><th>\(xmlEscaped(variable))</th><th>events</th>"
            html += "<th>response</th><th>σ(u∥−|u_t|)/R ratio</th><th>best raw</th><th>verdict</th>"
            html += "<th>σ(u⊥)/R ratio</th><th>best raw</th><th>verdict</th></tr></thead>\n<tbody>\n"
            for bin in verdict.bins {
                let edge = { (x: Double) in x.isInfinite ? "∞" : plainNumber(x) }
                let cells = [
                    "[\(edge(bin.lowerEdge)), \(edge(bin.upperEdge)))", "\(bin.count)",
                    tableNumber(bin.networkResponse),
                    "\(tableNumber(bin.parallelRatio)) ± \(tableNumber(bin.parallelRatioError))", bin.bestParallel,
                    RecoilVerdictBin.verdict(ratio: bin.parallelRatio, error: bin.parallelRatioError),
                    "\(tableNumber(bin.perpendicularRatio)) ± \(tableNumber(bin.perpendicularRatioError))",
                    bin.bestPerpendicular,
                    RecoilVerdictBin.verdict(ratio: bin.perpendicularRatio, error: bin.perpendicularRatioError),
                ]
                html += "<tr>" + cells.map { "<td>\(xmlEscaped($0))</td>" }.joined() + "</tr>\n"
            }
            html += "</tbody>\n</table>\n"
        }
        return html + "</section>\n"
    }

    private func summaryHTML(csvStem: String) -> String {
        let e = input.evaluation
        let components = e.targetNames.count == 2 ? ["x", "y"] : e.targetNames
        // The evaluation's loss is computed on unscaled values: GeV² whatever the training scaled.
        var html =
            "<table class=\"summary\">\n<thead><tr><th>estimate</th><th>columns</th><th>events</th><th>loss (MSE) "
            + "[GeV²]</th>"
        html += components.map { "<th>RMSE \(xmlEscaped($0)) [GeV]</th>" }.joined()
        html += "<th>response</th><th>σ(u∥ − |u_t|) [GeV]</th><th>σ(u⊥) [GeV]</th></tr></thead>\n<tbody>\n"
        for (k, estimate) in e.estimates.enumerated() {
            let s = estimate.summary
            let cells =
                ["\(s?.count ?? e.events)", tableNumber(estimate.loss)] + estimate.rmse.map(tableNumber) + [
                    s.map { tableNumber($0.response) } ?? "–", s.map { tableNumber($0.parallelRMS) } ?? "–",
                    s.map { tableNumber($0.perpendicularRMS) } ?? "–",
                ]
            html +=
                "<tr><th scope=\"row\"><span class=\"swatch "
                + "c\(k % SVGPlot.colours.count)\"></span>\(xmlEscaped(Self.displayName(estimate.name)))</th><td "
                + "class=\"text\">\(xmlEscaped(estimate.columns.joined(separator: ", ")))</td>"
            html += cells.map { "<td>\(xmlEscaped($0))</td>" }.joined() + "</tr>\n"
        }
        html +=
            "</tbody>\n</table>\n<p class=\"note\">The same figures as <code>hrtrain evaluate --json</code>; <a "
            + "href=\"\(relativeLink("\(csvStem)_summary.csv"))\">CSV</a>.</p>\n"
        return html
    }

    private static let pageStyle = """
        :root { color-scheme: light dark; --bg: #ffffff; --fg: #1b1d21; --muted: #565c66; --rule: #d4d7dc; --panel: \
        #f7f8fa; --link: #0062a3; }
        @media (prefers-color-scheme: dark) {
          :root { --bg: #14161a; --fg: #e3e5e8; --muted: #a0a6b0; --rule: #3a3f47; --panel: #1c1f24; --link: #7cc4f5; }
        }
        @media print {
          :root { --bg: #ffffff; --fg: #000000; --muted: #333333; --rule: #bbbbbb; --panel: #ffffff; --link: #000000; }
          body { max-width: none; padding: 0; }
          .figures.n2, .figures.n3 { grid-template-columns: repeat(2, minmax(0, 1fr)); }
          figure { break-inside: avoid; }
        }
        @page { size: A4; margin: 12mm; }
        body { background: var(--bg); color: var(--fg); font-family: "DejaVu Sans", "Helvetica Neue", Arial, \
        sans-serif; line-height: 1.4; margin: 0 auto; max-width: 1400px; padding: 20px 28px 40px; }
        h1 { font-size: 26px; margin: 0 0 4px; }
        h2 { font-size: 19px; margin: 30px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--rule); }
        a { color: var(--link); }
        .lead { color: var(--muted); margin: 0; }
        .note { color: var(--muted); font-size: 13px; }
        .figures { display: grid; grid-template-columns: minmax(0, 1fr); gap: 16px; }
        .figures.n2 { grid-template-columns: repeat(2, minmax(0, 1fr)); }
        .figures.n3 { grid-template-columns: repeat(3, minmax(0, 1fr)); }
        @media screen and (max-width: 1100px) { .figures.n3 { grid-template-columns: repeat(2, minmax(0, 1fr)); } }
        @media screen and (max-width: 760px) { .figures.n2, .figures.n3 { grid-template-columns: minmax(0, 1fr); } }
        figure { margin: 0; padding: 10px 10px 8px; background: var(--panel); border: 1px solid var(--rule); \
        border-radius: 6px; }
        figcaption { color: var(--muted); font-size: 12.5px; margin-top: 4px; }
        table { border-collapse: collapse; font-size: 14px; }
        th, td { padding: 5px 12px; border-bottom: 1px solid var(--rule); }
        table.summary th { white-space: nowrap; }
        table.summary td { text-align: right; font-variant-numeric: tabular-nums; }
        table.summary td.text, table.provenance td, th { text-align: left; }
        table.provenance td { font-family: "DejaVu Sans Mono", monospace; font-size: 12.5px; overflow-wrap: anywhere; }
        .swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; background: \
        currentColor; }

        """
}

/// A number in a CSV file: the shortest text that reads back as the same Double (`inf` for ∞).
func csvNumber(_ v: Double) -> String {
    v.isNaN ? "nan" : v.isInfinite ? (v > 0 ? "inf" : "-inf") : "\(v)"
}

/// A number in the summary table: four significant digits.
private func tableNumber(_ v: Double) -> String { v.isFinite ? String(format: "%.4g", v) : "–" }

/// The linearly interpolated quantile `q` of ascending `values` (NumPy's default); 0 for no values.
private func quantile(sorted values: [Double], _ q: Double) -> Double {
    guard !values.isEmpty else { return 0 }
    let position = q * Double(values.count - 1)
    let lower = Int(position.rounded(.down))
    let upper = min(lower + 1, values.count - 1)
    return values[lower] + (position - Double(lower)) * (values[upper] - values[lower])
}

/// Reads the metrics file of `hrtrain train --metrics`: one JSON object per line and epoch.
public func readMetrics(from url: URL) throws -> [EpochRecord] {
    let text = try InputFile.readText(url)
    let decoder = JSONDecoder()
    var records: [EpochRecord] = []
    // Lines may end in LF, CRLF or CR.
    for (number, line) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated()
    where !line.trimmingCharacters(in: .whitespaces).isEmpty {
        do { records.append(try decoder.decode(EpochRecord.self, from: Data(line.utf8))) } catch {
            throw DataError(
                "line \(number + 1) is not an epoch record (epoch, train_loss, val_loss, learning_rate, seconds, "
                    + "events_per_second): \(error)",
                url: url)
        }
    }
    guard !records.isEmpty else { throw DataError("the metrics file holds no epochs", url: url) }
    return records
}

/// A file name as a relative link in an `href`: percent-encoded (a `#`, `?` or `%` in the name would otherwise start
/// a fragment or a query) and then XML-escaped.
func relativeLink(_ fileName: String) -> String {
    var allowed = CharacterSet.urlPathAllowed
    allowed.remove(charactersIn: "?#%;:")
    return xmlEscaped(fileName.addingPercentEncoding(withAllowedCharacters: allowed) ?? fileName)
}
