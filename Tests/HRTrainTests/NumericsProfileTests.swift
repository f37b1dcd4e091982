import XCTest

@testable import HRTrain

final class NumericsProfileTests: XCTestCase {
    func testAdamCoefficientsMatchTheSemanticsDocument() {
        let k = NumericsProfile.keras.adamCoefficients(learningRate: 1e-3, step: 1)
        XCTAssertEqual(k.stepSize, 1e-3 * (1 - 0.999).squareRoot() / (1 - 0.9), accuracy: 1e-15)
        XCTAssertEqual(k.rootScale, 1)
        XCTAssertEqual(k.epsilon, 1e-7)
        let p = NumericsProfile.pytorch.adamCoefficients(learningRate: 1e-3, step: 3)
        XCTAssertEqual(p.stepSize, 1e-3 / (1 - pow(0.9, 3)), accuracy: 1e-15)
        XCTAssertEqual(p.rootScale, 1 / (1 - pow(0.999, 3)).squareRoot(), accuracy: 1e-12)
        XCTAssertEqual(p.epsilon, 1e-8)
    }

    func testBatchNormSettings() {
        XCTAssertEqual(
            NumericsProfile.keras.batchNorm,
            BatchNormSettings(epsilon: 1e-3, runningUpdateFactor: 0.01, unbiasedRunningVariance: false))
        XCTAssertEqual(
            NumericsProfile.pytorch.batchNorm,
            BatchNormSettings(epsilon: 1e-5, runningUpdateFactor: 0.1, unbiasedRunningVariance: true))
    }

    func testInitialisationRanges() {
        var rng = SplitMix64(seed: 1)
        let (w, b) = NumericsProfile.keras.initialDense(fanIn: 38, fanOut: 256, using: &rng)
        let limit = (6.0 / 294).squareRoot()
        XCTAssertTrue(w.allSatisfy { abs($0) <= limit })
        XCTAssertGreaterThan(w.map(abs).max()!, 0.95 * limit)
        XCTAssertTrue(b.allSatisfy { $0 == 0 })
        let (pw, pb) = NumericsProfile.pytorch.initialDense(fanIn: 38, fanOut: 256, using: &rng)
        let pl = 1 / 38.0.squareRoot()
        XCTAssertTrue(pw.allSatisfy { abs($0) <= pl } && pb.allSatisfy { abs($0) <= pl })
        XCTAssertGreaterThan(pb.map(abs).max()!, 0.9 * pl)
    }
}
