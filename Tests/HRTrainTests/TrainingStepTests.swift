import XCTest

@testable import HRTrain

/// The whole training step, device against reference, for both profiles and both layer orders; the
/// finite-difference check of the reference; determinism of the device step.
final class TrainingStepTests: XCTestCase {
    func smallOptions(_ profile: NumericsProfile, _ order: LayerOrder, batch: Int = 67) -> Verification.Options {
        var o = Verification.Options()
        o.batch = batch
        o.profile = profile
        o.spec = NetworkSpec(inputSize: 38, hiddenSizes: [24, 17], outputSize: 2, layerOrder: order)
        o.finiteDifferenceProbes = 16
        o.trajectorySteps = 3
        return o
    }

    func testWholeStepMatchesReferenceForEveryProfileAndLayout() throws {
        for device in try SharedDevice.variants() {
            for profile in NumericsProfile.allCases {
                for order in LayerOrder.allCases {
                    let report = try Verification.run(device: device, options: smallOptions(profile, order))
                    for row in report.tensors + report.trajectory {
                        XCTAssertTrue(
                            row.passed,
                            "\(device.variant) \(profile) \(order.rawValue): \(row.name) error \(row.error) > "
                                + "\(row.limit)"
                        )
                    }
                    // … + 3: the weighted loss and its gradients of output.weight and dense1.weight
                    XCTAssertEqual(report.tensors.count, 1 + 2 * 2 + 1 + 1 + 10 + 4 + 10 + 3, "one row per tensor")
                    XCTAssertTrue(report.passed, "\(device.variant) \(profile) \(order.rawValue)")
                }
            }
        }
    }

    func testBatchesOfTwoAndThreeRows() throws {
        for device in try SharedDevice.variants() {
            for batch in [2, 3] {
                let report = try Verification.run(
                    device: device, options: smallOptions(.pytorch, .denseTanhBatchNorm, batch: batch))
                XCTAssertTrue(
                    report.passed,
                    "\(device.variant) batch \(batch): \(report.tensors.filter { !$0.passed }.map(\.name))")
            }
        }
    }

    func testFiniteDifferencesAgreeWithAnalyticGradients() throws {
        for order in LayerOrder.allCases {
            var rng = SplitMix64(seed: 5)
            let spec = NetworkSpec(inputSize: 5, hiddenSizes: [7, 6], outputSize: 2, layerOrder: order)
            let (p, r) = Verification.randomState(spec: spec, profile: .keras, rng: &rng)
            let x = (0..<9 * 5).map { _ in rng.normal() }
            let y = (0..<9 * 2).map { _ in rng.normal() }
            let probes = try Verification.finiteDifferences(
                spec: spec, profile: .keras, parameters: p, running: r, input: x, target: y, batch: 9, count: 40,
                rng: &rng)
            XCTAssertEqual(probes.count, 40)
            XCTAssertTrue(probes.contains { $0.tensor == "input" })
            for f in probes {
                XCTAssertTrue(f.passed, "\(order): \(f.tensor)[\(f.index)] analytic \(f.analytic) numeric \(f.numeric)")
            }
        }
    }

    func testComparisonFailsOnAWrongGradientAndOnNaN() throws {
        var rng = SplitMix64(seed: 9)
        let spec = NetworkSpec(inputSize: 4, hiddenSizes: [5], outputSize: 2)
        let (p, r) = Verification.randomState(spec: spec, profile: .keras, rng: &rng)
        let x = (0..<6 * 4).map { _ in rng.normal() }
        let y = (0..<6 * 2).map { _ in rng.normal() }
        let device = try SharedDevice.backend()
        // Device step vs a deliberately wrong reference gradient: the comparison must fail.
        let devNet = try Network(backend: device, spec: spec, profile: .keras, parameters: p, runningStatistics: r)
        let refNet = try Network(
            backend: ReferenceBackend(), spec: spec, profile: .keras, parameters: p, runningStatistics: r)
        try devNet.forward(try device.tensor(x, shape: [6, 4]), training: true)
        try devNet.loss(target: try device.tensor(y, shape: [6, 2]), into: try device.scratch([1]))
        try devNet.backward()
        try refNet.forward(try refNet.backend.tensor(x, shape: [6, 4]), training: true)
        try refNet.loss(target: try refNet.backend.tensor(y, shape: [6, 2]), into: try refNet.backend.scratch([1]))
        try refNet.backward()
        var wrong = try refNet.backend.read(refNet.gradient("dense1.weight"))
        wrong[3] *= 1.05
        let c = TensorComparison(
            name: "dW1", shape: [20], device: try device.read(devNet.gradient("dense1.weight")), reference: wrong,
            limit: Verification.gradientLimit)
        XCTAssertFalse(c.passed, "a 5 % error in one gradient element must fail the 1e-3 limit (error \(c.error))")
        XCTAssertFalse(
            TensorComparison(name: "nan", shape: [2], device: [.nan, 1], reference: [1, 1], limit: 1).passed,
            "NaN never passes")
    }

    func testDeviceTrainingStepIsBitwiseReproducible() throws {
        for device in try SharedDevice.variants() {
            for order in LayerOrder.allCases {
                let spec = NetworkSpec(inputSize: 38, hiddenSizes: [64, 64], outputSize: 2, layerOrder: order)
                let (p, r) = Network<OpenCLBackend>.initialValues(spec: spec, profile: .keras, seed: 3)
                let x = randomValues(300 * 38, seed: 4)
                let y = randomValues(300 * 2, seed: 5)
                func run() throws -> [Float] {
                    let net = try Network(
                        backend: device, spec: spec, profile: .keras, parameters: p, runningStatistics: r)
                    let xt = try device.tensor(x, shape: [300, 38])
                    let yt = try device.tensor(y, shape: [300, 2])
                    let loss = try device.scratch([1])
                    for _ in 0..<3 { try net.trainStep(input: xt, target: yt, learningRate: 1e-3, loss: loss) }
                    return try (device.read(net.parameters) + device.read(net.runningStatistics) + device.read(loss))
                        .map(Float.init)
                }
                XCTAssertEqual(
                    try run().map(\.bitPattern), try run().map(\.bitPattern), "\(device.variant) \(order.rawValue)")
            }
        }
    }
}
