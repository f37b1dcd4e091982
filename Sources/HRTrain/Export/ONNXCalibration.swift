import Foundation

/// A model's response calibration in the form the exported ONNX graph computes it, with a Double twin of that
/// computation which the exporter checks against `ResponseCalibration.apply` before it writes anything.
///
/// `ResponseCalibration` (methods `isotonic-log-linear` and `inverted-log-linear`: two fits, one apply rule)
/// applies `û / R(|û|)`, R linear in ln|û| between the knots `(m_k, r_k)` and constant beyond the outermost
/// ones, and leaves |û| = 0 unchanged. With
/// `l_k = ln m_k` and `s_k = (r_{k+1} − r_k) / (l_{k+1} − l_k)` that is, for every |û|,
/// ```
/// L = ln(max(|û|, m_0))                                          Max, Log
/// R = r_0 + Σ_k s_k · (min(max(L, l_k), l_{k+1}) − l_k)           Max, Min, Sub, MatMul, Add
/// û_calibrated = û / R                                           Div
/// ```
/// (the sum telescopes to the interpolation inside the knots and to `r_0` / `r_{K−1}` outside them); at
/// |û| = 0, R = r_0 and 0 / r_0 = 0, so zero stays zero without a branch. The graph holds these constants
/// rounded to float32 and computes in float32; knots that float32 cannot tell apart in ln|û| are refused.
struct ONNXCalibration: Sendable, Equatable {
    /// The methods whose apply rule this form reproduces (they differ in how the knots were fitted).
    static let methods: Set<String> = ["isotonic-log-linear", "inverted-log-linear"]
    /// The keys of the stored calibration: `magnitudes`, `responses` and `method` define the function; the
    /// rest is provenance (the fit's bins, counts, sample, iterations, closure). Any other key may change the
    /// function: refused.
    static let understoodKeys: Set<String> = [
        "method", "magnitudes", "responses", "edges", "counts", "measured", "events", "sample", "cappedKnots",
        "binning", "iterations", "closure",
    ]

    /// The smallest knot magnitude `m_0` (GeV): |û| is raised to it before the logarithm.
    var floorMagnitude: Double
    /// `l_k = ln m_k` for k = 0 … K−2.
    var lowerKnots: [Double]
    /// `l_{k+1}` for k = 0 … K−2.
    var upperKnots: [Double]
    /// `s_k`, per segment.
    var slopes: [Double]
    /// `r_0`, the response at and below the first knot.
    var baseResponse: Double

    /// The exported form of `calibration`; throws (saying why) if its method is not the one this reproduces.
    init(_ calibration: ResponseCalibration) throws {
        guard Self.methods.contains(calibration.method) else {
            throw BackendError(
                "the response calibration's method is \"\(calibration.method)\", not one of "
                    + Self.methods.sorted().map { "\"\($0)\"" }.joined(separator: ", "))
        }
        try calibration.validate()
        let logs = calibration.magnitudes.map { Foundation.log($0) }
        if zip(logs, logs.dropFirst()).contains(where: { !(Float($0) < Float($1)) }) {
            throw BackendError(
                "the response calibration has knots closer than float32 resolves in ln|û| "
                    + "(\(calibration.magnitudes.map { "\($0)" }.joined(separator: ", ")) GeV)")
        }
        floorMagnitude = calibration.magnitudes[0]
        baseResponse = calibration.responses[0]
        lowerKnots = Array(logs.dropLast())
        upperKnots = Array(logs.dropFirst())
        let responses = calibration.responses
        var slopes: [Double] = []
        for k in 0..<logs.count - 1 {
            let rise: Double = responses[k + 1] - responses[k]
            let run: Double = logs[k + 1] - logs[k]
            slopes.append(rise / run)
        }
        self.slopes = slopes
    }

    /// R(|û|) as the graph computes it, in Double.
    func response(magnitude: Double) -> Double {
        let l = Foundation.log(max(magnitude, floorMagnitude))
        var r = baseResponse
        for k in 0..<slopes.count { r += slopes[k] * (min(max(l, lowerKnots[k]), upperKnots[k]) - lowerKnots[k]) }
        return r
    }

    /// The graph's calibration step on row-major `[rows, 2]` predictions, in Double, rounded to Float.
    func apply(to predictions: inout [Float]) {
        for r in 0..<predictions.count / 2 {
            let (x, y) = (Double(predictions[2 * r]), Double(predictions[2 * r + 1]))
            let response = response(magnitude: (x * x + y * y).squareRoot())
            predictions[2 * r] = Float(x / response)
            predictions[2 * r + 1] = Float(y / response)
        }
    }

    /// Probe predictions that exercise every part of the function: |û| = 0, below the first knot, at and
    /// around every knot, between knots, and far above the last, in several directions.
    static func probes(_ calibration: ResponseCalibration) -> [Float] {
        let m = calibration.magnitudes
        var magnitudes: [Double] = [0, m[0] * 0.5, m[0] * 1e-3, m[m.count - 1] * 2, m[m.count - 1] * 50]
        for k in 0..<m.count {
            magnitudes += [m[k], m[k] * (1 - 1e-3), m[k] * (1 + 1e-3)]
            if k + 1 < m.count {
                magnitudes += [(m[k] * m[k + 1]).squareRoot(), m[k] + 0.1 * (m[k + 1] - m[k])]
            }
        }
        var values: [Float] = []
        for (i, magnitude) in magnitudes.enumerated() {
            let angle = 0.7 * Double(i) + 0.3
            values += [Float(magnitude * cos(angle)), Float(magnitude * sin(angle))]
        }
        return values
    }

    /// Throws, naming the magnitude, unless this form (in Double) reproduces `calibration.apply` on the probes
    /// to the rounding of its float32 outputs (relative 3e-7, 2.5 ulp): a calibration whose applied function is
    /// not the stored interpolation (a later hrtrain's, say) is refused rather than exported wrong.
    func check(against calibration: ResponseCalibration) throws {
        let probes = Self.probes(calibration)
        var expected = probes
        calibration.apply(to: &expected)
        var exported = probes
        apply(to: &exported)
        for i in 0..<probes.count where abs(expected[i] - exported[i]) > 3e-7 * max(abs(expected[i]), 1e-30) {
            let r = i / 2
            let magnitude = hypot(Double(probes[2 * r]), Double(probes[2 * r + 1]))
            throw BackendError(
                "the response calibration as applied by hrtrain gives \(expected[i]) at |û| = \(magnitude) GeV, "
                    + "the exported form \(exported[i])")
        }
    }
}
