import Foundation

/// The conventional recoil-calibration figures of one bin (W/Z measurements at the LHC), in GeV.
///
/// With `n = u_t/|u_t|`, `u∥ = u·n` and `u⊥ = u × n = u_x n_y − u_y n_x` (z of the cross product):
/// - response `R = ⟨u∥⟩ / ⟨|u_t|⟩` (ratio of means, the ATLAS W-mass definition), error by error
///   propagation with the covariance: `σ_R² = (V(u∥) − 2R·C(u∥,|u_t|) + R²·V(|u_t|)) / (N·⟨|u_t|⟩²)`;
/// - response-corrected resolutions `σ(u∥ − |u_t|)/R` and `σ(u⊥)/R` (CMS DeepMET, arXiv:2509.12012, Fig. 3:
///   an estimate shrunk towards zero has a small resolution in GeV for free), error
///   `σ/R · √((δσ/σ)² + (δR/R)²)` (the two errors taken as independent);
/// - resolutions of `u∥ − |u_t|` and `u⊥`: RMS about the mean (the standard deviation, ROOT's "RMS"),
///   error `RMS/√(2(N−1))`, and the robust width `(q₈₄ − q₁₆)/2` with the ±1σ quantiles
///   q(Φ(∓1)) = q(0.1587), q(0.8413) (the "16–84 %" range; equals σ for a Gaussian), quantiles linearly
///   interpolated (NumPy's default).
public struct RecoilBin: Codable, Sendable, Equatable {
    /// Lower edge of the bin in the binning variable (inclusive).
    public var lowerEdge: Double
    /// Upper edge of the bin (exclusive).
    public var upperEdge: Double
    /// Number of events in the bin (events with |u_t| = 0 are skipped: n is undefined).
    public var count: Int
    /// Mean truth recoil magnitude ⟨|u_t|⟩.
    public var meanTruthMagnitude: Double
    /// Response ⟨u∥⟩ / ⟨|u_t|⟩.
    public var response: Double
    /// Statistical error of the response.
    public var responseError: Double
    /// Mean bias ⟨u∥ − |u_t|⟩.
    public var parallelBias: Double
    /// RMS (standard deviation) of u∥ − |u_t|.
    public var parallelRMS: Double
    /// Statistical error of `parallelRMS`.
    public var parallelRMSError: Double
    /// Robust width (q₈₄ − q₁₆)/2 of u∥ − |u_t|.
    public var parallelWidth: Double
    /// Mean of u⊥ (zero for an unbiased direction).
    public var perpendicularMean: Double
    /// RMS (standard deviation) of u⊥.
    public var perpendicularRMS: Double
    /// Statistical error of `perpendicularRMS`.
    public var perpendicularRMSError: Double
    /// Robust width (q₈₄ − q₁₆)/2 of u⊥.
    public var perpendicularWidth: Double
    /// Response-corrected resolution along the recoil, σ(u∥ − |u_t|)/R.
    public var correctedParallelRMS: Double
    /// Statistical error of `correctedParallelRMS`.
    public var correctedParallelRMSError: Double
    /// Response-corrected resolution across the recoil, σ(u⊥)/R.
    public var correctedPerpendicularRMS: Double
    /// Statistical error of `correctedPerpendicularRMS`.
    public var correctedPerpendicularRMSError: Double
}

/// `a/R` with the error `a/R · √((δa/a)² + (δR/R)²)`.
func responseCorrected(_ a: Double, _ aError: Double, response: Double, responseError: Double) -> (Double, Double) {
    let value = a / response
    let relative = ((aError / a) * (aError / a) + (responseError / response) * (responseError / response)).squareRoot()
    return (value, abs(value) * relative)
}

/// The recoil figures over a whole sample.
public struct RecoilSummary: Codable, Sendable, Equatable {
    /// Number of events used (|u_t| > 0).
    public var count: Int
    /// Response ⟨u∥⟩ / ⟨|u_t|⟩ over the sample.
    public var response: Double
    /// RMS (standard deviation) of u∥ − |u_t|.
    public var parallelRMS: Double
    /// RMS (standard deviation) of u⊥.
    public var perpendicularRMS: Double
    /// Root-mean-square error of the x component, `√⟨(u_x − t_x)²⟩`.
    public var rmseX: Double
    /// Root-mean-square error of the y component.
    public var rmseY: Double
    /// Root-mean-square error over both components, `√(⟨(u_x − t_x)²⟩ + ⟨(u_y − t_y)²⟩)/√2`.
    public var rmse: Double
}

/// The projections of a recoil `u` on the truth direction: `(u∥, u⊥, |u_t|)`, or nil when |u_t| = 0.
@inline(__always)
private func project(ux: Double, uy: Double, tx: Double, ty: Double) -> (
    parallel: Double, perpendicular: Double, truth: Double
)? {
    let truth = (tx * tx + ty * ty).squareRoot()
    if truth == 0 { return nil }
    let nx = tx / truth
    let ny = ty / truth
    return (ux * nx + uy * ny, ux * ny - uy * nx, truth)
}

/// Linearly interpolated quantile `q` of sorted values (NumPy's default, "type 7").
private func quantile(sorted values: [Double], _ q: Double) -> Double {
    if values.isEmpty { return .nan }
    let position = q * Double(values.count - 1)
    let lower = Int(position.rounded(.down))
    let upper = min(lower + 1, values.count - 1)
    return values[lower] + (position - Double(lower)) * (values[upper] - values[lower])
}

/// Half the ±1σ interquantile range, `(q(0.8413) − q(0.1587))/2`.
private func robustWidth(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return 0.5 * (quantile(sorted: sorted, 0.841_344_746) - quantile(sorted: sorted, 0.158_655_254))
}

/// Response and resolutions of a predicted recoil `(ux, uy)` against the truth `(tx, ty)` in bins of
/// `variable` (e.g. |u_t|, μ or N_PV) with ascending `edges` (the last may be `.infinity`): an event goes to
/// bin i when `edges[i] ≤ variable < edges[i+1]`. All sums are in Double. See `RecoilBin` for definitions.
public func recoilFigures(
    predictedX ux: [Float], predictedY uy: [Float], truthX tx: [Float], truthY ty: [Float],
    variable: [Float], edges: [Double]
) -> [RecoilBin] {
    let n = ux.count
    precondition(
        uy.count == n && tx.count == n && ty.count == n && variable.count == n, "recoilFigures: lengths differ")
    precondition(
        edges.count >= 2 && zip(edges, edges.dropFirst()).allSatisfy { $0 < $1 }, "recoilFigures: edges must ascend")
    let binCount = edges.count - 1
    var parallelResiduals = [[Double]](repeating: [], count: binCount)
    var perpendiculars = [[Double]](repeating: [], count: binCount)
    var truths = [[Double]](repeating: [], count: binCount)
    for i in 0..<n {
        let v = Double(variable[i])
        guard v >= edges[0] && v < edges[binCount] else { continue }
        // The last edge ≤ v: binary search.
        var low = 0
        var high = binCount
        while high - low > 1 {
            let middle = (low + high) / 2
            if v >= edges[middle] { low = middle } else { high = middle }
        }
        guard let p = project(ux: Double(ux[i]), uy: Double(uy[i]), tx: Double(tx[i]), ty: Double(ty[i])) else {
            continue
        }
        parallelResiduals[low].append(p.parallel - p.truth)
        perpendiculars[low].append(p.perpendicular)
        truths[low].append(p.truth)
    }
    return (0..<binCount).map { b in
        let residual = parallelResiduals[b]
        let perpendicular = perpendiculars[b]
        let truth = truths[b]
        let count = truth.count
        let countValue = Double(count)
        let meanTruth = truth.reduce(0, +) / countValue
        let meanResidual = residual.reduce(0, +) / countValue
        let meanParallel = meanTruth + meanResidual
        let response = meanParallel / meanTruth
        // Central moments: V(|u_t|), V(u∥ − |u_t|), C(u∥ − |u_t|, |u_t|); u∥ = residual + |u_t|.
        var varTruth = 0.0
        var varResidual = 0.0
        var covariance = 0.0
        for j in 0..<count {
            let dt = truth[j] - meanTruth
            let dr = residual[j] - meanResidual
            varTruth += dt * dt
            varResidual += dr * dr
            covariance += dr * dt
        }
        varTruth /= countValue
        varResidual /= countValue
        covariance /= countValue
        let varParallel = varResidual + 2 * covariance + varTruth
        let covParallelTruth = covariance + varTruth
        let responseVariance =
            (varParallel - 2 * response * covParallelTruth + response * response * varTruth)
            / (countValue * meanTruth * meanTruth)
        let meanPerpendicular = perpendicular.reduce(0, +) / countValue
        let varPerpendicular =
            perpendicular.reduce(0) { $0 + ($1 - meanPerpendicular) * ($1 - meanPerpendicular) } / countValue
        let rmsErrorFactor = 1 / (2 * max(countValue - 1, 1)).squareRoot()
        let responseError = max(responseVariance, 0).squareRoot()
        let parallel = responseCorrected(
            varResidual.squareRoot(), varResidual.squareRoot() * rmsErrorFactor, response: response,
            responseError: responseError)
        let perpendicularCorrected = responseCorrected(
            varPerpendicular.squareRoot(), varPerpendicular.squareRoot() * rmsErrorFactor, response: response,
            responseError: responseError)
        return RecoilBin(
            lowerEdge: edges[b], upperEdge: edges[b + 1], count: count, meanTruthMagnitude: meanTruth,
            response: response, responseError: responseError,
            parallelBias: meanResidual, parallelRMS: varResidual.squareRoot(),
            parallelRMSError: varResidual.squareRoot() * rmsErrorFactor, parallelWidth: robustWidth(residual),
            perpendicularMean: meanPerpendicular, perpendicularRMS: varPerpendicular.squareRoot(),
            perpendicularRMSError: varPerpendicular.squareRoot() * rmsErrorFactor,
            perpendicularWidth: robustWidth(perpendicular), correctedParallelRMS: parallel.0,
            correctedParallelRMSError: parallel.1, correctedPerpendicularRMS: perpendicularCorrected.0,
            correctedPerpendicularRMSError: perpendicularCorrected.1)
    }
}

/// Overall response, RMS resolutions and per-component RMSE of a predicted recoil against the truth.
public func recoilSummary(predictedX ux: [Float], predictedY uy: [Float], truthX tx: [Float], truthY ty: [Float])
    -> RecoilSummary
{
    let n = ux.count
    precondition(uy.count == n && tx.count == n && ty.count == n, "recoilSummary: lengths differ")
    var count = 0
    var sumParallel = 0.0
    var sumTruth = 0.0
    var sumResidual = 0.0
    var sumResidual2 = 0.0
    var sumPerpendicular = 0.0
    var sumPerpendicular2 = 0.0
    var squaredX = 0.0
    var squaredY = 0.0
    for i in 0..<n {
        let dx = Double(ux[i]) - Double(tx[i])
        let dy = Double(uy[i]) - Double(ty[i])
        squaredX += dx * dx
        squaredY += dy * dy
        guard let p = project(ux: Double(ux[i]), uy: Double(uy[i]), tx: Double(tx[i]), ty: Double(ty[i])) else {
            continue
        }
        count += 1
        sumParallel += p.parallel
        sumTruth += p.truth
        sumResidual += p.parallel - p.truth
        sumResidual2 += (p.parallel - p.truth) * (p.parallel - p.truth)
        sumPerpendicular += p.perpendicular
        sumPerpendicular2 += p.perpendicular * p.perpendicular
    }
    let countValue = Double(count)
    let all = Double(n)
    let meanResidual = sumResidual / countValue
    let meanPerpendicular = sumPerpendicular / countValue
    return RecoilSummary(
        count: count, response: sumParallel / sumTruth,
        parallelRMS: max(sumResidual2 / countValue - meanResidual * meanResidual, 0).squareRoot(),
        perpendicularRMS: max(sumPerpendicular2 / countValue - meanPerpendicular * meanPerpendicular, 0).squareRoot(),
        rmseX: (squaredX / all).squareRoot(), rmseY: (squaredY / all).squareRoot(),
        rmse: ((squaredX + squaredY) / (2 * all)).squareRoot())
}
