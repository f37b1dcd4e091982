import Foundation

/// A binning of the recoil figures: the variable, where it comes from, and the bin edges.
public struct RecoilBinning: Codable, Sendable, Equatable {
    /// The variable's name in tables (`|u_t|`, `mu`, `n_pv`).
    public var variable: String
    /// The data column holding it; nil for the truth recoil magnitude |u_t|, computed from the targets.
    public var column: String?
    /// Ascending bin edges; the last may be infinite.
    public var edges: [Double]

    /// Creates a binning.
    public init(variable: String, column: String?, edges: [Double]) {
        self.variable = variable
        self.column = column
        self.edges = edges
    }

    /// The truth recoil magnitude |u_t| in GeV: 0, 10, 20, 30, 50, 100, ∞.
    public static let truthMagnitude = RecoilBinning(
        variable: "|u_t|", column: nil, edges: [0, 10, 20, 30, 50, 100, .infinity])
    /// Pile-up μ (column `mu`): 0, 20, 30, 40, 50, ∞.
    public static let pileUp = RecoilBinning(variable: "mu", column: "mu", edges: [0, 20, 30, 40, 50, .infinity])
    /// The number of primary vertices (column `n_pv`): 0, 10, 20, 30, ∞.
    public static let primaryVertices = RecoilBinning(
        variable: "n_pv", column: "n_pv", edges: [0, 10, 20, 30, .infinity])
    /// The binnings `hrtrain evaluate` reports (those whose column the data lacks are skipped).
    public static let standard = [truthMagnitude, pileUp, primaryVertices]
}

/// The recoil figures of one estimate in the bins of one variable.
public struct BinnedRecoilFigures: Codable, Sendable, Equatable {
    /// The binning variable and edges.
    public var binning: RecoilBinning
    /// One entry per bin (a bin without events has count 0 and NaN figures).
    public var bins: [RecoilBin]
}

/// How well one estimate of the recoil (the network's prediction or a raw recoil pair of the data) matches
/// the truth.
public struct RecoilEstimate: Codable, Sendable, Equatable {
    /// `network`, or the name of the raw recoil (`hr_all` for `hr_all_x,hr_all_y`).
    public var name: String
    /// The estimate's columns: the model's targets for the network, the data's columns otherwise.
    public var columns: [String]
    /// Mean squared error over all elements (events × components), in the target units: the training loss'
    /// definition, applied to unscaled values.
    public var loss: Double
    /// Root-mean-square error of each component, in the order of the targets.
    public var rmse: [Double]
    /// Response and resolutions over all events (two-component targets only).
    public var summary: RecoilSummary?
    /// Response and resolutions in bins of |u_t|, μ and N_PV (two-component targets only).
    public var binned: [BinnedRecoilFigures]
}

/// The network against the best raw estimate in one bin: the ratios of the response-corrected resolutions
/// (below 1: the network is better), with their statistical errors (independent samples' errors combined).
public struct RecoilVerdictBin: Codable, Sendable, Equatable {
    /// Bin edges in the binning variable.
    public var lowerEdge: Double
    /// Upper bin edge.
    public var upperEdge: Double
    /// Events in the bin.
    public var count: Int
    /// The network's response in the bin.
    public var networkResponse: Double
    /// The raw estimate with the smallest σ(u∥ − |u_t|)/R in the bin.
    public var bestParallel: String
    /// Network's σ(u∥ − |u_t|)/R over the best raw estimate's.
    public var parallelRatio: Double
    /// Statistical error of `parallelRatio`.
    public var parallelRatioError: Double
    /// The raw estimate with the smallest σ(u⊥)/R in the bin.
    public var bestPerpendicular: String
    /// Network's σ(u⊥)/R over the best raw estimate's.
    public var perpendicularRatio: Double
    /// Statistical error of `perpendicularRatio`.
    public var perpendicularRatioError: Double

    /// `better` (ratio more than 2σ below 1), `worse` (more than 2σ above), else `equal` (within 2σ);
    /// `-` for an empty bin, and where the ratio or its error is undefined: a network whose response in the bin
    /// is not positive (σ/R ≤ 0), or a width without an error (a single event).
    public static func verdict(ratio: Double, error: Double) -> String {
        guard ratio.isFinite, ratio > 0, error.isFinite else { return "-" }
        if ratio + 2 * error < 1 { return "better" }
        if ratio - 2 * error > 1 { return "worse" }
        return "equal"
    }
}

/// The bin-by-bin verdict in one binning.
public struct RecoilVerdict: Codable, Sendable, Equatable {
    /// The binning variable and edges.
    public var binning: RecoilBinning
    /// One entry per bin.
    public var bins: [RecoilVerdictBin]
}

/// The evaluation of a model on a sample: loss, per-component RMSE and the recoil-calibration figures
/// (response, resolutions of u∥ and u⊥ in bins) of the network and of the raw recoil estimates it is
/// compared with. Codable: `hrtrain evaluate --json` prints it and reports reuse it.
public struct Evaluation: Codable, Sendable, Equatable {
    /// The model file.
    public var model: String
    /// The data file.
    public var data: String
    /// Where the network ran.
    public var backend: String
    /// Events evaluated.
    public var events: Int
    /// The truth columns (the model's targets).
    public var targetNames: [String]
    /// The network first, then each compared raw recoil.
    public var estimates: [RecoilEstimate]
    /// The network against the best compared raw recoil, bin by bin (empty without comparisons).
    public var verdicts: [RecoilVerdict]
    /// Whether the model's response calibration was applied to the network's predictions.
    public var calibrated: Bool

    /// Evaluates `predictions` (`[rows, targets]`, unscaled) against the truth columns `targetNames` of
    /// `table` (read from `data`), and each column list of `comparisons` (as many columns as targets) the
    /// same way. Binnings whose column `table` lacks are skipped; recoil figures need two targets (x, y).
    public init(
        predictions: [Float], table: Table, targetNames: [String], comparisons: [[String]] = [], model: String,
        data: String, backend: String,
        binnings: [RecoilBinning] = RecoilBinning.standard, calibrated: Bool = false
    ) throws {
        let components = targetNames.count
        precondition(
            predictions.count == table.rowCount * components, "Evaluation: predictions are not [rows, targets]")
        let truth = try targetNames.map { name -> [Float] in
            guard let i = table.columnIndex(name) else {
                var error = DataError.unknownColumn(name, available: table.columnNames, file: data, field: .data)
                error.message = "the truth column of the model's target \"\(name)\" is missing: " + error.message
                throw error
            }
            return table.column(i)
        }
        var estimates = [
            Self.estimate(
                name: "network", columns: targetNames,
                values: (0..<components).map { c in
                    stride(from: c, to: predictions.count, by: components).map { predictions[$0] }
                }, truth: truth, table: table, binnings: binnings)
        ]
        for columns in comparisons {
            guard columns.count == components else {
                throw DataError(
                    "\(columns.joined(separator: ",")) names \(columns.count) column\(columns.count == 1 ? "" : "s"); "
                        + "give one per target (\(targetNames.joined(separator: ",")))",
                    file: data, field: .compare)
            }
            let indices = try table.indices(of: columns, file: data, field: .compare)
            estimates.append(
                Self.estimate(
                    name: Self.recoilName(columns), columns: columns, values: indices.map(table.column), truth: truth,
                    table: table, binnings: binnings))
        }
        self.model = model
        self.data = data
        self.backend = backend
        events = table.rowCount
        self.targetNames = targetNames
        self.estimates = estimates
        self.calibrated = calibrated
        verdicts = Self.verdicts(estimates)
    }

    /// Per binning and bin: the network against the compared estimate with the smallest response-corrected
    /// resolution (chosen separately for u∥ and u⊥).
    static func verdicts(_ estimates: [RecoilEstimate]) -> [RecoilVerdict] {
        guard let network = estimates.first, estimates.count > 1 else { return [] }
        let raw = estimates.dropFirst()
        return network.binned.enumerated().map { b, binned in
            let bins = binned.bins.enumerated().map { i, n -> RecoilVerdictBin in
                func best(_ value: (RecoilBin) -> Double, _ error: (RecoilBin) -> Double) -> (String, Double, Double) {
                    var choice: (name: String, value: Double, error: Double) = ("-", .nan, .nan)
                    for e in raw {
                        let bin = e.binned[b].bins[i]
                        let v = value(bin)
                        if v.isFinite && v > 0 && !(choice.value <= v) { choice = (e.name, v, error(bin)) }
                    }
                    let ratio = value(n) / choice.value
                    let relative =
                        (pow(error(n) / value(n), 2) + pow(choice.error / choice.value, 2)).squareRoot()
                    return (choice.name, ratio, abs(ratio) * relative)
                }
                let parallel = best(\.correctedParallelRMS, \.correctedParallelRMSError)
                let perpendicular = best(\.correctedPerpendicularRMS, \.correctedPerpendicularRMSError)
                return RecoilVerdictBin(
                    lowerEdge: n.lowerEdge, upperEdge: n.upperEdge, count: n.count, networkResponse: n.response,
                    bestParallel: parallel.0, parallelRatio: parallel.1, parallelRatioError: parallel.2,
                    bestPerpendicular: perpendicular.0, perpendicularRatio: perpendicular.1,
                    perpendicularRatioError: perpendicular.2)
            }
            return RecoilVerdict(binning: binned.binning, bins: bins)
        }
    }

    /// `hr_all` for `hr_all_x,hr_all_y`; the columns joined by commas otherwise.
    static func recoilName(_ columns: [String]) -> String {
        if columns.count == 2, columns[0].hasSuffix("x"), columns[1].hasSuffix("y"),
            columns[0].dropLast() == columns[1].dropLast()
        {
            let stem = columns[0].dropLast()
            let name = stem.hasSuffix("_") ? stem.dropLast() : stem
            if !name.isEmpty { return String(name) }
        }
        return columns.joined(separator: ",")
    }

    /// The figures of one estimate (`values[component][row]`) against `truth[component][row]`.
    private static func estimate(
        name: String, columns: [String], values: [[Float]], truth: [[Float]], table: Table, binnings: [RecoilBinning]
    ) -> RecoilEstimate {
        let rows = table.rowCount
        let squared = zip(values, truth).map { v, t -> Double in
            var sum = 0.0
            for (p, q) in zip(v, t) {
                let d = Double(p) - Double(q)
                sum += d * d
            }
            return sum
        }
        let loss = squared.reduce(0, +) / Double(max(rows * values.count, 1))
        let rmse = squared.map { ($0 / Double(max(rows, 1))).squareRoot() }
        guard values.count == 2 else {
            return RecoilEstimate(name: name, columns: columns, loss: loss, rmse: rmse, summary: nil, binned: [])
        }
        let summary = recoilSummary(predictedX: values[0], predictedY: values[1], truthX: truth[0], truthY: truth[1])
        let binned = binnings.compactMap { binning -> BinnedRecoilFigures? in
            let variable: [Float]
            if let column = binning.column {
                guard let i = table.columnIndex(column) else { return nil }
                variable = table.column(i)
            } else {
                variable = zip(truth[0], truth[1]).map { (x: Float, y: Float) -> Float in
                    let (dx, dy) = (Double(x), Double(y))
                    return Float((dx * dx + dy * dy).squareRoot())
                }
            }
            let bins = recoilFigures(
                predictedX: values[0], predictedY: values[1], truthX: truth[0], truthY: truth[1], variable: variable,
                edges: binning.edges)
            return BinnedRecoilFigures(binning: binning, bins: bins)
        }
        return RecoilEstimate(name: name, columns: columns, loss: loss, rmse: rmse, summary: summary, binned: binned)
    }

    /// The JSON encoder for evaluations: sorted keys, pretty printed; NaN (empty bins) and the infinite
    /// last edges written as the strings "nan", "inf", "-inf".
    public static func jsonEncoder() -> JSONEncoder {
        let encoder = JSON.encoder(pretty: true)
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return encoder
    }

    /// The JSON decoder matching `jsonEncoder()`.
    public static func jsonDecoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return decoder
    }
}
