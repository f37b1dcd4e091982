import XCTest

@testable import HRTrain

/// Tests of the recoil response and resolution figures.
final class RecoilMetricsTests: XCTestCase {
    /// u∥ = u·n and u⊥ = u_x n_y − u_y n_x, checked on hand-computed vectors.
    /// The verdict of a resolution ratio against its error: 2σ below or above 1; undefined ("-") where the
    /// network's response is not positive (a negative ratio) or the error is missing (a single event).
    func testVerdictsNeedAPositiveRatioAndAnError() {
        XCTAssertEqual(RecoilVerdictBin.verdict(ratio: 0.8, error: 0.05), "better")
        XCTAssertEqual(RecoilVerdictBin.verdict(ratio: 1.2, error: 0.05), "worse")
        XCTAssertEqual(RecoilVerdictBin.verdict(ratio: 0.95, error: 0.05), "equal")
        XCTAssertEqual(RecoilVerdictBin.verdict(ratio: -0.5, error: 0.1), "-", "negative response")
        XCTAssertEqual(RecoilVerdictBin.verdict(ratio: 0.5, error: .nan), "-", "no error")
        XCTAssertEqual(RecoilVerdictBin.verdict(ratio: .nan, error: 0.1), "-", "empty bin")
    }

    func testProjectionsOnHandComputedVectors() {
        // Truth (3, 4): n = (0.6, 0.8). Perfect prediction: u∥ = 5, u⊥ = 0. Rotated by +90°: u = (−4, 3),
        // u∥ = 0, u⊥ = −4·0.8 − 3·0.6 = −5.
        let bins = recoilFigures(
            predictedX: [3, -4], predictedY: [4, 3], truthX: [3, 3], truthY: [4, 4], variable: [0, 1], edges: [0, 1, 2])
        XCTAssertEqual(bins[0].response, 1, accuracy: 1e-12)
        XCTAssertEqual(bins[0].parallelBias, 0, accuracy: 1e-12)
        XCTAssertEqual(bins[0].perpendicularMean, 0, accuracy: 1e-12)
        XCTAssertEqual(bins[1].response, 0, accuracy: 1e-12)
        XCTAssertEqual(bins[1].parallelBias, -5, accuracy: 1e-12)
        XCTAssertEqual(bins[1].perpendicularMean, -5, accuracy: 1e-12)
        XCTAssertEqual(bins[1].meanTruthMagnitude, 5, accuracy: 1e-12)
    }

    /// A recoil `u = R·u_t + noise` (Gaussian, σ per component) returns R, σ and σ for the RMS and
    /// robust widths, within a few statistical errors.
    func testRecoversResponseAndResolutionOfASmearedRecoil() {
        var rng = Xoshiro256StarStar(seed: 99, stream: 0)
        let n = 200_000
        let response = 0.7
        let sigma = 8.0
        var ux = [Float]()
        var uy = [Float]()
        var tx = [Float]()
        var ty = [Float]()
        var magnitude = [Float]()
        for _ in 0..<n {
            let truth = rng.uniform(1, 60)
            let direction = rng.unitVector()
            let x = truth * direction.x
            let y = truth * direction.y
            tx.append(Float(x))
            ty.append(Float(y))
            ux.append(Float(response * x + sigma * rng.normal()))
            uy.append(Float(response * y + sigma * rng.normal()))
            magnitude.append(Float(truth))
        }
        let bins = recoilFigures(
            predictedX: ux, predictedY: uy, truthX: tx, truthY: ty, variable: magnitude, edges: [0, 20, 40, .infinity])
        XCTAssertEqual(bins.map(\.count).reduce(0, +), n)
        XCTAssertEqual(bins[2].upperEdge, .infinity)
        for bin in bins {
            XCTAssertEqual(bin.response, response, accuracy: 4 * bin.responseError)
            XCTAssertLessThan(bin.responseError, 0.01)
            XCTAssertEqual(bin.perpendicularRMS, sigma, accuracy: 4 * bin.perpendicularRMSError)
            XCTAssertEqual(bin.perpendicularWidth, sigma, accuracy: 0.15)
            XCTAssertEqual(bin.perpendicularMean, 0, accuracy: 0.15)
            // u∥ − |u_t| = (R − 1)|u_t| + noise: its RMS includes the spread of |u_t| within the bin.
            XCTAssertGreaterThan(bin.parallelRMS, sigma - 4 * bin.parallelRMSError)
        }
        let summary = recoilSummary(predictedX: ux, predictedY: uy, truthX: tx, truthY: ty)
        XCTAssertEqual(summary.count, n)
        XCTAssertEqual(summary.response, response, accuracy: 0.01)
        XCTAssertEqual(summary.perpendicularRMS, sigma, accuracy: 0.1)
    }

    /// A perfect prediction has response 1, zero widths and zero RMSE; events with |u_t| = 0 and events
    /// outside the edges are skipped by the bins.
    func testPerfectPredictionAndSkippedEvents() {
        let tx: [Float] = [0, 1, -2, 5, 7]
        let ty: [Float] = [0, 2, 3, -1, 0]
        let bins = recoilFigures(
            predictedX: tx, predictedY: ty, truthX: tx, truthY: ty, variable: [1, 1, 1, 1, 9], edges: [0, 5])
        XCTAssertEqual(bins.count, 1)
        XCTAssertEqual(bins[0].count, 3)
        XCTAssertEqual(bins[0].response, 1, accuracy: 1e-12)
        XCTAssertEqual(bins[0].parallelRMS, 0, accuracy: 1e-12)
        XCTAssertEqual(bins[0].parallelWidth, 0, accuracy: 1e-12)
        let summary = recoilSummary(predictedX: tx, predictedY: ty, truthX: tx, truthY: ty)
        XCTAssertEqual(summary.count, 4)
        XCTAssertEqual(summary.rmse, 0)
        XCTAssertEqual(summary.response, 1, accuracy: 1e-12)
    }

    /// Per-component RMSE: a constant offset (3, −4) gives RMSE_x = 3, RMSE_y = 4, RMSE = √(12.5).
    func testRMSEOfAConstantOffset() {
        let tx: [Float] = [1, 2, 3, 4]
        let ty: [Float] = [0, 1, 0, 1]
        let summary = recoilSummary(
            predictedX: tx.map { $0 + 3 }, predictedY: ty.map { $0 - 4 }, truthX: tx, truthY: ty)
        XCTAssertEqual(summary.rmseX, 3, accuracy: 1e-6)
        XCTAssertEqual(summary.rmseY, 4, accuracy: 1e-6)
        XCTAssertEqual(summary.rmse, (12.5).squareRoot(), accuracy: 1e-6)
    }
}
