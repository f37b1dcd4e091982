import Foundation

/// A response correction of a recoil estimate as a function of its own magnitude |û| (the quantity a
/// measurement has, unlike the truth |u_t|): `û_calibrated = û / R(|û|)`.
///
/// **Fit in bins of the truth |u_t|** (`fit`, the default of `hrtrain calibrate`, method
/// `inverted-log-linear`): numerical inversion, iterated to closure.
/// 1. events with |u_t| = 0 are left out; the rest fall into the bins of |u_t| given by `truthEdges`
///    (`[e_k, e_{k+1})`, the last bin open; below `e_0`: the first). A sample with fewer than
///    `bins × minimumEventsPerBin` events is refused; then a bin holding fewer than `minimumEventsPerBin`
///    events is merged into its neighbour (from the top down, the first bin upwards);
/// 2. one knot per bin at the bin's mean uncalibrated |û| — the inversion of |u_t| → ⟨|û|⟩; adjacent bins
///    whose mean |û| rises by less than 5 % (`minimumKnotLogSpacing`; where noise sets |û|) are merged, so
///    the knots ascend and can be told apart;
/// 3. start from the response measured in each bin, `R_k = Σ û·n / Σ |u_t|` (ratio of sums, n = u_t/|u_t|);
/// 4. iterate: apply the current R(|û|) to every event, measure the calibrated response `ρ_k` of each truth
///    bin, and multiply `R_k` by `ρ_k^damping` (ρ_k clamped to [0.5, 2]; a damping below 1 keeps the
///    iteration from oscillating where neighbouring bins share events), until every `|ρ_k − 1|` is below
///    `tolerance` (knots held by the order-keeping limit excepted) or after `maximumIterations`. At the fixed
///    point the calibrated response is 1 in every truth bin — which a fit in bins of |û| does not give:
///    on a falling spectrum an event at a given |û| comes on average from a lower |u_t|, so a correction that
///    is right in bins of |û| undercorrects in bins of |u_t|;
/// 5. after every step, so that the calibrated magnitude |û|/R(|û|) keeps the order of |û|, the log-slope
///    `d ln R / d ln|û|` must stay below 1: going down from the largest |û|, a knot's response is raised to at
///    least `R_{k+1} / (1 + 0.9 · ln(m_{k+1}/m_k))`. This binds only at small |u_t|, where noise dominates
///    the estimate: there the correction is held back (`cappedKnots`) and the calibrated response stays below
///    1, instead of noise being blown up.
///
/// **Fit in bins of the predicted |û|** (`fitInPredictedBins`, method `isotonic-log-linear`, the method of
/// files written before): `bins` bins of |û| with equal numbers of events, `R_k` per bin, isotonic regression
/// (pool-adjacent-violators, weighted by Σ|u_t|, non-decreasing in |û|), one knot per pooled block at its
/// mean |û|, the same order-keeping limit. It gives response 1 in bins of |û|, not of |u_t|.
///
/// **Apply** (`response(magnitude:)`, the same for both methods): linear interpolation in ln|û| between the
/// knots, constant beyond the outermost ones (clamped), so R is continuous and positive.
public struct ResponseCalibration: Codable, Sendable, Equatable {
    /// The method of a fit in bins of the truth |u_t| (numerical inversion, iterated).
    public static let truthBinsMethod = "inverted-log-linear"
    /// The method of a fit in bins of the predicted |û| (isotonic regression), and of older files.
    public static let predictedBinsMethod = "isotonic-log-linear"
    /// The default bin edges of |u_t| (GeV) of `fit`: they contain the edges of `evaluate`'s bins
    /// (10, 20, 30, 50, 100), so the closure of the fit's bins is the closure of those.
    public static let defaultTruthEdges: [Double] = [
        0, 5, 10, 15, 20, 30, 40, 50, 70, 100, 150, 250,
    ]
    /// Adjacent bins of |u_t| whose knots (mean |û|) are closer than this in ln|û| are merged: closer knots
    /// cannot be told apart by a function of |û| at the resolutions of a recoil, and make the fit ill-posed.
    public static let minimumKnotLogSpacing = 0.05

    /// The fit's method, `inverted-log-linear` or `isotonic-log-linear` (both applied the same way).
    public var method = ResponseCalibration.truthBinsMethod
    /// Knot positions in |û| (GeV), strictly ascending, > 0.
    public var magnitudes: [Double]
    /// The response at each knot, > 0.
    public var responses: [Double]
    /// Provenance: the fit's bin edges — of |u_t| (`binning` "truth"; the last bin is open) or of |û|
    /// (`binning` absent; the last is the sample's largest |û|).
    public var edges: [Double]
    /// Provenance: events per bin.
    public var counts: [Int]
    /// Provenance: the measured response of each bin, before the calibration.
    public var measured: [Double]
    /// Events used.
    public var events: Int
    /// The calibration sample's file.
    public var sample: String?
    /// Knots whose response was capped by the order-keeping limit.
    public var cappedKnots = 0
    /// `truth` for a fit in bins of |u_t|; nil (files written before) for bins of |û|.
    public var binning: String?
    /// Iterations of a fit in bins of |u_t|.
    public var iterations: Int?
    /// The calibrated response in each bin of |u_t| on the calibration sample (fit in bins of |u_t|).
    public var closure: [Double]?

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
        guard method == Self.truthBinsMethod || method == Self.predictedBinsMethod else {
            throw fail(
                "unknown method \"\(method)\" (this hrtrain knows \(Self.truthBinsMethod) and "
                    + "\(Self.predictedBinsMethod))")
        }
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

    /// One event of a fit: |û|, û·n and |u_t|.
    private typealias Event = (magnitude: Double, parallel: Double, truth: Double)

    /// (|û|, û·n, |u_t|) of every event with a truth direction and a finite estimate.
    private static func events(predictions: [Float], truth: [Float]) -> [Event] {
        precondition(predictions.count == truth.count && predictions.count % 2 == 0, "fit: shapes differ")
        var events: [Event] = []
        events.reserveCapacity(predictions.count / 2)
        for r in 0..<predictions.count / 2 {
            let (ux, uy) = (Double(predictions[2 * r]), Double(predictions[2 * r + 1]))
            let (tx, ty) = (Double(truth[2 * r]), Double(truth[2 * r + 1]))
            let t = (tx * tx + ty * ty).squareRoot()
            guard t > 0, ux.isFinite, uy.isFinite, t.isFinite else { continue }
            events.append(((ux * ux + uy * uy).squareRoot(), (ux * tx + uy * ty) / t, t))
        }
        return events
    }

    /// Refuses a sample with fewer than `bins × minimumEventsPerBin` usable events.
    private static func requireEvents(_ count: Int, bins: Int, minimumEventsPerBin: Int) throws {
        guard bins >= 1, minimumEventsPerBin >= 1 else {
            throw FitError(description: "needs at least one bin and one event per bin")
        }
        guard count >= bins * minimumEventsPerBin else {
            throw FitError(
                description:
                    "\(count) usable events are too few for \(bins) bins of at least "
                    + "\(minimumEventsPerBin) events each (need \(bins * minimumEventsPerBin)); use a "
                    + "larger calibration sample or fewer bins"
            )
        }
    }

    /// The order-keeping limit: from the top down, `R_k ≥ R_{k+1} / (1 + 0.9 ln(m_{k+1}/m_k))`. Returns
    /// which knots were raised.
    private static func capSlopes(_ responses: inout [Double], magnitudes: [Double]) -> [Bool] {
        var capped = [Bool](repeating: false, count: responses.count)
        for k in stride(from: responses.count - 2, through: 0, by: -1) {
            let limit = responses[k + 1] / (1 + 0.9 * log(magnitudes[k + 1] / magnitudes[k]))
            if responses[k] < limit {
                responses[k] = limit
                capped[k] = true
            }
        }
        return capped
    }

    /// Refuses a response that is not positive (an estimate that does not point along the truth).
    private static func requirePositive(_ responses: [Double]) throws {
        guard responses.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw FitError(
                description:
                    "the measured response is not positive "
                    + "(\(responses.map { String(format: "%.3g", $0) }.joined(separator: ", "))): the "
                    + "estimate does not point along the truth recoil"
            )
        }
    }

    /// The largest |ρ_k − 1| a fit in bins of |u_t| may end with in a bin whose knot is not held back: a fit
    /// that stops further from closure has not converged and is refused.
    public static let closureLimit = 0.01

    /// Fits the calibration of `predictions` (`[rows, 2]`, uncalibrated) against `truth` (`[rows, 2]`) in bins
    /// of the truth |u_t| with edges `truthEdges` (ascending; the last bin open): numerical inversion iterated
    /// until the calibrated response of every bin is within `tolerance` of 1 (see the type's documentation).
    public static func fit(
        predictions: [Float], truth: [Float], truthEdges: [Double] = defaultTruthEdges, minimumEventsPerBin: Int,
        maximumIterations: Int = 200, damping: Double = 0.5, tolerance: Double = 1e-4, sample: String? = nil
    ) throws -> ResponseCalibration {
        precondition(
            !truthEdges.isEmpty && zip(truthEdges, truthEdges.dropFirst()).allSatisfy { $0 < $1 },
            "fit: the edges must ascend")
        let events = events(predictions: predictions, truth: truth)
        try requireEvents(events.count, bins: truthEdges.count, minimumEventsPerBin: minimumEventsPerBin)
        // Bin k of |u_t|: [e_k, e_{k+1}), the last open, below e_0 the first.
        func truthBin(_ t: Double) -> Int {
            var low = 0
            var high = truthEdges.count
            while high - low > 1 {
                let middle = (low + high) / 2
                if t >= truthEdges[middle] { low = middle } else { high = middle }
            }
            return low
        }
        let initialBins = events.map { truthBin($0.truth) }
        var binCounts = [Int](repeating: 0, count: truthEdges.count)
        for b in initialBins { binCounts[b] += 1 }
        // Merged bins as ranges of the initial ones; first sparse bins from the top down, then bins whose
        // mean |û| does not rise.
        var groups: [ClosedRange<Int>] = (0..<truthEdges.count).map { $0...$0 }
        func count(_ g: ClosedRange<Int>) -> Int { g.reduce(0) { $0 + binCounts[$1] } }
        var g = groups.count - 1
        while g > 0 {
            if count(groups[g]) < minimumEventsPerBin {
                groups[g - 1] = groups[g - 1].lowerBound...groups[g].upperBound
                groups.remove(at: g)
            }
            g -= 1
        }
        while groups.count > 1 && count(groups[0]) < minimumEventsPerBin {
            groups[1] = groups[0].lowerBound...groups[1].upperBound
            groups.remove(at: 0)
        }
        var magnitudeSums = [Double](repeating: 0, count: truthEdges.count)
        for (e, b) in zip(events, initialBins) { magnitudeSums[b] += e.magnitude }
        func meanMagnitude(_ g: ClosedRange<Int>) -> Double {
            g.reduce(0) { $0 + magnitudeSums[$1] } / Double(count(g))
        }
        var merged: [ClosedRange<Int>] = []
        for group in groups {
            merged.append(group)
            while merged.count >= 2,
                meanMagnitude(merged[merged.count - 1])
                    < meanMagnitude(merged[merged.count - 2]) * exp(minimumKnotLogSpacing)
            {
                let b = merged.removeLast()
                let a = merged.removeLast()
                merged.append(a.lowerBound...b.upperBound)
            }
        }
        var groupOf = [Int](repeating: 0, count: truthEdges.count)
        for (index, group) in merged.enumerated() { for b in group { groupOf[b] = index } }
        let bin = initialBins.map { groupOf[$0] }
        let binCount = merged.count
        var truthSums = [Double](repeating: 0, count: binCount)
        var parallelSums = [Double](repeating: 0, count: binCount)
        for (e, b) in zip(events, bin) {
            truthSums[b] += e.truth
            parallelSums[b] += e.parallel
        }
        var magnitudes = merged.map(meanMagnitude)
        let measured = (0..<binCount).map { parallelSums[$0] / truthSums[$0] }
        if magnitudes[0] <= 0 {  // |û| = 0 throughout the first bin: it carries no magnitude to scale
            magnitudes[0] = magnitudes.count > 1 ? magnitudes[1] * 1e-3 : 1
        }
        var calibration = ResponseCalibration(
            method: truthBinsMethod, magnitudes: magnitudes, responses: measured,
            edges: merged.map { truthEdges[$0.lowerBound] }, counts: merged.map(count), measured: measured,
            events: events.count, sample: sample, binning: "truth")
        var capped = capSlopes(&calibration.responses, magnitudes: magnitudes)
        // The calibrated response of every bin under the current calibration.
        func closure() -> [Double] {
            var sums = [Double](repeating: 0, count: binCount)
            for (e, b) in zip(events, bin) { sums[b] += e.parallel / calibration.response(magnitude: e.magnitude) }
            return (0..<binCount).map { sums[$0] / truthSums[$0] }
        }
        var current = closure()
        var iterations = 0
        while iterations < maximumIterations
            && zip(current, capped).contains(where: { !$1 && abs($0 - 1) >= tolerance })
        {
            for k in 0..<binCount { calibration.responses[k] *= pow(min(max(current[k], 0.5), 2), damping) }
            capped = capSlopes(&calibration.responses, magnitudes: magnitudes)
            current = closure()
            iterations += 1
        }
        calibration.cappedKnots = capped.filter { $0 }.count
        calibration.iterations = iterations
        calibration.closure = current
        try requirePositive(calibration.responses)
        // A bin that no knot can close (its response set by the events beyond another knot, as with a nearly
        // flat or tiny response) makes its knot grow without bound: refuse, never write such a calibration.
        let unclosed = (0..<binCount).filter { !capped[$0] && !(abs(current[$0] - 1) < closureLimit) }
        if !unclosed.isEmpty {
            let bins = unclosed.prefix(4).map { k in
                let next = merged[k].upperBound + 1
                let high = next < truthEdges.count ? String(format: "%g", truthEdges[next]) : "∞"
                let low = String(format: "%g", truthEdges[merged[k].lowerBound])
                return "[\(low), \(high)) \(String(format: "%.4g", current[k]))"
            }
            throw FitError(
                description:
                    "the fit in bins of |u_t| did not close after \(iterations) iterations: calibrated response "
                    + bins.joined(separator: "; ") + (unclosed.count > 4 ? "; …" : "")
                    + " (more than \(String(format: "%g", closureLimit * 100)) % from 1; measured responses "
                    + measured.map { String(format: "%.3g", $0) }.joined(separator: ", ")
                    + "). The estimate's response is too small or too flat in |u_t| to invert; nothing was "
                    + "written. Train the model further, or fit in bins of the predicted |û| (--binning predicted)")
        }
        try calibration.validate()
        return calibration
    }

    /// Fits the calibration of `predictions` (`[rows, 2]`, uncalibrated) against `truth` (`[rows, 2]`) in
    /// `bins` bins of the predicted |û| holding equal numbers of events (isotonic; the method of files written
    /// before `fit` binned in |u_t|). It gives response 1 in bins of |û|, not in bins of |u_t|.
    public static func fitInPredictedBins(
        predictions: [Float], truth: [Float], bins: Int, minimumEventsPerBin: Int, sample: String? = nil
    ) throws -> ResponseCalibration {
        var events = events(predictions: predictions, truth: truth)
        try requireEvents(events.count, bins: bins, minimumEventsPerBin: minimumEventsPerBin)
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
        // From the top down: the well-measured large |û| keep their response; a small |û| whose response
        // falls faster than the limit allows is raised to it (it stays under-corrected, never blown up).
        let capped = capSlopes(&responses, magnitudes: magnitudes)
        try requirePositive(responses)
        let calibration = ResponseCalibration(
            method: predictedBinsMethod, magnitudes: magnitudes, responses: responses, edges: edges, counts: counts,
            measured: measured, events: events.count, sample: sample, cappedKnots: capped.filter { $0 }.count)
        try calibration.validate()
        return calibration
    }
}
