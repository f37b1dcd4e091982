import XCTest

@testable import HRTrain

/// Every kernel against its Double twin in `ReferenceBackend`, on fresh random inputs of several shapes
/// (odd sizes, batches of 2 and 3, sizes that are not multiples of the work-group size), with guard
/// regions around each output.
final class KernelTests: XCTestCase {
    let reference = ReferenceBackend()
    /// (rows, columns) pairs; none is a multiple of the 16×16 or 256 work-group shapes except by accident.
    let shapes = [(2, 1), (3, 7), (37, 38), (129, 17), (1000, 33)]
    let limit = 2e-6

    func testBiasAddAndBiasTanh() throws {
        let device = try SharedDevice.backend()
        for (n, (rows, cols)) in shapes.enumerated() {
            let z = randomValues(rows * cols, seed: UInt64(10 + n), scale: 2)
            let b = randomValues(cols, seed: UInt64(20 + n))
            let zr = try reference.tensor(z, shape: [rows, cols])
            let br = try reference.tensor(b, shape: [cols])
            let zd = try device.tensor(z, shape: [rows, cols])
            let bd = try device.tensor(b, shape: [cols])
            for fused in [false, true] {
                let yr = try reference.scratch([rows, cols])
                let yd = try GuardedTensor(device, shape: [rows, cols])
                if fused {
                    try reference.biasTanh(zr, bias: br, into: yr)
                    try device.biasTanh(zd, bias: bd, into: yd.tensor)
                } else {
                    try reference.biasAdd(zr, bias: br, into: yr)
                    try device.biasAdd(zd, bias: bd, into: yd.tensor)
                }
                let what = "\(fused ? "biasTanh" : "biasAdd") \(rows)×\(cols)"
                assertClose(try device.read(yd.tensor), try reference.read(yr), limit: limit, what)
                try yd.checkGuards(device, what)
            }
        }
    }

    func testTanhForwardAndBackward() throws {
        let device = try SharedDevice.backend()
        for (n, (rows, cols)) in shapes.enumerated() {
            let x = randomValues(rows * cols, seed: UInt64(30 + n), scale: 2)
            let dy = randomValues(rows * cols, seed: UInt64(40 + n))
            let yr = try reference.scratch([rows, cols])
            try reference.tanh(try reference.tensor(x, shape: [rows, cols]), into: yr)
            let yd = try GuardedTensor(device, shape: [rows, cols])
            try device.tanh(try device.tensor(x, shape: [rows, cols]), into: yd.tensor)
            assertClose(try device.read(yd.tensor), try reference.read(yr), limit: limit, "tanh \(rows)×\(cols)")
            try yd.checkGuards(device, "tanh")

            let dzr = try reference.scratch([rows, cols])
            try reference.tanhBackward(
                outputGradient: try reference.tensor(dy, shape: [rows, cols]), output: yr, into: dzr)
            let dzd = try GuardedTensor(device, shape: [rows, cols])
            try device.tanhBackward(
                outputGradient: try device.tensor(dy, shape: [rows, cols]), output: yd.tensor, into: dzd.tensor)
            assertClose(
                try device.read(dzd.tensor), try reference.read(dzr), limit: 1e-5, "tanhBackward \(rows)×\(cols)")
            try dzd.checkGuards(device, "tanhBackward")
        }
    }

    func testColumnSums() throws {
        for device in try SharedDevice.variants() {
            for (n, (rows, cols)) in shapes.enumerated() {
                let x = randomValues(rows * cols, seed: UInt64(50 + n))
                let sr = try reference.scratch([cols])
                try reference.columnSums(try reference.tensor(x, shape: [rows, cols]), into: sr)
                let sd = try GuardedTensor(device, shape: [cols])
                try device.columnSums(try device.tensor(x, shape: [rows, cols]), into: sd.tensor)
                assertClose(
                    try device.read(sd.tensor), try reference.read(sr), limit: 1e-5,
                    "columnSums \(device.variant) \(rows)×\(cols)")
                try sd.checkGuards(device, "columnSums")
            }
        }
    }

    /// The fused hidden-block kernels (column-strip and tiled) against the reference's
    /// composition of the primitives, for both layer orders.
    func testHiddenBlockForwardAndBackward() throws {
        for device in try SharedDevice.variants() {
            for order in LayerOrder.allCases {
                for (n, (rows, cols)) in shapes.enumerated() {
                    let seed = UInt64(2000 + 10 * n)
                    let z = randomValues(rows * cols, seed: seed, scale: 1.5)
                    let bias = randomValues(cols, seed: seed + 1, scale: 0.3)
                    let gamma = randomValues(cols, seed: seed + 2).map { 1 + 0.3 * $0 }
                    let beta = randomValues(cols, seed: seed + 3, scale: 0.3)
                    let rm = randomValues(cols, seed: seed + 4, scale: 0.2)
                    let rv = randomValues(cols, seed: seed + 5, scale: 0.2).map { 1 + abs($0) }
                    let dy = randomValues(rows * cols, seed: seed + 6)
                    let what = "\(device.variant) \(order.rawValue) \(rows)×\(cols)"
                    let settings = NumericsProfile.pytorch.batchNorm

                    func run<B: Backend>(_ b: B, guarded: (([Int]) throws -> B.Tensor)) throws -> [String: [Double]] {
                        let zt = try b.tensor(z, shape: [rows, cols])
                        let (bt, gt, bet) = (
                            try b.tensor(bias, shape: [cols]), try b.tensor(gamma, shape: [cols]),
                            try b.tensor(beta, shape: [cols])
                        )
                        let (rmt, rvt) = (try b.tensor(rm, shape: [cols]), try b.tensor(rv, shape: [cols]))
                        let mean = try guarded([cols])
                        let inv = try guarded([cols])
                        let saved = try guarded([rows, cols])
                        let y = try guarded([rows, cols])
                        let dyt = try b.tensor(dy, shape: [rows, cols])
                        let dz = try guarded([rows, cols])
                        let dg = try guarded([cols])
                        let dbe = try guarded([cols])
                        let db = try guarded([cols])
                        let unused = try b.scratch([1])  // the GEMM tensors, which the block operations never touch
                        let block = HiddenBlock(
                            index: 1, order: order, settings: settings, weight: unused, bias: bt, gamma: gt, beta: bet,
                            runningMean: rmt, runningVariance: rvt, weightGradient: unused, biasGradient: db,
                            gammaGradient: dg, betaGradient: dbe, input: unused,
                            preActivation: zt, normInput: saved, output: y,
                            savedMean: mean, savedInverseStd: inv, outputGradient: dyt, preActivationGradient: dz,
                            inputGradient: nil)
                        try b.hiddenBlockForward(block)
                        var out: [String: [Double]] = [:]
                        for (k, t) in [
                            ("saved", saved), ("y", y), ("mean", mean), ("invstd", inv), ("running mean", rmt),
                            ("running var", rvt),
                        ] { out[k] = try b.read(t) }
                        try b.hiddenBlockBackward(block)
                        for (k, t) in [("dz", dz), ("dgamma", dg), ("dbeta", dbe), ("dbias", db)] {
                            out[k] = try b.read(t)
                        }
                        return out
                    }
                    var guards: [GuardedTensor] = []
                    let d = try run(device) { shape in
                        let g = try GuardedTensor(device, shape: shape)
                        guards.append(g)
                        return g.tensor
                    }
                    let r = try run(reference) { try self.reference.scratch($0) }
                    for key in ["saved", "y", "mean", "invstd", "running mean", "running var", "dgamma", "dbeta"] {
                        assertClose(d[key]!, r[key]!, limit: 2e-5, "\(key) \(what)")
                    }
                    // dz and db come out of batch norm's cancelling difference: judged on the size of its terms.
                    let termScale =
                        (0..<cols).map { abs(gamma[$0] * r["invstd"]![$0]) }.max()!
                        * dy.reduce(0) { $0 + $1 * $1 }.squareRoot()
                    assertClose(d["dz"]!, r["dz"]!, limit: 2e-5, floor: termScale, "dz \(what)")
                    assertClose(
                        d["dbias"]!, r["dbias"]!, limit: 2e-5, floor: termScale * Double(rows).squareRoot(),
                        "dbias \(what)")
                    for g in guards { try g.checkGuards(device, what) }
                }
            }
        }
    }

    func testBatchNormTrainingInferenceAndBackward() throws {
        let device = try SharedDevice.backend()
        for profile in NumericsProfile.allCases {
            for (n, (rows, cols)) in shapes.enumerated() {
                let seed = UInt64(100 * (profile == .keras ? 1 : 2) + n)
                let x = randomValues(rows * cols, seed: seed, scale: 3).map { $0 + 0.5 }
                let gamma = randomValues(cols, seed: seed + 1).map { 1 + 0.3 * $0 }
                let beta = randomValues(cols, seed: seed + 2, scale: 0.3)
                let rm = randomValues(cols, seed: seed + 3, scale: 0.2)
                let rv = randomValues(cols, seed: seed + 4, scale: 0.2).map { 1 + abs($0) }
                let dy = randomValues(rows * cols, seed: seed + 5)
                let what = "\(profile) \(rows)×\(cols)"

                let r = try BatchNormCase(
                    reference, x: x, gamma: gamma, beta: beta, rm: rm, rv: rv, dy: dy, rows: rows, cols: cols)
                let d = try BatchNormCase(
                    device, x: x, gamma: gamma, beta: beta, rm: rm, rv: rv, dy: dy, rows: rows, cols: cols)
                let yd = try GuardedTensor(device, shape: [rows, cols])
                let yr = try reference.scratch([rows, cols])
                try reference.batchNormTraining(
                    r.x, gamma: r.gamma, beta: r.beta, runningMean: r.rm, runningVariance: r.rv, savedMean: r.mean,
                    savedInverseStd: r.invstd, settings: profile.batchNorm, into: yr)
                try device.batchNormTraining(
                    d.x, gamma: d.gamma, beta: d.beta, runningMean: d.rm, runningVariance: d.rv, savedMean: d.mean,
                    savedInverseStd: d.invstd, settings: profile.batchNorm, into: yd.tensor)
                assertClose(try device.read(yd.tensor), try reference.read(yr), limit: 1e-5, "bn training y \(what)")
                assertClose(try device.read(d.mean), try reference.read(r.mean), limit: 1e-5, "bn mean \(what)")
                assertClose(try device.read(d.invstd), try reference.read(r.invstd), limit: 1e-5, "bn invstd \(what)")
                assertClose(try device.read(d.rm), try reference.read(r.rm), limit: 1e-5, "bn running mean \(what)")
                assertClose(try device.read(d.rv), try reference.read(r.rv), limit: 1e-5, "bn running var \(what)")
                try yd.checkGuards(device, "bn training")

                let dxd = try GuardedTensor(device, shape: [rows, cols])
                let dgd = try GuardedTensor(device, shape: [cols])
                let dbd = try GuardedTensor(device, shape: [cols])
                let dxr = try reference.scratch([rows, cols])
                let dgr = try reference.scratch([cols])
                let dbr = try reference.scratch([cols])
                try reference.batchNormBackward(
                    outputGradient: r.dy, input: r.x, gamma: r.gamma, savedMean: r.mean, savedInverseStd: r.invstd,
                    inputGradient: dxr, gammaGradient: dgr, betaGradient: dbr)
                try device.batchNormBackward(
                    outputGradient: d.dy, input: d.x, gamma: d.gamma, savedMean: d.mean, savedInverseStd: d.invstd,
                    inputGradient: dxd.tensor, gammaGradient: dgd.tensor, betaGradient: dbd.tensor)
                // dx = γs/N·(N·dy − Σdy − x̂·Σdy·x̂) cancels (to ~0 for N = 2): judge it on the size
                // of its terms.
                let termScale =
                    (0..<cols).map { abs(gamma[$0] * r.invstd[$0]) }.max()! * dy.reduce(0) { $0 + $1 * $1 }.squareRoot()
                assertClose(
                    try device.read(dxd.tensor), try reference.read(dxr), limit: 1e-5, floor: termScale, "bn dx \(what)"
                )
                assertClose(try device.read(dgd.tensor), try reference.read(dgr), limit: 1e-5, "bn dgamma \(what)")
                assertClose(try device.read(dbd.tensor), try reference.read(dbr), limit: 1e-5, "bn dbeta \(what)")
                for g in [dxd, dgd, dbd] { try g.checkGuards(device, "bn backward") }

                let ir = try reference.scratch([rows, cols])
                let id = try GuardedTensor(device, shape: [rows, cols])
                try reference.batchNormInference(
                    r.x, gamma: r.gamma, beta: r.beta, runningMean: r.rm, runningVariance: r.rv,
                    epsilon: profile.batchNorm.epsilon, into: ir)
                try device.batchNormInference(
                    d.x, gamma: d.gamma, beta: d.beta, runningMean: d.rm, runningVariance: d.rv,
                    epsilon: profile.batchNorm.epsilon, into: id.tensor)
                assertClose(try device.read(id.tensor), try reference.read(ir), limit: 1e-5, "bn inference \(what)")
                try id.checkGuards(device, "bn inference")
            }
        }
    }

    func testBatchNormRefusesASingleRow() throws {
        let device = try SharedDevice.backend()
        let d = try BatchNormCase(
            device, x: [1, 2, 3], gamma: [1, 1, 1], beta: [0, 0, 0], rm: [0, 0, 0], rv: [1, 1, 1], dy: [1, 1, 1],
            rows: 1, cols: 3)
        XCTAssertThrowsError(
            try device.batchNormTraining(
                d.x, gamma: d.gamma, beta: d.beta, runningMean: d.rm, runningVariance: d.rv, savedMean: d.mean,
                savedInverseStd: d.invstd, settings: NumericsProfile.pytorch.batchNorm, into: d.dy)
        ) { error in
            XCTAssertTrue("\(error)".contains("at least 2 rows"), "\(error)")
        }
    }

    func testMeanSquaredError() throws {
        let device = try SharedDevice.backend()
        for (n, (rows, cols)) in (shapes + [(4000, 2)]).enumerated() {
            let p = randomValues(rows * cols, seed: UInt64(200 + n), scale: 5)
            let t = randomValues(rows * cols, seed: UInt64(300 + n), scale: 5)
            let gr = try reference.scratch([rows, cols])
            let lr = try reference.scratch([1])
            try reference.meanSquaredError(
                prediction: try reference.tensor(p, shape: [rows, cols]),
                target: try reference.tensor(t, shape: [rows, cols]), gradient: gr, loss: lr)
            let gd = try GuardedTensor(device, shape: [rows, cols])
            let ld = try GuardedTensor(device, shape: [1])
            try device.meanSquaredError(
                prediction: try device.tensor(p, shape: [rows, cols]),
                target: try device.tensor(t, shape: [rows, cols]), gradient: gd.tensor, loss: ld.tensor)
            assertClose(
                try device.read(gd.tensor), try reference.read(gr), limit: limit, "mse gradient \(rows)×\(cols)")
            assertClose(try device.read(ld.tensor), try reference.read(lr), limit: 1e-5, "mse loss \(rows)×\(cols)")
            try gd.checkGuards(device, "mse gradient")
            try ld.checkGuards(device, "mse loss")
        }
    }

    /// The fused output bias + MSE + output bias gradient against the reference's composition of the three
    /// primitives, in place (prediction = z, as a training step calls it) and into a separate tensor.
    func testBiasMeanSquaredError() throws {
        let device = try SharedDevice.backend()
        for (n, (rows, cols)) in (shapes + [(4000, 2), (300, 3)]).enumerated() {
            let z = randomValues(rows * cols, seed: UInt64(1700 + n), scale: 5)
            let b = randomValues(cols, seed: UInt64(1800 + n))
            let t = randomValues(rows * cols, seed: UInt64(1900 + n), scale: 5)
            let pr = try reference.tensor(z, shape: [rows, cols])
            let (gr, bgr, lr) = (
                try reference.scratch([rows, cols]), try reference.scratch([cols]), try reference.scratch([1])
            )
            try reference.biasMeanSquaredError(
                pr, bias: try reference.tensor(b, shape: [cols]), target: try reference.tensor(t, shape: [rows, cols]),
                prediction: pr, gradient: gr, biasGradient: bgr, loss: lr)
            for inPlace in [true, false] {
                let zd = try GuardedTensor(device, shape: [rows, cols], contents: z)
                let pd = inPlace ? zd : try GuardedTensor(device, shape: [rows, cols])
                let gd = try GuardedTensor(device, shape: [rows, cols])
                let bgd = try GuardedTensor(device, shape: [cols])
                let ld = try GuardedTensor(device, shape: [1])
                let counts = try CommandCounts.during {
                    try device.biasMeanSquaredError(
                        zd.tensor, bias: try device.tensor(b, shape: [cols]),
                        target: try device.tensor(t, shape: [rows, cols]), prediction: pd.tensor, gradient: gd.tensor,
                        biasGradient: bgd.tensor, loss: ld.tensor)
                }
                let what = "\(rows)×\(cols)\(inPlace ? " in place" : "")"
                XCTAssertEqual(counts.kernels, 1, "one launch, \(what)")
                assertClose(try device.read(pd.tensor), try reference.read(pr), limit: limit, "prediction \(what)")
                assertClose(try device.read(gd.tensor), try reference.read(gr), limit: limit, "gradient \(what)")
                let terms = try reference.read(gr).reduce(0) { $0 + $1 * $1 }.squareRoot()  // what the sums cancel
                assertClose(
                    try device.read(bgd.tensor), try reference.read(bgr), limit: 1e-5, floor: terms,
                    "bias gradient \(what)")
                assertClose(try device.read(ld.tensor), try reference.read(lr), limit: 1e-5, "loss \(what)")
                for (guarded, name) in [
                    (zd, "z"), (pd, "prediction"), (gd, "gradient"), (bgd, "bias gradient"), (ld, "loss"),
                ] {
                    try guarded.checkGuards(device, "biasMeanSquaredError \(name), \(what)")
                }
            }
        }
    }

    func testWeightedMeanSquaredError() throws {
        let device = try SharedDevice.backend()
        for (n, (rows, cols)) in (shapes + [(4000, 2), (257, 3)]).enumerated() {
            let p = randomValues(rows * cols, seed: UInt64(400 + n), scale: 5)
            let t = randomValues(rows * cols, seed: UInt64(500 + n), scale: 5)
            var rng = SplitMix64(seed: UInt64(600 + n))
            let w = (0..<rows).map { _ in rng.uniform(0.05, 20) }
            let gr = try reference.scratch([rows, cols])
            let lr = try reference.scratch([1])
            try reference.weightedMeanSquaredError(
                prediction: try reference.tensor(p, shape: [rows, cols]),
                target: try reference.tensor(t, shape: [rows, cols]), weights: try reference.tensor(w, shape: [rows]),
                gradient: gr, loss: lr)
            // Against the formula written out once more, by hand.
            var numerator = 0.0
            for r in 0..<rows { for c in 0..<cols { numerator += w[r] * pow(p[r * cols + c] - t[r * cols + c], 2) } }
            let expected = numerator / (Double(cols) * w.reduce(0, +))
            XCTAssertEqual(try reference.read(lr)[0], expected, accuracy: 1e-12 * expected)
            let gd = try GuardedTensor(device, shape: [rows, cols])
            let ld = try GuardedTensor(device, shape: [1])
            let wd = try GuardedTensor(device, shape: [rows], contents: w)
            try device.weightedMeanSquaredError(
                prediction: try device.tensor(p, shape: [rows, cols]),
                target: try device.tensor(t, shape: [rows, cols]), weights: wd.tensor, gradient: gd.tensor,
                loss: ld.tensor)
            assertClose(
                try device.read(gd.tensor), try reference.read(gr), limit: limit,
                "weighted mse gradient \(rows)×\(cols)")
            assertClose(
                try device.read(ld.tensor), try reference.read(lr), limit: 1e-5, "weighted mse loss \(rows)×\(cols)")
            try gd.checkGuards(device, "weighted mse gradient")
            try ld.checkGuards(device, "weighted mse loss")
            try wd.checkGuards(device, "weighted mse weights")

            // Unit weights: the unweighted MSE and its gradient.
            let ones = try reference.tensor([Double](repeating: 1, count: rows), shape: [rows])
            let (gw, lw, gu, lu) = (
                try reference.scratch([rows, cols]), try reference.scratch([1]), try reference.scratch([rows, cols]),
                try reference.scratch([1])
            )
            let (pr, tr) = (
                try reference.tensor(p, shape: [rows, cols]), try reference.tensor(t, shape: [rows, cols])
            )
            try reference.weightedMeanSquaredError(prediction: pr, target: tr, weights: ones, gradient: gw, loss: lw)
            try reference.meanSquaredError(prediction: pr, target: tr, gradient: gu, loss: lu)
            assertClose(try reference.read(gw), try reference.read(gu), limit: 1e-14, "unit weights: gradient")
            assertClose(try reference.read(lw), try reference.read(lu), limit: 1e-14, "unit weights: loss")
        }
        // A NaN in the prediction reaches the loss: the comparison must fail, never pass.
        var p = randomValues(3 * 2, seed: 9, scale: 1)
        p[4] = .nan
        let ld = try device.scratch([1])
        try device.weightedMeanSquaredError(
            prediction: try device.tensor(p, shape: [3, 2]),
            target: try device.tensor([Double](repeating: 0, count: 6), shape: [3, 2]),
            weights: try device.tensor([1, 2, 3] as [Double], shape: [3]), gradient: try device.scratch([3, 2]),
            loss: ld)
        let c = TensorComparison(
            name: "nan", shape: [1], device: try device.read(ld), reference: [1], limit: 1)
        XCTAssertTrue(c.nonFinite && !c.passed, "a NaN loss must fail the comparison")
        XCTAssertThrowsError(
            try device.weightedMeanSquaredError(
                prediction: try device.scratch([3, 2]), target: try device.scratch([3, 2]),
                weights: try device.scratch([2]), gradient: try device.scratch([3, 2]), loss: try device.scratch([1])))
    }

    func testAdamBothProfilesOverSeveralSteps() throws {
        let device = try SharedDevice.backend()
        for profile in NumericsProfile.allCases {
            for count in [1, 255, 257, 5003] {
                let theta = randomValues(count, seed: UInt64(400 + count))
                let pr = try reference.tensor(theta, shape: [count])
                let pd = try device.tensor(theta, shape: [count])
                let zeros = [Double](repeating: 0, count: count)
                let mr = try reference.tensor(zeros, shape: [count])
                let vr = try reference.tensor(zeros, shape: [count])
                let md = try device.tensor(zeros, shape: [count])
                let vd = try device.tensor(zeros, shape: [count])
                for step in 1...4 {
                    let g = randomValues(count, seed: UInt64(500 + step * 7 + count), scale: 0.1)
                    let k = profile.adamCoefficients(learningRate: 1e-3, step: step)
                    try reference.adamUpdate(
                        parameters: pr, gradients: try reference.tensor(g, shape: [count]), m: mr, v: vr,
                        coefficients: k)
                    try device.adamUpdate(
                        parameters: pd, gradients: try device.tensor(g, shape: [count]), m: md, v: vd, coefficients: k)
                }
                let what = "adam \(profile) n=\(count)"
                // m sums gradients of both signs, so a few ulps of cancellation are expected at n = 1.
                assertClose(try device.read(pd), try reference.read(pr), limit: 1e-6, what + " θ")
                assertClose(try device.read(md), try reference.read(mr), limit: 1e-5, what + " m")
                assertClose(try device.read(vd), try reference.read(vr), limit: 1e-5, what + " v")
            }
        }
    }

    func testGatherRowsAndStandardScale() throws {
        let device = try SharedDevice.backend()
        for (n, (rows, cols)) in shapes.enumerated() {
            let source = randomValues(rows * cols, seed: UInt64(600 + n), scale: 4)
            var rng = SplitMix64(seed: UInt64(700 + n))
            let idx = (0..<(rows + 3)).map { _ in Int32(rng.next() % UInt64(rows)) }
            let out = rows + 1  // gather one more row than the source has: repeats are allowed
            let gr = try reference.scratch([out, cols])
            try reference.gatherRows(
                try reference.tensor(source, shape: [rows, cols]), indices: idx, indexOffset: 2, into: gr)
            let gd = try GuardedTensor(device, shape: [out, cols])
            try device.gatherRows(
                try device.tensor(source, shape: [rows, cols]), indices: try device.indices(idx), indexOffset: 2,
                into: gd.tensor)
            XCTAssertEqual(
                try device.read(gd.tensor), try reference.read(gr).map { Double(Float($0)) }, "gather is a copy: exact")
            try gd.checkGuards(device, "gather")

            let mean = randomValues(cols, seed: UInt64(800 + n))
            let scale = randomValues(cols, seed: UInt64(900 + n)).map { 0.5 + abs($0) }
            let sr = try reference.scratch([rows, cols])
            try reference.standardScale(
                try reference.tensor(source, shape: [rows, cols]), mean: try reference.tensor(mean, shape: [cols]),
                scale: try reference.tensor(scale, shape: [cols]), into: sr)
            let sd = try GuardedTensor(device, shape: [rows, cols])
            try device.standardScale(
                try device.tensor(source, shape: [rows, cols]), mean: try device.tensor(mean, shape: [cols]),
                scale: try device.tensor(scale, shape: [cols]), into: sd.tensor)
            assertClose(
                try device.read(sd.tensor), try reference.read(sr), limit: limit, "standardScale \(rows)×\(cols)")
            try sd.checkGuards(device, "standardScale")
        }
    }

    func testGatherRowsOfSeveralSourcesInOneLaunch() throws {
        let device = try SharedDevice.backend()
        for (n, (rows, cols)) in shapes.enumerated() {
            // Features, targets and (for the three-source case) weights of the same rows, odd widths.
            let widths = [cols, 2 + n % 3, 1]
            let sources = widths.enumerated().map { j, w in
                randomValues(rows * w, seed: UInt64(1500 + 10 * n + j), scale: 3)
            }
            var rng = SplitMix64(seed: UInt64(1600 + n))
            let idx = (0..<(rows + 5)).map { _ in Int32(rng.next() % UInt64(rows)) }
            let out = rows + 2
            for count in 2...3 {
                let expected = try (0..<count).map { j -> [Double] in
                    let r = try reference.scratch([out, widths[j]])
                    try reference.gatherRows(
                        try reference.tensor(sources[j], shape: [rows, widths[j]]), indices: idx, indexOffset: 3,
                        into: r)
                    return try reference.read(r).map { Double(Float($0)) }
                }
                let outputs = try (0..<count).map { try GuardedTensor(device, shape: [out, widths[$0]]) }
                let counts = try CommandCounts.during {
                    try device.gatherRows(
                        try (0..<count).map { try device.tensor(sources[$0], shape: [rows, widths[$0]]) },
                        indices: try device.indices(idx), indexOffset: 3, into: outputs.map(\.tensor))
                }
                XCTAssertEqual(counts.kernels, 1, "\(count) sources gathered in one launch")
                for j in 0..<count {
                    XCTAssertEqual(
                        try device.read(outputs[j].tensor), expected[j], "gather \(j) of \(count) is a copy: exact")
                    try outputs[j].checkGuards(device, "gather \(j) of \(count)")
                }
            }
        }
    }

    func testMatmulAllThreeTrainingForms() throws {
        let device = try SharedDevice.backend()
        for (n, (m, k, nn)) in [(3, 38, 17), (37, 5, 2), (129, 33, 64)].enumerated() {
            let a = randomValues(m * k, seed: UInt64(1000 + n))
            let b = randomValues(k * nn, seed: UInt64(1100 + n))
            // x·W
            let cr = try reference.scratch([m, nn])
            let cd = try GuardedTensor(device, shape: [m, nn])
            try reference.matmul(
                try reference.tensor(a, shape: [m, k]), transposeA: false, try reference.tensor(b, shape: [k, nn]),
                transposeB: false, into: cr)
            try device.matmul(
                try device.tensor(a, shape: [m, k]), transposeA: false, try device.tensor(b, shape: [k, nn]),
                transposeB: false, into: cd.tensor)
            assertClose(try device.read(cd.tensor), try reference.read(cr), limit: 1e-5, "x·W \(m)×\(k)×\(nn)")
            try cd.checkGuards(device, "x·W")
            // xᵀ·dy: a is [m, k] read as [k, m]ᵀ... use a as x [m,k], c [k, nn] from dy [m, nn]
            let dy = randomValues(m * nn, seed: UInt64(1200 + n))
            let wr = try reference.scratch([k, nn])
            let wd = try GuardedTensor(device, shape: [k, nn])
            try reference.matmul(
                try reference.tensor(a, shape: [m, k]), transposeA: true, try reference.tensor(dy, shape: [m, nn]),
                transposeB: false, into: wr)
            try device.matmul(
                try device.tensor(a, shape: [m, k]), transposeA: true, try device.tensor(dy, shape: [m, nn]),
                transposeB: false, into: wd.tensor)
            assertClose(try device.read(wd.tensor), try reference.read(wr), limit: 1e-5, "xᵀ·dy")
            try wd.checkGuards(device, "xᵀ·dy")
            // dy·Wᵀ
            let xr = try reference.scratch([m, k])
            let xd = try GuardedTensor(device, shape: [m, k])
            try reference.matmul(
                try reference.tensor(dy, shape: [m, nn]), transposeA: false, try reference.tensor(b, shape: [k, nn]),
                transposeB: true, into: xr)
            try device.matmul(
                try device.tensor(dy, shape: [m, nn]), transposeA: false, try device.tensor(b, shape: [k, nn]),
                transposeB: true, into: xd.tensor)
            assertClose(try device.read(xd.tensor), try reference.read(xr), limit: 1e-5, "dy·Wᵀ")
            try xd.checkGuards(device, "dy·Wᵀ")
        }
    }

    func testReductionsAreBitwiseDeterministic() throws {
        let device = try SharedDevice.backend()
        let (rows, cols) = (4000, 256)
        let x = try device.tensor(randomValues(rows * cols, seed: 77, scale: 3), shape: [rows, cols])
        func once() throws -> [Double] {
            let s = try device.scratch([cols])
            let mean = try device.scratch([cols])
            let inv = try device.scratch([cols])
            let rm = try device.tensor([Double](repeating: 0, count: cols), shape: [cols])
            let rv = try device.tensor([Double](repeating: 1, count: cols), shape: [cols])
            let y = try device.scratch([rows, cols])
            let loss = try device.scratch([1])
            let g = try device.scratch([rows, cols])
            let ones = try device.tensor([Double](repeating: 1, count: cols), shape: [cols])
            let zeros = try device.tensor([Double](repeating: 0, count: cols), shape: [cols])
            try device.columnSums(x, into: s)
            try device.batchNormTraining(
                x, gamma: ones, beta: zeros, runningMean: rm, runningVariance: rv, savedMean: mean,
                savedInverseStd: inv, settings: NumericsProfile.keras.batchNorm, into: y)
            try device.meanSquaredError(prediction: x, target: y, gradient: g, loss: loss)
            let weights = try device.tensor(randomValues(rows, seed: 78).map { 1 + abs($0) }, shape: [rows])
            let weightedLoss = try device.scratch([1])
            try device.weightedMeanSquaredError(
                prediction: x, target: y, weights: weights, gradient: g, loss: weightedLoss)
            return try [s, mean, inv, rm, rv, loss, weightedLoss, g].flatMap { try device.read($0) }
        }
        let first = try once()
        let second = try once()
        XCTAssertEqual(first.map { Float($0).bitPattern }, second.map { Float($0).bitPattern })
    }
}

/// The inputs of one batch-norm test case on one backend.
struct BatchNormCase<B: Backend> {
    let x, gamma, beta, rm, rv, dy, mean, invstd: B.Tensor
    init(
        _ b: B, x: [Double], gamma: [Double], beta: [Double], rm: [Double], rv: [Double], dy: [Double], rows: Int,
        cols: Int
    ) throws {
        self.x = try b.tensor(x, shape: [rows, cols])
        self.gamma = try b.tensor(gamma, shape: [cols])
        self.beta = try b.tensor(beta, shape: [cols])
        self.rm = try b.tensor(rm, shape: [cols])
        self.rv = try b.tensor(rv, shape: [cols])
        self.dy = try b.tensor(dy, shape: [rows, cols])
        mean = try b.scratch([cols])
        invstd = try b.scratch([cols])
    }
}
