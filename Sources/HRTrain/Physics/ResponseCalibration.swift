import Foundation

/// A response correction of a recoil estimate as a function of its own magnitude |û| (the quantity a
/// measurement has, unlike the truth |u_t|): `û_calibrated = û / R(|û|)`.
///
/// **Fit** (`fit`), on a calibration sample with truth:
/// 1. events with |u_t| = 0 are left out; the rest are split into `bins` bins of |û| holding equal numbers
///    of events (edges at the quantiles of |û|); every bin must hold at least `minimumEventsPerBin` events,
///    or the sample is refused;
/// 2. per bin, the response `R_k = Σ û·n / Σ |u_t|` (ratio of sums, n = u_t/|u_t|) and the mean |û|;
/// 3. isotonic regression (pool-adjacent-violators) of the `R_k`, weighted by `Σ |u_t|`, non-decreasing in
///    |û|: pooling two bins gives their pooled ratio of sums. Each pooled block becomes one knot, at its
///    mean |û|, with its pooled response;
/// 4. so that the calibrated magnitude |û|/R(|û|) keeps the order of |û|, the log-slope `d ln R / d ln|û|`
///    must stay below 1: going down from the largest |û|, a knot's response is raised to at least
///    `R_{k+1} / (1 + 0.9 · ln(m_{k+1}/m_k))`. This binds only at small |û|, where noise dominates the
///    estimate and its response falls about as fast as |û| (the raised knots are counted in `cappedKnots`):
///    there the correction is held back and the calibrated response stays below 1, instead of noise being
///    blown up.
///
/// **Apply** (`response(magnitude:)`): linear interpolation in ln|û| between the knots, constant beyond the
/// outermost ones (clamped), so R is continuous, monotone and positive.
public struct ResponseCalibration: Codable, Sendable, Equatable {
    /// The method, for the model file: `isotonic-log-linear`.
    public var method = "isotonic-log-linear"
    /// Knot positions in |û| (GeV), strictly ascending, > 0.
    public var magnitudes: [Double]
    /// The response at each knot, > 0.
    public var responses: [Double]
    /// Provenance: the |û| bin edges of the fit (the last is the sample's largest |û|).
    public var edges: [Double]
    /// Provenance: events per bin.
    public var counts: [Int]
    /// Provenance: the measured response of each bin (before the isotonic regression).
    public var measured: [Double]
    /// Events used.
    public var events: Int
    /// The calibration sample's file.
    public var sample: String?
    /// Knots whose response was capped by the order-keeping limit (step 4).
    public var cappedKnots = 0

    /// The response at predicted magnitude `m`.
    public func response(magnitude m: Double) -> Double {
        guard let first = magnitudes.first, let last = magnitudes.last else { return 1 }
        if !(m > first) { return responses[0] }
        if m >= last { return responses[responses.count - 1] }
        var low = 0
        var high = magnitudes.count - 1
        while high - low > 1 {
            let middle = (low + high) / 2
            if m >= magnitudes[middle] { low = middle } else { high = middle }
        }
        let t = (log(m) - log(magnitudes[low])) / (log(magnitudes[high]) - log(magnitudes[low]))
        return responses[low] + t * (responses[high] - responses[low])
    }

    /// Applies the correction in place to row-major `[rows, 2]` (x, y) predictions.
    public func apply(to predictions: inout [Float]) {
        for r in 0..<predictions.count / 2 {
            let x = Double(predictions[2 * r])
            let y = Double(predictions[2 * r + 1])
            let m = (x * x + y * y).squareRoot()
            if m == 0 { continue }
            let inverse = 1 / response(magnitude: m)
            predictions[2 * r] = Float(x * inverse)
            predictions[2 * r + 1] = Float(y * inverse)
        }
    }

    /// Checks what `apply` relies on; the message says what is wrong.
    public func validate() throws {
        func fail(_ message: String) -> BackendError { BackendError("calibration: " + message) }
        guard !magnitudes.isEmpty, magnitudes.count == responses.count else {
            throw fail("\(magnitudes.count) magnitudes for \(responses.count) responses")
        }
        guard magnitudes.allSatisfy({ $0.isFinite && $0 > 0 }),
            zip(magnitudes, magnitudes.dropFirst()).allSatisfy({ $0 < $1 })
        else { throw fail("the magnitudes must be finite, positive and strictly ascending") }
        guard responses.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw fail("the responses must be finite and positive")
        }
    }

    /// The errors `fit` throws.
    public struct FitError: Error, CustomStringConvertible, Equatable {
        /// What is wrong.
        public var description: String
    }

    /// Fits the calibration of `predictions` (`[rows, 2]`, uncalibrated) against `truth` (`[rows, 2]`).
    public static func fit(
        predictions: [Float], truth: [Float], bins: Int, minimumEventsPerBin: Int, sample: String? = nil
    ) throws -> ResponseCalibration {
        precondition(predictions.count == truth.count && predictions.count % 2 == 0, "fit: shapes differ")
        guard bins >= 1, minimumEventsPerBin >= 1 else {
            throw FitError(description: "needs at least one bin and one event per bin")
        }
        // (|û|, û·n, |u_t|) of every event with a truth direction.
        var events: [(magnitude: Double, parallel: Double, truth: Double)] = []
        events.reserveCapacity(predictions.count / 2)
        for r in 0..<predictions.count / 2 {
            let (ux, uy) = (Double(predictions[2 * r]), Double(predictions[2 * r + 1]))
            let (tx, ty) = (Double(truth[2 * r]), Double(truth[2 * r + 1]))
            let t = (tx * tx + ty * ty).squareRoot()
            guard t > 0, ux.isFinite, uy.isFinite, t.isFinite else { continue }
            events.append(((ux * ux + uy * uy).squareRoot(), (ux * tx + uy * ty) / t, t))
        }
        guard events.count >= bins * minimumEventsPerBin else {
            throw FitError(
                description:
                    "\(events.count) usable events are too few for \(bins) bins of at least "
                    + "\(minimumEventsPerBin) events each (need \(bins * minimumEventsPerBin)); use a "
                    + "larger calibration sample or fewer bins"
            )
        }
        events.sort { $0.magnitude < $1.magnitude }
        // Equal-population bins; (sum |û|, sum û·n, sum |u_t|, count) per bin.
        var blocks: [(magnitude: Double, parallel: Double, truth: Double, count: Int)] = []
        var edges = [events[0].magnitude]
        for b in 0..<bins {
            let range = (b * events.count / bins)..<((b + 1) * events.count / bins)
            var block = (magnitude: 0.0, parallel: 0.0, truth: 0.0, count: range.count)
            for e in events[range] {
                block.magnitude += e.magnitude
                block.parallel += e.parallel
                block.truth += e.truth
            }
            blocks.append(block)
            edges.append(events[range.upperBound - 1].magnitude)
        }
        let counts = blocks.map(\.count)
        let measured = blocks.map { $0.parallel / $0.truth }
        // Pool adjacent violators: the pooled response Σ parallel / Σ truth must not decrease.
        var pooled: [(magnitude: Double, parallel: Double, truth: Double, count: Int)] = []
        for block in blocks {
            pooled.append(block)
            while pooled.count >= 2 {
                let b = pooled[pooled.count - 1]
                let a = pooled[pooled.count - 2]
                // Merge on a decrease, and when the mean magnitudes coincide (ties in |û|).
                guard
                    b.parallel / b.truth < a.parallel / a.truth
                        || b.magnitude / Double(b.count) <= a.magnitude / Double(a.count)
                else { break }
                pooled.removeLast(2)
                pooled.append(
                    (a.magnitude + b.magnitude, a.parallel + b.parallel, a.truth + b.truth, a.count + b.count))
            }
        }
        var magnitudes = pooled.map { $0.magnitude / Double($0.count) }
        var responses = pooled.map { $0.parallel / $0.truth }
        if magnitudes[0] <= 0 {  // |û| = 0 throughout the first block: it carries no magnitude to scale
            magnitudes[0] = magnitudes.count > 1 ? magnitudes[1] * 1e-3 : 1
        }
        var capped = 0
        // From the top down: the well-measured large |û| keep their response; a small |û| whose response
        // falls faster than the limit allows is raised to it (it stays under-corrected, never blown up).
        for k in stride(from: responses.count - 2, through: 0, by: -1) {
            let limit = responses[k + 1] / (1 + 0.9 * log(magnitudes[k + 1] / magnitudes[k]))
            if responses[k] < limit {
                responses[k] = limit
                capped += 1
            }
        }
        guard responses.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw FitError(
                description:
                    "the measured response is not positive "
                    + "(\(responses.map { String(format: "%.3g", $0) }.joined(separator: ", "))): the "
                    + "estimate does not point along the truth recoil"
            )
        }
        let calibration = ResponseCalibration(
            magnitudes: magnitudes, responses: responses, edges: edges, counts: counts, measured: measured,
            events: events.count, sample: sample, cappedKnots: capped)
        try calibration.validate()
        return calibration
    }
}
