import XCTest

@testable import HRTrain

/// The command counter (`Sources/CLShim/commands.c`) sees CLBlast's launches, and a training step on either
/// kernel variant enqueues one fused launch per hidden block each way and never waits for the device.
final class CommandCountTests: XCTestCase {
    func testCLBlastLaunchesAreCounted() throws {
        let device = try SharedDevice.backend()
        let a = try device.scratch([37, 41])
        let b = try device.scratch([37, 29])
        let c = try device.scratch([41, 29])
        try device.synchronize()
        let counts = try CommandCounts.during {
            try device.matmul(a, transposeA: true, b, transposeB: false, into: c)
        }
        // hrtrain itself enqueues nothing for a GEMM: every kernel counted here is one CLBlast launched.
        XCTAssertGreaterThanOrEqual(counts.kernels, 1, "CLBlast's kernel launches must reach the counter")
        XCTAssertEqual(counts.synchronisations, 0, "a GEMM must not wait for the device")
        let wait = CommandCounts.during { try? device.synchronize() }
        XCTAssertEqual(wait.synchronisations, 1)
    }

    func testTrainingStepCommandsPerVariant() throws {
        for device in try SharedDevice.variants() {
            for order in LayerOrder.allCases {
                let spec = NetworkSpec(inputSize: 5, hiddenSizes: [24, 17, 9], outputSize: 2, layerOrder: order)
                let batch = 37
                let initial = Network<OpenCLBackend>.initialValues(spec: spec, profile: .keras, seed: 3)
                let network = try Network(
                    backend: device, spec: spec, profile: .keras, parameters: initial.parameters,
                    runningStatistics: initial.runningStatistics)
                let x = try device.tensor(randomValues(batch * 5, seed: 1), shape: [batch, 5])
                let y = try device.tensor(randomValues(batch * 2, seed: 2), shape: [batch, 2])
                let loss = try device.scratch([1])
                // The first step builds CLBlast's kernels and the workspace; count the second.
                try network.trainStep(input: x, target: y, learningRate: 1e-3, loss: loss)
                try device.synchronize()
                let gemmBefore = device.gemmKernelLaunches
                let step = try CommandCounts.during {
                    try network.trainStep(input: x, target: y, learningRate: 1e-3, loss: loss)
                }
                let gemmKernels = device.gemmKernelLaunches - gemmBefore
                XCTAssertGreaterThanOrEqual(gemmKernels, 11, "11 GEMM calls, each at least one kernel")
                let what = "\(device.variant) \(order.rawValue)"
                // 3 fused forward + output bias + loss + output bias gradient + 3 fused backward + Adam.
                XCTAssertEqual(step.kernels - gemmKernels, 10, "hrtrain's own launches per step, \(what)")
                XCTAssertEqual(step.transfers, 0, what)
                XCTAssertEqual(step.synchronisations, 0, "a training step must not wait for the device, \(what)")
            }
        }
    }
}
