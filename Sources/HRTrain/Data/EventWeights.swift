import Foundation

/// Weights that make the spectrum of the target magnitude |y| flat in given bins (DeepMET-style), for the
/// weighted loss (`hrtrain train --flatten-target-magnitude`).
///
/// For bin edges `e₀ < … < e_K` and the N training events, N_k of them in bin k (an event below `e₀` counts
/// in the first bin, one at or above `e_K` in the last):
/// ```
/// raw_k = min(((N / K) / N_k)^α, maximum)       (N_k = 0: maximum)
/// w_k   = raw_k / (Σ_k N_k raw_k / N)           (mean 1 over the training events)
/// ```
/// α = 1 flattens fully, 0.5 half-way, 0 gives unit weights. The cap bounds the weight of sparsely populated
/// bins before the normalisation (default 100: no event counts for more than 100 events of the average bin).
/// Validation and test events get the weight of their bin, with the training normalisation.
public struct TargetMagnitudeFlattening: Codable, Sendable, Equatable {
    /// The default cap on the raw bin weight, before normalisation.
    public static let defaultMaximumWeight = 100.0

    /// Ascending bin edges of |y|.
    public var edges: [Double]
    /// The power α.
    public var power: Double
    /// The cap on the raw bin weight.
    public var maximumWeight: Double
    /// Training events per bin.
    public var trainingCounts: [Int]
    /// The normalised weight of each bin.
    public var binWeights: [Double]

    /// Fits the bin weights to the target magnitudes of the training events.
    public static func fit(
        magnitudes: [Double], edges: [Double], power: Double, maximumWeight: Double = defaultMaximumWeight,
        file: String
    ) throws -> TargetMagnitudeFlattening {
        try validate(edges: edges, power: power, maximumWeight: maximumWeight, file: file)
        return try fit(
            counts: counts(magnitudes: magnitudes, edges: edges), edges: edges, power: power,
            maximumWeight: maximumWeight, file: file)
    }

    /// The training events per bin of `edges` (the histogram `fit` starts from; summed over the ranks of a
    /// data-parallel job, each counting its own rows).
    public static func counts(magnitudes: [Double], edges: [Double]) -> [Int] {
        let binner = TargetMagnitudeFlattening(
            edges: edges, power: 0, maximumWeight: 1, trainingCounts: [], binWeights: [])
        var counts = [Int](repeating: 0, count: max(edges.count - 1, 0))
        for m in magnitudes { counts[binner.bin(of: m)] += 1 }
        return counts
    }

    /// Fits the bin weights to the training events' histogram `counts` (one count per bin of `edges`).
    public static func fit(
        counts: [Int], edges: [Double], power: Double, maximumWeight: Double = defaultMaximumWeight, file: String
    ) throws -> TargetMagnitudeFlattening {
        try validate(edges: edges, power: power, maximumWeight: maximumWeight, file: file)
        guard counts.count == edges.count - 1, counts.reduce(0, +) > 0 else {
            throw DataError("no training events", file: file, field: .flattening)
        }
        var flattening = TargetMagnitudeFlattening(
            edges: edges, power: power, maximumWeight: maximumWeight, trainingCounts: counts, binWeights: [])
        let n = Double(counts.reduce(0, +))
        let binCount = Double(edges.count - 1)
        // An empty bin (no training event; it weights validation and test rows only) gets the limit of the rule as
        // its count goes to 0: the cap for a power above 0, and 1 for power 0 (unit weights everywhere).
        let raw = flattening.trainingCounts.map { count -> Double in
            count == 0
                ? (power == 0 ? 1 : maximumWeight) : min(pow(n / binCount / Double(count), power), maximumWeight)
        }
        let mean = zip(raw, flattening.trainingCounts).reduce(0) { $0 + $1.0 * Double($1.1) } / n
        flattening.binWeights = raw.map { $0 / mean }
        return flattening
    }

    private static func validate(edges: [Double], power: Double, maximumWeight: Double, file: String) throws {
        guard edges.count >= 2, zip(edges, edges.dropFirst()).allSatisfy({ $0 < $1 }), edges.allSatisfy(\.isFinite)
        else {
            throw DataError(
                "the bin edges must be at least two finite, strictly ascending numbers, got \(edges)",
                file: file, field: .flattening)
        }
        guard power.isFinite, power >= 0 else {
            throw DataError("the power α must be a finite number ≥ 0, got \(power)", file: file, field: .flattening)
        }
        guard maximumWeight.isFinite, maximumWeight >= 1 else {
            throw DataError(
                "must be a finite number ≥ 1, got \(maximumWeight)", file: file, field: .flattening)
        }
    }

    /// The bin of magnitude `m`: `edges[k] ≤ m < edges[k+1]`, the first bin below `e₀`, the last at or above `e_K`.
    public func bin(of m: Double) -> Int {
        var low = 0
        var high = edges.count - 1
        if m < edges[1] { return 0 }
        if m >= edges[high - 1] { return high - 1 }
        while high - low > 1 {
            let middle = (low + high) / 2
            if m >= edges[middle] { low = middle } else { high = middle }
        }
        return low
    }

    /// The weight of an event with target magnitude `m`.
    public func weight(magnitude m: Double) -> Double { binWeights[bin(of: m)] }
}

/// The magnitudes `√(Σ_c y_rc²)` of the rows of a row-major `[rows, columns]` table.
public func rowMagnitudes(_ values: [Float], columns: Int) -> [Double] {
    let rows = values.count / max(columns, 1)
    return (0..<rows).map { r in
        var sum = 0.0
        for c in 0..<columns {
            let v = Double(values[r * columns + c])
            sum += v * v
        }
        return sum.squareRoot()
    }
}

/// Parses bin edges written `0,10,20,30,50,100,200` (GeV).
public func parseBinEdges(_ text: String) throws -> [Double] {
    func fail(_ message: String) -> DataError { DataError(message, file: "bin edges", field: .flattening) }
    let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    let edges = try parts.map { part -> Double in
        guard let v = Double(part), v.isFinite else {
            throw fail("\"\(part)\" is not a number (give bin edges such as 0,10,20,50,100)")
        }
        return v
    }
    guard edges.count >= 2, zip(edges, edges.dropFirst()).allSatisfy({ $0 < $1 }) else {
        throw fail("needs at least two strictly ascending bin edges, got \(text)")
    }
    return edges
}
