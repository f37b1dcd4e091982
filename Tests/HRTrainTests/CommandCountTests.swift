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

    /// `tune` only offers splits between direct and indirect shapes that CLBlast's size rule (m·n·k < T³ goes
    /// direct) can make: shapes of equal volume go the same way, and the T it stores routes exactly as labelled.
    func testTuneSplitsOnlyWhereTheSizeRuleCanSeparateTheShapes() {
        let shapes = Benchmark.trainingGEMMs(spec: NetworkSpec(), batch: 4000).sorted { $0.flops < $1.flops }
        let volumes = shapes.map { $0.m * $0.n * $0.k }
        var realisable = 0
        for count in 0...volumes.count {
            let size = GEMMTuning.minIndirectSize(sendingDirect: count, of: volumes)
            let separable = count == 0 || count == volumes.count || volumes[count - 1] < volumes[count]
            XCTAssertEqual(size != nil, separable, "split after \(count) of the volumes \(volumes)")
            guard let size else { continue }
            realisable += 1
            if count == volumes.count { continue }
            let direct = volumes.map { $0 < size * size * size }
            XCTAssertEqual(direct, volumes.indices.map { $0 < count }, "T = \(size) for the first \(count) direct")
        }
        XCTAssertLessThan(realisable, volumes.count + 1, "the thesis step has shapes of equal volume: \(volumes)")
        // No cube lies between 1000 and 1330 exclusive of 11³ = 1331; one does below 1331.
        XCTAssertNil(GEMMTuning.minIndirectSize(sendingDirect: 1, of: [1000, 1330]))
        XCTAssertEqual(GEMMTuning.minIndirectSize(sendingDirect: 1, of: [1000, 1331]), 11)
        XCTAssertEqual(GEMMTuning.minIndirectSize(sendingDirect: 1, of: [999, 1000]), 10)
        XCTAssertNil(GEMMTuning.minIndirectSize(sendingDirect: 1, of: [1000, 1000]))
    }

    /// `GEMMKernelPlan` predicts the kernels CLBlast launches for a GEMM, indirect (the size rule alone) and routed
    /// (`maximumIndirectHelpers`), and routing changes which kernel runs, not the product.
    func testGEMMKernelPlanMatchesCLBlastsLaunches() throws {
        let device = try SharedDevice.backend()
        guard let parameters = device.context.gemmParameters, parameters.maximumIndirectHelpers != nil else {
            throw XCTSkip("no hrtrain GEMM parameters with a helper limit on \(device.context.device.name)")
        }
        // m·n·k just above XGEMM_MIN_INDIRECT_SIZE³ of the built-in parameters (339³), so CLBlast's size rule says
        // indirect; tile multiples (256, 640) or not (200), transposed operands, an operand at an offset.
        let side = parameters.minIndirectSize
        let k = ((side * side * side) / (256 * 256) / 128 + 1) * 128  // a multiple of the tiles
        let cases: [(m: Int, n: Int, k: Int, ta: Bool, tb: Bool, offset: Int)] = [
            (256, 256, k, true, false, 0),  // hᵀ·dz
            (k, 256, 256, false, false, 0),  // h·W
            (k, 256, 256, false, false, 24),  // h·W with W inside the parameter buffer
            (k, 256, 256, false, true, 0),  // dz·Wᵀ
            (200, 256, k + 200, true, false, 0),  // padded: 200 is no multiple of MWG
        ]
        for (i, c) in cases.enumerated() {
            let aShape = c.ta ? [c.k, c.m] : [c.m, c.k]
            let bShape = c.tb ? [c.n, c.k] : [c.k, c.n]
            let a = try device.tensor(randomValues(c.m * c.k, seed: UInt64(40 + i)), shape: aShape)
            let bWhole = try device.tensor(
                randomValues(c.offset + c.n * c.k, seed: UInt64(50 + i)), shape: [c.offset + c.n * c.k])
            let b = bWhole.view(offset: c.offset, shape: bShape)
            let routed = try device.scratch([c.m, c.n])
            let unrouted = try device.scratch([c.m, c.n])
            let plan = try XCTUnwrap(
                device.gemmPlan(
                    .init(
                        m: c.m, n: c.n, k: c.k, transposeA: c.ta, transposeB: c.tb, offsets: [0, c.offset, 0],
                        leading: [aShape[1], bShape[1], c.n])))
            XCTAssertTrue(plan.sizeRuleIndirect, "case \(i)")
            try device.synchronize()
            let what = "\(c.m)x\(c.n)x\(c.k) ta=\(c.ta) tb=\(c.tb) offset \(c.offset)"
            let withRouting = try CommandCounts.during {
                try device.matmul(a, transposeA: c.ta, b, transposeB: c.tb, into: routed)
            }
            let indirect = plan.routedIndirect(parameters)
            XCTAssertEqual(withRouting.kernels, plan.kernels(indirect: indirect), "routed: \(what)")
            XCTAssertLessThanOrEqual(withRouting.kernels, 1 + parameters.maximumIndirectHelpers!, what)
            // The same call with CLBlast's size rule alone: indirect, with the predicted helpers.
            device.context.gemmParameters?.maximumIndirectHelpers = nil
            defer { device.context.gemmParameters?.maximumIndirectHelpers = parameters.maximumIndirectHelpers }
            try CLBlastParameters.setMinIndirectSize(parameters.minIndirectSize, device: device.context.deviceID)
            let sizeRule = try CommandCounts.during {
                try device.matmul(a, transposeA: c.ta, b, transposeB: c.tb, into: unrouted)
            }
            XCTAssertEqual(sizeRule.kernels, plan.kernels(indirect: true), "indirect: \(what)")
            assertClose(try device.read(routed), try device.read(unrouted), limit: 1e-5, "routed product, \(what)")
        }
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
                // 3 fused forward + output bias with loss and output bias gradient + 3 fused backward + Adam.
                XCTAssertEqual(step.kernels - gemmKernels, 8, "hrtrain's own launches per step, \(what)")
                XCTAssertEqual(step.transfers, 0, what)
                XCTAssertEqual(step.synchronisations, 0, "a training step must not wait for the device, \(what)")
            }
        }
    }
}
