import CPUShim
import XCTest

@testable import HRTrain

/// The CPU backend's every operation against its Double twin in `ReferenceBackend` (odd shapes, strips of
/// fewer than 16 columns, guard regions around every output, views at odd offsets), NaN propagation, the BLAS
/// selection, and bitwise-identical results for any number of threads.
final class CPUBackendTests: XCTestCase {
    let reference = ReferenceBackend()
    /// (rows, columns): widths below, at and above a 16-column strip, batches of 2 and 3.
    let shapes = [(2, 1), (3, 7), (37, 38), (129, 17), (1000, 33), (70, 16)]
    let limit = 2e-6

    static let backends: Result<[CPUBackend], Error> = Result {
        [try CPUBackend(threads: 1), try CPUBackend(threads: 2), try CPUBackend(threads: 3)]
    }
    func devices() throws -> [CPUBackend] { try Self.backends.get() }

    func testBiasAddBiasTanhAndTanh() throws {
        for device in try devices() {
            for (n, (rows, cols)) in shapes.enumerated() {
                let z = randomValues(rows * cols, seed: UInt64(10 + n), scale: 2)
                let b = randomValues(cols, seed: UInt64(20 + n))
                let (zr, br) = (try reference.tensor(z, shape: [rows, cols]), try reference.tensor(b, shape: [cols]))
                let (zd, bd) = (try device.tensor(z, shape: [rows, cols]), try device.tensor(b, shape: [cols]))
                for op in ["biasAdd", "biasTanh", "tanh"] {
                    let yr = try reference.scratch([rows, cols])
                    let yd = try CPUGuarded(device, shape: [rows, cols])
                    switch op {
                    case "biasAdd":
                        try reference.biasAdd(zr, bias: br, into: yr)
                        try device.biasAdd(zd, bias: bd, into: yd.tensor)
                    case "biasTanh":
                        try reference.biasTanh(zr, bias: br, into: yr)
                        try device.biasTanh(zd, bias: bd, into: yd.tensor)
                    default:
                        try reference.tanh(zr, into: yr)
                        try device.tanh(zd, into: yd.tensor)
                    }
                    let what = "\(op) \(rows)×\(cols) threads \(device.threads)"
                    assertClose(try device.read(yd.tensor), try reference.read(yr), limit: limit, what)
                    try yd.checkGuards(what)
                }
            }
        }
    }

    /// tanh over its whole range, elementwise: a few Float32 ulps, exact signs, saturation, NaN kept.
    func testTanhIsAccurateEverywhereAndKeepsNaN() throws {
        let device = try devices()[0]
        var values: [Double] = stride(from: -12.0, through: 12.0, by: 0.0137).map { $0 }
        values += [0, -0, 1e-30, -1e-30, 1e-8, 0.1499, 0.1501, 9, 9.5, 50, -50, .infinity, -.infinity]
        let x = try device.tensor(values, shape: [values.count])
        let y = try device.scratch([values.count])
        try device.tanh(x, into: y)
        let out = try device.read(y)
        for (v, t) in zip(values, out) {
            let exact = Foundation.tanh(v)
            XCTAssertLessThanOrEqual(abs(t - exact), 4e-7 * max(abs(exact), 1e-30) + 1e-37, "tanh(\(v)) = \(t)")
            XCTAssertEqual(t.sign, exact.sign, "sign of tanh(\(v))")
        }
        let nan = try device.tensor([Double.nan, 1], shape: [2])
        try device.tanh(nan, into: nan)
        XCTAssertTrue(try device.read(nan)[0].isNaN, "tanh(NaN) must stay NaN, never pass as a number")
    }

    func testTanhBackwardColumnSumsAndScale() throws {
        for device in try devices() {
            for (n, (rows, cols)) in shapes.enumerated() {
                let x = randomValues(rows * cols, seed: UInt64(30 + n), scale: 0.8)
                let dy = randomValues(rows * cols, seed: UInt64(40 + n))
                let what = "\(rows)×\(cols) threads \(device.threads)"
                let dzr = try reference.scratch([rows, cols])
                try reference.tanhBackward(
                    outputGradient: try reference.tensor(dy, shape: [rows, cols]),
                    output: try reference.tensor(x, shape: [rows, cols]), into: dzr)
                let dzd = try CPUGuarded(device, shape: [rows, cols])
                try device.tanhBackward(
                    outputGradient: try device.tensor(dy, shape: [rows, cols]),
                    output: try device.tensor(x, shape: [rows, cols]), into: dzd.tensor)
                assertClose(try device.read(dzd.tensor), try reference.read(dzr), limit: 1e-5, "tanhBackward " + what)
                try dzd.checkGuards("tanhBackward")

                let sr = try reference.scratch([cols])
                try reference.columnSums(try reference.tensor(dy, shape: [rows, cols]), into: sr)
                let sd = try CPUGuarded(device, shape: [cols])
                try device.columnSums(try device.tensor(dy, shape: [rows, cols]), into: sd.tensor)
                assertClose(try device.read(sd.tensor), try reference.read(sr), limit: 1e-5, "columnSums " + what)
                try sd.checkGuards("columnSums")

                let mean = randomValues(cols, seed: UInt64(800 + n))
                let scale = randomValues(cols, seed: UInt64(900 + n)).map { 0.5 + abs($0) }
                let or = try reference.scratch([rows, cols])
                try reference.standardScale(
                    try reference.tensor(x, shape: [rows, cols]), mean: try reference.tensor(mean, shape: [cols]),
                    scale: try reference.tensor(scale, shape: [cols]), into: or)
                let od = try CPUGuarded(device, shape: [rows, cols])
                try device.standardScale(
                    try device.tensor(x, shape: [rows, cols]), mean: try device.tensor(mean, shape: [cols]),
                    scale: try device.tensor(scale, shape: [cols]), into: od.tensor)
                assertClose(try device.read(od.tensor), try reference.read(or), limit: limit, "standardScale " + what)
                try od.checkGuards("standardScale")
            }
        }
    }

    /// The weighted MSE and its gradient against the reference (guards, odd shapes); unit weights equal the
    /// plain MSE; a NaN prediction gives a NaN loss (never passes as a number).
    func testWeightedMeanSquaredError() throws {
        for device in try devices() {
            for (n, (rows, cols)) in shapes.enumerated() {
                let p = randomValues(rows * cols, seed: UInt64(60 + n))
                let t = randomValues(rows * cols, seed: UInt64(70 + n))
                let w = randomValues(rows, seed: UInt64(80 + n)).map { 0.1 + abs($0) }
                let what = "\(rows)×\(cols) threads \(device.threads)"
                let gr = try reference.scratch([rows, cols])
                let lr = try reference.scratch([1])
                try reference.weightedMeanSquaredError(
                    prediction: try reference.tensor(p, shape: [rows, cols]),
                    target: try reference.tensor(t, shape: [rows, cols]),
                    weights: try reference.tensor(w, shape: [rows]),
                    gradient: gr, loss: lr)
                let gd = try CPUGuarded(device, shape: [rows, cols])
                let ld = try CPUGuarded(device, shape: [1])
                try device.weightedMeanSquaredError(
                    prediction: try device.tensor(p, shape: [rows, cols]),
                    target: try device.tensor(t, shape: [rows, cols]), weights: try device.tensor(w, shape: [rows]),
                    gradient: gd.tensor, loss: ld.tensor)
                assertClose(try device.read(gd.tensor), try reference.read(gr), limit: limit, "weighted MSE dL " + what)
                assertClose(try device.read(ld.tensor), try reference.read(lr), limit: limit, "weighted MSE " + what)
                try gd.checkGuards("weightedMeanSquaredError gradient")
                try ld.checkGuards("weightedMeanSquaredError loss")

                let ones = try device.tensor([Double](repeating: 1, count: rows), shape: [rows])
                let lw = try device.scratch([1])
                let lp = try device.scratch([1])
                try device.weightedMeanSquaredError(
                    prediction: try device.tensor(p, shape: [rows, cols]),
                    target: try device.tensor(t, shape: [rows, cols]), weights: ones,
                    gradient: try device.scratch([rows, cols]), loss: lw)
                try device.meanSquaredError(
                    prediction: try device.tensor(p, shape: [rows, cols]),
                    target: try device.tensor(t, shape: [rows, cols]), gradient: try device.scratch([rows, cols]),
                    loss: lp)
                assertClose(try device.read(lw), try device.read(lp), limit: 1e-5, "unit weights = MSE " + what)
            }
            var bad = randomValues(6, seed: 99)
            bad[3] = .nan
            let loss = try device.scratch([1])
            try device.weightedMeanSquaredError(
                prediction: try device.tensor(bad, shape: [3, 2]),
                target: try device.tensor(randomValues(6, seed: 98), shape: [3, 2]),
                weights: try device.tensor([1.0, 2, 3] as [Double], shape: [3]), gradient: try device.scratch([3, 2]),
                loss: loss)
            XCTAssertTrue(try device.read(loss)[0].isNaN, "a NaN prediction must give a NaN weighted loss")
        }
        // Several row blocks (8,192 rows of 2 columns each): bitwise the same loss and gradient for 1, 2, 3 threads.
        let (rows, p, t) = (20_001, randomValues(40_002, seed: 61), randomValues(40_002, seed: 62))
        let w = randomValues(rows, seed: 63).map { 0.1 + abs($0) }
        let results = try devices().map { device -> [UInt32] in
            let (gradient, loss) = (try device.scratch([rows, 2]), try device.scratch([1]))
            try device.weightedMeanSquaredError(
                prediction: try device.tensor(p, shape: [rows, 2]), target: try device.tensor(t, shape: [rows, 2]),
                weights: try device.tensor(w, shape: [rows]), gradient: gradient, loss: loss)
            return try (device.readFloats(loss) + device.readFloats(gradient)).map(\.bitPattern)
        }
        XCTAssertEqual(results[0], results[1], "weighted MSE, 1 vs 2 threads")
        XCTAssertEqual(results[0], results[2], "weighted MSE, 1 vs 3 threads")
    }

    /// The fused training forward, inference and backward of a hidden block against the reference's composition
    /// of the primitives, both layer orders, both profiles, `normInput` both separate and the GEMM output itself.
    func testHiddenBlockForwardInferenceAndBackward() throws {
        for device in try devices() {
            for order in LayerOrder.allCases {
                for profile in NumericsProfile.allCases {
                    for (n, (rows, cols)) in shapes.enumerated() {
                        try checkHiddenBlock(device, order: order, profile: profile, rows: rows, cols: cols, seed: n)
                    }
                }
            }
        }
    }

    private func checkHiddenBlock(
        _ device: CPUBackend, order: LayerOrder, profile: NumericsProfile, rows: Int, cols: Int, seed n: Int
    ) throws {
        let seed = UInt64(2000 + 10 * n)
        let z = randomValues(rows * cols, seed: seed, scale: 1.5)
        let bias = randomValues(cols, seed: seed + 1, scale: 0.3)
        let gamma = randomValues(cols, seed: seed + 2).map { 1 + 0.3 * $0 }
        let beta = randomValues(cols, seed: seed + 3, scale: 0.3)
        let rm = randomValues(cols, seed: seed + 4, scale: 0.2)
        let rv = randomValues(cols, seed: seed + 5, scale: 0.2).map { 1 + abs($0) }
        let dy = randomValues(rows * cols, seed: seed + 6)
        let what = "\(order.rawValue) \(profile) \(rows)×\(cols) threads \(device.threads)"
        let inPlace = order == .denseBatchNormTanh && n % 2 == 1  // normInput === preActivation, as Network does

        func run<B: Backend>(_ b: B, guarded: ([Int]) throws -> B.Tensor) throws -> [String: [Double]] {
            let zt = try guarded([rows, cols])
            try b.write(z, to: zt)
            let vectors = try [bias, gamma, beta, rm, rv].map { values -> B.Tensor in
                let t = try guarded([cols])
                try b.write(values, to: t)
                return t
            }
            let (mean, inv, y, dz) = (
                try guarded([cols]), try guarded([cols]), try guarded([rows, cols]), try guarded([rows, cols])
            )
            let (dg, dbe, db) = (try guarded([cols]), try guarded([cols]), try guarded([cols]))
            let normInput = inPlace ? zt : try guarded([rows, cols])
            let dyt = try b.tensor(dy, shape: [rows, cols])
            let unused = try b.scratch([1])
            let block = HiddenBlock(
                index: 1, order: order, settings: profile.batchNorm, weight: unused, bias: vectors[0],
                gamma: vectors[1], beta: vectors[2], runningMean: vectors[3], runningVariance: vectors[4],
                weightGradient: unused, biasGradient: db, gammaGradient: dg, betaGradient: dbe, input: unused,
                preActivation: zt, normInput: normInput, output: y, savedMean: mean, savedInverseStd: inv,
                outputGradient: dyt, preActivationGradient: dz, inputGradient: nil)
            var out: [String: [Double]] = [:]
            try b.hiddenBlockInference(block)
            out["inference normInput"] = try b.read(normInput)
            out["inference y"] = try b.read(y)
            try b.write(z, to: zt)
            try b.hiddenBlockForward(block)
            for (k, t) in [
                ("normInput", normInput), ("y", y), ("mean", mean), ("invstd", inv), ("running mean", vectors[3]),
                ("running var", vectors[4]),
            ] { out[k] = try b.read(t) }
            try b.hiddenBlockBackward(block)
            for (k, t) in [("dz", dz), ("dgamma", dg), ("dbeta", dbe), ("dbias", db)] { out[k] = try b.read(t) }
            return out
        }
        var guards: [CPUGuarded] = []
        let d = try run(device) { shape in
            let g = try CPUGuarded(device, shape: shape)
            guards.append(g)
            return g.tensor
        }
        let r = try run(reference) { try self.reference.scratch($0) }
        for key in [
            "inference normInput", "inference y", "normInput", "y", "mean", "invstd", "running mean", "running var",
            "dgamma", "dbeta",
        ] {
            assertClose(d[key]!, r[key]!, limit: 2e-5, "\(key) \(what)")
        }
        // dz and db come out of batch norm's cancelling difference: judged on the size of its terms.
        let termScale =
            (0..<cols).map { abs(gamma[$0] * r["invstd"]![$0]) }.max()! * dy.reduce(0) { $0 + $1 * $1 }.squareRoot()
        assertClose(d["dz"]!, r["dz"]!, limit: 2e-5, floor: termScale, "dz \(what)")
        assertClose(
            d["dbias"]!, r["dbias"]!, limit: 2e-5, floor: termScale * Double(rows).squareRoot(), "dbias \(what)")
        for g in guards { try g.checkGuards(what) }
    }

    func testBatchNormTrainingInferenceAndBackward() throws {
        for device in try devices() {
            for profile in NumericsProfile.allCases {
                for (n, (rows, cols)) in shapes.enumerated() {
                    let seed = UInt64(100 * (profile == .keras ? 1 : 2) + n)
                    let x = randomValues(rows * cols, seed: seed, scale: 3).map { $0 + 0.5 }
                    let gamma = randomValues(cols, seed: seed + 1).map { 1 + 0.3 * $0 }
                    let beta = randomValues(cols, seed: seed + 2, scale: 0.3)
                    let rm = randomValues(cols, seed: seed + 3, scale: 0.2)
                    let rv = randomValues(cols, seed: seed + 4, scale: 0.2).map { 1 + abs($0) }
                    let dy = randomValues(rows * cols, seed: seed + 5)
                    let what = "\(profile) \(rows)×\(cols) threads \(device.threads)"
                    let r = try BatchNormCase(
                        reference, x: x, gamma: gamma, beta: beta, rm: rm, rv: rv, dy: dy, rows: rows, cols: cols)
                    let d = try BatchNormCase(
                        device, x: x, gamma: gamma, beta: beta, rm: rm, rv: rv, dy: dy, rows: rows, cols: cols)
                    let yd = try CPUGuarded(device, shape: [rows, cols])
                    let yr = try reference.scratch([rows, cols])
                    try reference.batchNormTraining(
                        r.x, gamma: r.gamma, beta: r.beta, runningMean: r.rm, runningVariance: r.rv,
                        savedMean: r.mean, savedInverseStd: r.invstd, settings: profile.batchNorm, into: yr)
                    try device.batchNormTraining(
                        d.x, gamma: d.gamma, beta: d.beta, runningMean: d.rm, runningVariance: d.rv,
                        savedMean: d.mean, savedInverseStd: d.invstd, settings: profile.batchNorm, into: yd.tensor)
                    assertClose(try device.read(yd.tensor), try reference.read(yr), limit: 1e-5, "bn y \(what)")
                    for (a, b, name) in [(d.mean, r.mean, "mean"), (d.invstd, r.invstd, "invstd"), (d.rm, r.rm, "rm")] {
                        assertClose(try device.read(a), try reference.read(b), limit: 1e-5, "bn \(name) \(what)")
                    }
                    assertClose(try device.read(d.rv), try reference.read(r.rv), limit: 1e-5, "bn rv \(what)")
                    try yd.checkGuards("bn training")

                    let (dxd, dgd, dbd) = (
                        try CPUGuarded(device, shape: [rows, cols]), try CPUGuarded(device, shape: [cols]),
                        try CPUGuarded(device, shape: [cols])
                    )
                    let (dxr, dgr, dbr) = (
                        try reference.scratch([rows, cols]), try reference.scratch([cols]),
                        try reference.scratch([cols])
                    )
                    try reference.batchNormBackward(
                        outputGradient: r.dy, input: r.x, gamma: r.gamma, savedMean: r.mean, savedInverseStd: r.invstd,
                        inputGradient: dxr, gammaGradient: dgr, betaGradient: dbr)
                    try device.batchNormBackward(
                        outputGradient: d.dy, input: d.x, gamma: d.gamma, savedMean: d.mean, savedInverseStd: d.invstd,
                        inputGradient: dxd.tensor, gammaGradient: dgd.tensor, betaGradient: dbd.tensor)
                    let termScale =
                        (0..<cols).map { abs(gamma[$0] * r.invstd[$0]) }.max()!
                        * dy.reduce(0) { $0 + $1 * $1 }.squareRoot()
                    assertClose(
                        try device.read(dxd.tensor), try reference.read(dxr), limit: 1e-5, floor: termScale,
                        "bn dx \(what)")
                    assertClose(try device.read(dgd.tensor), try reference.read(dgr), limit: 1e-5, "bn dγ \(what)")
                    assertClose(try device.read(dbd.tensor), try reference.read(dbr), limit: 1e-5, "bn dβ \(what)")
                    for g in [dxd, dgd, dbd] { try g.checkGuards("bn backward") }

                    let ir = try reference.scratch([rows, cols])
                    let id = try CPUGuarded(device, shape: [rows, cols])
                    try reference.batchNormInference(
                        r.x, gamma: r.gamma, beta: r.beta, runningMean: r.rm, runningVariance: r.rv,
                        epsilon: profile.batchNorm.epsilon, into: ir)
                    try device.batchNormInference(
                        d.x, gamma: d.gamma, beta: d.beta, runningMean: d.rm, runningVariance: d.rv,
                        epsilon: profile.batchNorm.epsilon, into: id.tensor)
                    assertClose(try device.read(id.tensor), try reference.read(ir), limit: 1e-5, "bn inf \(what)")
                    try id.checkGuards("bn inference")
                }
            }
        }
    }

    func testBatchNormRefusesASingleRow() throws {
        let device = try devices()[0]
        let d = try BatchNormCase(
            device, x: [1, 2, 3], gamma: [1, 1, 1], beta: [0, 0, 0], rm: [0, 0, 0], rv: [1, 1, 1], dy: [1, 1, 1],
            rows: 1, cols: 3)
        XCTAssertThrowsError(
            try device.batchNormTraining(
                d.x, gamma: d.gamma, beta: d.beta, runningMean: d.rm, runningVariance: d.rv, savedMean: d.mean,
                savedInverseStd: d.invstd, settings: NumericsProfile.pytorch.batchNorm, into: d.dy)
        ) { XCTAssertTrue("\($0)".contains("at least 2 rows"), "\($0)") }
    }

    func testMeanSquaredErrorAdamAndGather() throws {
        for device in try devices() {
            for (n, (rows, cols)) in (shapes + [(4000, 2)]).enumerated() {
                let p = randomValues(rows * cols, seed: UInt64(200 + n), scale: 5)
                let t = randomValues(rows * cols, seed: UInt64(300 + n), scale: 5)
                let (gr, lr) = (try reference.scratch([rows, cols]), try reference.scratch([1]))
                try reference.meanSquaredError(
                    prediction: try reference.tensor(p, shape: [rows, cols]),
                    target: try reference.tensor(t, shape: [rows, cols]), gradient: gr, loss: lr)
                let (gd, ld) = (try CPUGuarded(device, shape: [rows, cols]), try CPUGuarded(device, shape: [1]))
                try device.meanSquaredError(
                    prediction: try device.tensor(p, shape: [rows, cols]),
                    target: try device.tensor(t, shape: [rows, cols]), gradient: gd.tensor, loss: ld.tensor)
                assertClose(try device.read(gd.tensor), try reference.read(gr), limit: limit, "mse gradient")
                assertClose(
                    try device.read(ld.tensor), try reference.read(lr), limit: 1e-5, "mse loss \(rows)×\(cols)")
                try gd.checkGuards("mse gradient")
                try ld.checkGuards("mse loss")

                var rng = SplitMix64(seed: UInt64(700 + n))
                let idx = (0..<(rows + 3)).map { _ in Int32(rng.next() % UInt64(rows)) }
                let gathered = try reference.scratch([rows + 1, cols])
                try reference.gatherRows(
                    try reference.tensor(p, shape: [rows, cols]), indices: idx, indexOffset: 2, into: gathered)
                let gdd = try CPUGuarded(device, shape: [rows + 1, cols])
                try device.gatherRows(
                    try device.tensor(p, shape: [rows, cols]), indices: try device.indices(idx), indexOffset: 2,
                    into: gdd.tensor)
                XCTAssertEqual(try device.read(gdd.tensor), try reference.read(gathered).map { Double(Float($0)) })
                try gdd.checkGuards("gather")
                XCTAssertThrowsError(
                    try device.gatherRows(
                        try device.tensor(p, shape: [rows, cols]), indices: try device.indices([Int32(rows)]),
                        indexOffset: 0, into: try device.scratch([1, cols])), "an index past the source must fail")
            }
            for profile in NumericsProfile.allCases {
                for count in [1, 15, 255, 257, 16_385, 40_003] {
                    let theta = randomValues(count, seed: UInt64(400 + count))
                    let zeros = [Double](repeating: 0, count: count)
                    let (pr, mr, vr) = try (
                        reference.tensor(theta, shape: [count]), reference.tensor(zeros, shape: [count]),
                        reference.tensor(zeros, shape: [count])
                    )
                    let pd = try CPUGuarded(device, shape: [count], contents: theta)
                    let md = try CPUGuarded(device, shape: [count], contents: zeros)
                    let vd = try CPUGuarded(device, shape: [count], contents: zeros)
                    for step in 1...4 {
                        let g = randomValues(count, seed: UInt64(500 + step * 7 + count), scale: 0.1)
                        let k = profile.adamCoefficients(learningRate: 1e-3, step: step)
                        try reference.adamUpdate(
                            parameters: pr, gradients: try reference.tensor(g, shape: [count]), m: mr, v: vr,
                            coefficients: k)
                        try device.adamUpdate(
                            parameters: pd.tensor, gradients: try device.tensor(g, shape: [count]), m: md.tensor,
                            v: vd.tensor, coefficients: k)
                    }
                    let what = "adam \(profile) n=\(count) threads \(device.threads)"
                    assertClose(try device.read(pd.tensor), try reference.read(pr), limit: 1e-6, what + " θ")
                    assertClose(try device.read(md.tensor), try reference.read(mr), limit: 1e-5, what + " m")
                    assertClose(try device.read(vd.tensor), try reference.read(vr), limit: 1e-5, what + " v")
                    for g in [pd, md, vd] { try g.checkGuards(what) }
                }
            }
        }
    }

    /// The three GEMM forms of training, on views at odd offsets, into guarded outputs: through the BLAS, and
    /// through the narrow kernels (n ≤ 4; k ≤ 4 for dy·Wᵀ) with their tails, several row chunks and row blocks.
    func testMatmulAllThreeTrainingForms() throws {
        let shapes = [
            (3, 38, 17), (37, 5, 2), (129, 33, 64), (2, 1, 1), (300, 256, 7), (4001, 257, 2), (517, 40, 3),
            (600, 19, 4),
            (70, 530, 5),
        ]
        for device in try devices() {
            for (n, (m, k, nn)) in shapes.enumerated() {
                let a = randomValues(m * k, seed: UInt64(1000 + n))
                let b = randomValues(k * nn, seed: UInt64(1100 + n))
                let dy = randomValues(m * nn, seed: UInt64(1200 + n))
                let what = "\(m)×\(k)×\(nn) threads \(device.threads)"
                func check(
                    _ x: [Double], _ xs: [Int], _ ta: Bool, _ y: [Double], _ ys: [Int], _ tb: Bool, _ out: [Int],
                    _ name: String
                ) throws {
                    let cr = try reference.scratch(out)
                    try reference.matmul(
                        try reference.tensor(x, shape: xs), transposeA: ta, try reference.tensor(y, shape: ys),
                        transposeB: tb, into: cr)
                    let cd = try CPUGuarded(device, shape: out)
                    let (xd, yd) = (
                        try CPUGuarded(device, shape: xs, contents: x), try CPUGuarded(device, shape: ys, contents: y)
                    )
                    try device.matmul(xd.tensor, transposeA: ta, yd.tensor, transposeB: tb, into: cd.tensor)
                    assertClose(try device.read(cd.tensor), try reference.read(cr), limit: 1e-5, "\(name) \(what)")
                    try cd.checkGuards(name)
                }
                try check(a, [m, k], false, b, [k, nn], false, [m, nn], "x·W")
                try check(a, [m, k], true, dy, [m, nn], false, [k, nn], "xᵀ·dy")
                try check(dy, [m, nn], false, b, [k, nn], true, [m, k], "dy·Wᵀ")
            }
        }
    }

    /// libgomp's wait policy: the user's variables win, HRTRAIN_THREAD_WAIT chooses, else libgomp's spinning;
    /// the default thread count follows the free cores.
    func testThreadWaitPolicyAndTheDefaultThreads() throws {
        func choose(_ environment: [String: String]) throws -> String {
            let (setting, description) = try BLASSelection.chooseWaitPolicy(environment: environment)
            return (setting.map { "\($0.0)=\($0.1) " } ?? "") + description
        }
        XCTAssertEqual(try choose(["OMP_WAIT_POLICY": "ACTIVE"]), "OMP_WAIT_POLICY=ACTIVE (set by the user)")
        XCTAssertEqual(try choose(["GOMP_SPINCOUNT": "10"]), "GOMP_SPINCOUNT=10 (set by the user)")
        XCTAssertEqual(
            try choose(["HRTRAIN_THREAD_WAIT": "passive"]), "OMP_WAIT_POLICY=PASSIVE passive (HRTRAIN_THREAD_WAIT)")
        XCTAssertEqual(try choose(["HRTRAIN_THREAD_WAIT": "spin"]), "spin (libgomp's default)")
        XCTAssertEqual(try choose([:]), "spin (libgomp's default)")
        XCTAssertThrowsError(try choose(["HRTRAIN_THREAD_WAIT": "fast"])) { error in
            XCTAssertTrue("\(error)".contains("HRTRAIN_THREAD_WAIT must be spin or passive, got 'fast'"), "\(error)")
        }
        let measured = BLASSelection.freeCores(over: 0.05)
        XCTAssertNotNil(measured)
        if let measured { XCTAssertTrue(measured.isFinite && measured >= 0, "\(measured) free cores") }
        let (threads, reason) = CPUBackend.defaultThreadChoice
        XCTAssertTrue((1...ProcessInfo.processInfo.activeProcessorCount).contains(threads), reason)
        XCTAssertNil(try CPUBackend(threads: 2).threadReason)
        XCTAssertNotNil(try CPUBackend().threadReason)
    }

    /// The narrow GEMM kernels give bitwise the same results on 1, 2 and 3 threads and at every vector level the
    /// CPU has (the same lanes in the same order), and refuse the forms they do not handle.
    func testNarrowGEMMsAreBitwiseTheSameForAnyThreadsAndLevel() throws {
        let levels = CPUKernelLevel.allCases.filter { $0 != .swift && $0.isSupported(by: .current) }
        let (m, k) = (1000, 300)
        let a = randomValues(m * k, seed: 71).map(Float.init)
        let b = randomValues(k * 4, seed: 72).map(Float.init)
        let dy = randomValues(m * 3, seed: 73).map(Float.init)
        // (transposeA, transposeB, m, n, k, A, lda, B, ldb): x·W, xᵀ·dy (n = 2, n = 3: two walks), dy·Wᵀ.
        let forms: [(Bool, Bool, Int, Int, Int, [Float], Int, [Float], Int)] = [
            (false, false, m, 4, k, a, k, b, 4), (true, false, k, 3, m, a, k, dy, 3),
            (true, false, k, 2, m, a, k, dy, 2),
            (false, true, m, k, 3, dy, 3, a, 3),
        ]
        for (ta, tb, rows, cols, inner, x, lda, y, ldb) in forms {
            var results: [[Float]] = []
            for level in levels {
                for threads in [1, 2, 3] {
                    var c = [Float](repeating: .nan, count: rows * cols)
                    let done = CPUKernels.narrowGEMM(
                        level: level, threads: threads, transposeA: ta, transposeB: tb, m: rows, n: cols, k: inner, x,
                        lda, y, ldb, into: &c, cols)
                    XCTAssertTrue(done)
                    XCTAssertFalse(c.contains { !$0.isFinite }, "every element written")
                    results.append(c)
                }
            }
            for result in results.dropFirst() {
                XCTAssertEqual(result, results[0], "form \(ta)\(tb): levels \(levels), 1–3 threads")
            }
        }
        var c = [Float](repeating: 0, count: 25)
        for (ta, tb, n) in [(false, false, 5), (true, false, 5), (true, true, 2)] {
            let done = CPUKernels.narrowGEMM(
                level: .sse2, threads: 1, transposeA: ta, transposeB: tb, m: 5, n: n, k: 5, a, 5, b, 5, into: &c, n)
            XCTAssertFalse(done, "\(ta) \(tb) n = \(n): left to the BLAS")
        }
        XCTAssertFalse(
            CPUKernels.narrowGEMM(
                level: .sse2, threads: 1, transposeA: false, transposeB: true, m: 5, n: 2, k: 5, a, 5, b, 5, into: &c, 2
            ),
            "A·Bᵀ with k = 5: left to the BLAS")
        XCTAssertEqual(c, [Float](repeating: 0, count: 25), "nothing written")
    }

    /// The BLAS's GEMMs give bitwise the same results for every thread split and 1, 2 or 3 threads, close to the
    /// Double reference: on shapes of BLIS's packed path (every dimension ≥ 256, odd) and on one of its
    /// small-matrix path, where a split would change the bits (601×131×257 A·Bᵀ) and none is applied; with oneDNN
    /// the same shapes span several of its fixed tiles of C; an unknown `$HRTRAIN_BLAS_SPLIT` is an error naming it.
    func testBLASThreadSplitsGiveBitwiseTheSameGEMMs() throws {
        try XCTSkipIf(
            try devices()[0].blas.library == .openblas,
            "OpenBLAS's bits depend on its thread count (Aᵀ·B with k = 601, 722, 1001, 4001; README, Deterministic)")
        try checkThreadSplits(m: 263, k: 257, n: 259, reference: true)
        try checkThreadSplits(m: 601, k: 131, n: 257, reference: false)
        // oneDNN's own threads split k here on 8 threads (the first layer's weight gradient) and change the bits.
        try checkThreadSplits(m: 4000, k: 38, n: 256, reference: false, threads: [1, 2, 8])
        // The measured rule: BLIS `haswell` only, m, n, k ≥ 256 only; OpenBLAS always its own split.
        var blas = try devices()[0].blas
        (blas.library, blas.reportedKernels) = (.blis, "haswell")
        func split(_ rule: BLASThreadSplit, _ transposeA: Bool, _ m: Int, _ n: Int, _ k: Int) -> Int32 {
            rule.resolved(for: blas).shimValue(transposeA: transposeA, m: m, n: n, k: k)
        }
        let (library, rows, columns) = (Int32(CPUSHIM_SPLIT_LIBRARY), Int32(CPUSHIM_SPLIT_JC), Int32(CPUSHIM_SPLIT_IC))
        XCTAssertEqual(split(.measured, true, 256, 256, 4000), rows)
        XCTAssertEqual(split(.measured, false, 4000, 256, 256), columns)
        XCTAssertEqual(split(.measured, true, 38, 256, 4000), library)
        XCTAssertEqual(split(.rows, false, 300, 300, 255), library)
        blas.reportedKernels = "skx"
        XCTAssertEqual(split(.measured, true, 256, 256, 4000), library)
        XCTAssertEqual(split(.byShape, true, 256, 256, 4000), rows)
        XCTAssertEqual(split(.byShape, false, 256, 4000, 256), columns)
        XCTAssertEqual(split(.byShape, false, 255, 4000, 256), library)
        XCTAssertEqual(split(.columns, true, 256, 256, 4000), columns)
        (blas.library, blas.reportedKernels) = (.openblas, "SkylakeX")
        XCTAssertEqual(split(.rows, true, 256, 256, 4000), library)
        XCTAssertEqual(try BLASThreadSplit.fromEnvironment([:]), .measured)
        XCTAssertEqual(try BLASThreadSplit.fromEnvironment(["HRTRAIN_BLAS_SPLIT": "Rows"]), .rows)
        XCTAssertEqual(try BLASThreadSplit.fromEnvironment(["HRTRAIN_BLAS_SPLIT": "by-shape"]), .byShape)
        XCTAssertThrowsError(try BLASThreadSplit.fromEnvironment(["HRTRAIN_BLAS_SPLIT": "diagonal"])) {
            XCTAssertTrue("\($0)".contains("HRTRAIN_BLAS_SPLIT=diagonal"), "\($0)")
        }
    }

    /// x·W (m×k by k×n), xᵀ·dy and dy·Wᵀ for every split and thread count: bitwise equal (and, with
    /// `reference`, close to the Double reference).
    private func checkThreadSplits(
        m: Int, k: Int, n: Int, reference checked: Bool, threads threadCounts: [Int] = [1, 2, 3]
    ) throws {
        let x = randomValues(m * k, seed: 81)
        let w = randomValues(k * n, seed: 82)
        let dy = randomValues(m * n, seed: 83)
        // (name, A, A's shape, transposeA, B, B's shape, transposeB, C's shape): x·W, xᵀ·dy, dy·Wᵀ
        let forms: [(String, [Double], [Int], Bool, [Double], [Int], Bool, [Int])] = [
            ("x·W", x, [m, k], false, w, [k, n], false, [m, n]),
            ("xᵀ·dy", x, [m, k], true, dy, [m, n], false, [k, n]),
            ("dy·Wᵀ", dy, [m, n], false, w, [k, n], true, [m, k]),
        ]
        for (name, a, aShape, ta, b, bShape, tb, cShape) in forms {
            var first: [UInt32]?
            for split in BLASThreadSplit.allCases {
                for threads in threadCounts {
                    let device = try CPUBackend(threads: threads, threadSplit: split)
                    let c = try device.scratch(cShape)
                    try device.fill(c, with: .nan)
                    try device.matmul(
                        try device.tensor(a, shape: aShape), transposeA: ta, try device.tensor(b, shape: bShape),
                        transposeB: tb, into: c)
                    let bits = try device.readFloats(c).map(\.bitPattern)
                    if let first {
                        XCTAssertTrue(
                            bits == first, "\(name) \(m)×\(k)×\(n): split \(split.rawValue), \(threads) threads")
                    } else {
                        first = bits
                        guard checked else { continue }
                        let cr = try reference.scratch(cShape)
                        try reference.matmul(
                            try reference.tensor(a, shape: aShape), transposeA: ta,
                            try reference.tensor(b, shape: bShape), transposeB: tb, into: cr)
                        assertClose(try device.read(c), try reference.read(cr), limit: 1e-5, name)
                    }
                }
            }
        }
    }

    /// NaN anywhere in a training step's input comes out as NaN (never as a plausible number).
    func testNaNPropagatesThroughATrainingStep() throws {
        let device = try devices()[1]
        let spec = NetworkSpec(inputSize: 5, hiddenSizes: [19], outputSize: 2)
        let (p, r) = Network<CPUBackend>.initialValues(spec: spec, profile: .keras, seed: 2)
        let net = try Network(backend: device, spec: spec, profile: .keras, parameters: p, runningStatistics: r)
        var x = randomValues(8 * 5, seed: 3)
        x[7] = .nan
        let loss = try device.scratch([1])
        try net.trainStep(
            input: try device.tensor(x, shape: [8, 5]),
            target: try device.tensor(randomValues(16, seed: 4), shape: [8, 2]),
            learningRate: 1e-3, loss: loss)
        XCTAssertTrue(try device.read(loss)[0].isNaN)
        let c = TensorComparison(
            name: "loss", shape: [1], device: try device.read(loss), reference: [1], limit: 1)
        XCTAssertFalse(c.passed, "NaN never passes")
    }

    /// The whole step against the reference (as `hrtrain verify` does it), both profiles and layer orders.
    func testWholeStepMatchesReference() throws {
        for profile in NumericsProfile.allCases {
            for order in LayerOrder.allCases {
                for batch in [2, 3, 67] {
                    var o = Verification.Options()
                    o.batch = batch
                    o.profile = profile
                    o.spec = NetworkSpec(inputSize: 38, hiddenSizes: [24, 17], outputSize: 2, layerOrder: order)
                    o.finiteDifferenceProbes = batch == 67 ? 8 : 0
                    o.trajectorySteps = 3
                    let report = try Verification.run(device: try devices()[1], options: o)
                    XCTAssertTrue(
                        report.passed,
                        "\(profile) \(order.rawValue) batch \(batch): "
                            + "\(report.tensors.filter { !$0.passed }.map(\.name))"
                    )
                    XCTAssertEqual(report.blas?.kernelsMatch, true)
                }
            }
        }
    }

    /// Three training steps give bitwise the same parameters, statistics and loss with 1, 2 or 3 threads.
    func testTrainingIsBitwiseTheSameForAnyThreadCount() throws {
        let spec = NetworkSpec(inputSize: 38, hiddenSizes: [64, 40], outputSize: 2)
        let (p, r) = Network<CPUBackend>.initialValues(spec: spec, profile: .keras, seed: 3)
        let x = randomValues(300 * 38, seed: 4)
        let y = randomValues(300 * 2, seed: 5)
        func run(_ device: CPUBackend) throws -> [UInt32] {
            let net = try Network(backend: device, spec: spec, profile: .keras, parameters: p, runningStatistics: r)
            let xt = try device.tensor(x, shape: [300, 38])
            let yt = try device.tensor(y, shape: [300, 2])
            let loss = try device.scratch([1])
            for _ in 0..<3 { try net.trainStep(input: xt, target: yt, learningRate: 1e-3, loss: loss) }
            let predicted = try net.forward(xt, training: false)
            return try [net.parameters, net.runningStatistics, loss, predicted].flatMap {
                try device.readFloats($0).map(\.bitPattern)
            }
        }
        let results = try devices().map(run)
        XCTAssertEqual(results[0], results[1], "1 vs 2 threads")
        XCTAssertEqual(results[0], results[2], "1 vs 3 threads")
        XCTAssertEqual(results[0], try run(devices()[0]), "twice with 1 thread")
    }

    /// The fused hidden-block kernels at every vector level this CPU runs (the C shim compiled for SSE2, AVX2,
    /// AVX-512) give bitwise the results of the Swift SIMD code: each operation on odd shapes, both layer orders
    /// and profiles, and three whole training steps.
    func testEveryKernelLevelGivesBitwiseTheSwiftResults() throws {
        let levels = CPUKernelLevel.allCases.filter { $0.isSupported(by: .current) }
        XCTAssertEqual(CPUKernelLevel.best(for: .current), levels.last)
        let backends = try levels.map { try CPUBackend(threads: 2, kernelLevel: $0) }
        func block(_ b: CPUBackend, order: LayerOrder, profile: NumericsProfile, rows: Int, cols: Int) throws
            -> [String: [UInt32]]
        {
            let seed = UInt64(rows * 100 + cols)
            let t = { (shape: [Int], k: UInt64, scale: Double) in
                try b.tensor(randomValues(shape.reduce(1, *), seed: seed + k, scale: scale), shape: shape)
            }
            let z = try t([rows, cols], 0, 3)
            let rv = try b.tensor(randomValues(cols, seed: seed + 5, scale: 0.2).map { 1 + abs($0) }, shape: [cols])
            let (dz, y, normInput) = (
                try b.scratch([rows, cols]), try b.scratch([rows, cols]), try b.scratch([rows, cols])
            )
            let (mean, inv, dg, dbe, db) = try (0..<5).map { _ in try b.scratch([cols]) }.tuple5()
            let unused = try b.scratch([1])
            let hidden = HiddenBlock(
                index: 1, order: order, settings: profile.batchNorm, weight: unused, bias: try t([cols], 1, 0.3),
                gamma: try t([cols], 2, 1), beta: try t([cols], 3, 0.3), runningMean: try t([cols], 4, 0.2),
                runningVariance: rv, weightGradient: unused, biasGradient: db, gammaGradient: dg, betaGradient: dbe,
                input: unused, preActivation: z, normInput: normInput, output: y, savedMean: mean,
                savedInverseStd: inv, outputGradient: try t([rows, cols], 6, 1), preActivationGradient: dz,
                inputGradient: nil)
            var out: [String: [UInt32]] = [:]
            let bits = { (t: CPUTensor) in try b.readFloats(t).map(\.bitPattern) }
            try b.hiddenBlockInference(hidden)
            out["inference normInput"] = try bits(normInput)
            out["inference y"] = try bits(y)
            try b.hiddenBlockForward(hidden)
            for (k, v) in [("normInput", normInput), ("y", y), ("mean", mean), ("invstd", inv)] { out[k] = try bits(v) }
            out["running"] = try bits(hidden.runningMean) + bits(hidden.runningVariance)
            try b.hiddenBlockBackward(hidden)
            for (k, v) in [("dz", dz), ("dgamma", dg), ("dbeta", dbe), ("dbias", db)] { out[k] = try bits(v) }
            try b.batchNormBackward(
                outputGradient: hidden.outputGradient, input: z, gamma: hidden.gamma, savedMean: mean,
                savedInverseStd: inv, inputGradient: dz, gammaGradient: dg, betaGradient: dbe)
            out["plain bn dx"] = try bits(dz) + bits(dg) + bits(dbe)
            return out
        }
        for order in LayerOrder.allCases {
            for profile in NumericsProfile.allCases {
                for (rows, cols) in shapes + [(300, 256)] {
                    let expected = try block(backends[0], order: order, profile: profile, rows: rows, cols: cols)
                    for (level, backend) in zip(levels, backends).dropFirst() {
                        let got = try block(backend, order: order, profile: profile, rows: rows, cols: cols)
                        for key in expected.keys.sorted() {
                            XCTAssertEqual(
                                got[key], expected[key], "\(key) \(level) \(order) \(profile) \(rows)×\(cols)")
                        }
                    }
                }
            }
        }
        // Huge, tiny, negative and NaN inputs through tanh (clamp, the small-|x| branch, NaN kept).
        let special: [Float] = [0, -0, 1e-5, -3e-4, 4e-4, 0.5, -2, 7.9, 7.91, -8, 40, .infinity, -.infinity, .nan]
        for b in backends.dropFirst() {
            let rows = special.count
            let z = try b.tensor(special, shape: [rows, 1])
            let one = try b.tensor([Float](repeating: 1, count: 1), shape: [1])
            let zero = try b.tensor([Float](repeating: 0, count: 1), shape: [1])
            let (n, y) = (try b.scratch([rows, 1]), try b.scratch([rows, 1]))
            try b.hiddenBlockInference(
                HiddenBlock(
                    index: 1, order: .denseTanhBatchNorm, settings: NumericsProfile.keras.batchNorm, weight: one,
                    bias: zero, gamma: one, beta: zero, runningMean: zero, runningVariance: one, weightGradient: one,
                    biasGradient: one, gammaGradient: one, betaGradient: one, input: one, preActivation: z,
                    normInput: n, output: y, savedMean: one, savedInverseStd: one, outputGradient: z,
                    preActivationGradient: n, inputGradient: nil))
            // + 0: the bias add (turns -0 into +0)
            let swiftTanh = special.map { CPUKernels.tanh(Strip(repeating: $0 + 0))[0].bitPattern }
            XCTAssertEqual(try b.readFloats(n).map(\.bitPattern), swiftTanh, "tanh at \(b.kernelLevel)")
        }
        let spec = NetworkSpec(inputSize: 38, hiddenSizes: [64, 40], outputSize: 2)
        let (p, r) = Network<CPUBackend>.initialValues(spec: spec, profile: .keras, seed: 3)
        let (x, target) = (randomValues(300 * 38, seed: 4), randomValues(300 * 2, seed: 5))
        let trained = try backends.map { device -> [UInt32] in
            let net = try Network(backend: device, spec: spec, profile: .keras, parameters: p, runningStatistics: r)
            let (xt, yt, loss) = (
                try device.tensor(x, shape: [300, 38]), try device.tensor(target, shape: [300, 2]),
                try device.scratch([1])
            )
            for _ in 0..<3 { try net.trainStep(input: xt, target: yt, learningRate: 1e-3, loss: loss) }
            let predicted = try net.forward(xt, training: false)
            return try [net.parameters, net.runningStatistics, loss, predicted].flatMap {
                try device.readFloats($0).map(\.bitPattern)
            }
        }
        for (level, result) in zip(levels, trained).dropFirst() {
            XCTAssertEqual(result, trained[0], "three training steps: \(level) vs swift")
        }
    }

    /// BLIS's configuration names are looked up within its table (whose lookup has no bounds check): every name of
    /// the table is found, the last one ("generic") too, and a name outside it, in any case, is not.
    func testBLISConfigurationNamesAreLookedUpWithinTheTable() throws {
        try XCTSkipIf(try devices()[0].blas.library != .blis, "the BLAS is not BLIS")
        let generic = cpushim_blis_arch_id("generic")
        XCTAssertGreaterThan(generic, 0, "generic")
        for name in ["skx", "haswell", "zen3"] {
            let id = cpushim_blis_arch_id(name)
            XCTAssertTrue(id >= 0 && id < generic, "\(name): \(id), generic \(generic)")
        }
        for name in ["Haswell", "SkylakeX", "nosuch", ""] {
            XCTAssertEqual(cpushim_blis_arch_id(name), -1, name)
        }
    }

    /// The kernels chosen from the CPU's features, and a mismatch reported as a failure.
    func testBLASKernelsFollowTheCPUFeaturesAndAMismatchFails() throws {
        let device = try devices()[0]
        let blas = device.blas
        XCTAssertTrue(blas.kernelsMatch, blas.summary)
        XCTAssertEqual(blas.requestedKernels, BLASSelection.kernels(for: blas.library, features: blas.features))
        let skylake = CPUFeatures(vendor: "GenuineIntel", family: 6, model: 207, avx2: true, avx512: true, avx: true)
        XCTAssertEqual(BLASSelection.kernels(for: .openblas, features: skylake), "SkylakeX")
        XCTAssertEqual(BLASSelection.kernels(for: .blis, features: skylake), "skx")
        let zen4 = CPUFeatures(vendor: "AuthenticAMD", family: 25, model: 17, avx2: true, avx512: true, avx: true)
        XCTAssertEqual(BLASSelection.defaultLibrary(for: skylake), .blis, "fastest step on Intel AVX-512")
        XCTAssertEqual(BLASSelection.defaultLibrary(for: zen4, processors: 2), .onednn, "measured fastest on Zen 4")
        XCTAssertEqual(BLASSelection.kernels(for: .blis, features: zen4), "haswell")
        let zen5 = CPUFeatures(vendor: "AuthenticAMD", family: 26, model: 2, avx2: true, avx512: true, avx: true)
        XCTAssertEqual(BLASSelection.kernels(for: .blis, features: zen5), "skx", "full-width AVX-512 on Zen 5")
        let zen5WithoutAVX512 = CPUFeatures(
            vendor: "AuthenticAMD", family: 26, model: 2, avx2: true, avx512: false, avx: true)
        XCTAssertEqual(BLASSelection.kernels(for: .blis, features: zen5WithoutAVX512), "haswell")
        if ProcessInfo.processInfo.environment["HRTRAIN_BLAS"] == nil {
            let expected = BLASSelection.defaultLibrary(for: .current)
            XCTAssertTrue(
                blas.library == expected || (blas.library == .blis && blas.reason.contains("not loaded")),
                blas.summary)
        }
        // OpenBLAS 0.3.21's own choice on that CPU: its SSE3 kernels. Must never pass as "right".
        XCTAssertNotNil(
            BLASSelection.check(library: .openblas, requested: "SkylakeX", reported: "Prescott", features: skylake))
        let avx2Only = CPUFeatures(vendor: "AuthenticAMD", family: 23, model: 49, avx2: true, avx512: false, avx: true)
        XCTAssertNotNil(
            BLASSelection.check(library: .blis, requested: "skx", reported: "skx", features: avx2Only),
            "AVX-512 kernels on a CPU without AVX-512")
        var wrong = blas
        wrong.reportedKernels = "generic-but-wrong"
        XCTAssertFalse(wrong.kernelsMatch)
        var report = try Verification.run(
            device: device,
            options: {
                var o = Verification.Options()
                o.batch = 8
                o.spec = NetworkSpec(inputSize: 3, hiddenSizes: [4], outputSize: 2)
                o.finiteDifferenceProbes = 0
                o.trajectorySteps = 0
                return o
            }())
        XCTAssertTrue(report.passed)
        report.blas = wrong
        XCTAssertFalse(report.passed, "a BLAS running other kernels than selected fails verify")
    }

    /// Streaming the training set in chunks gives bitwise the resident set's results on this backend too.
    func testStreamingGivesBitwiseTheResultsOfTheResidentSet() throws {
        let device = try devices()[1]
        let data = try PreparedData.prepare(
            table: TrainerTests.sample(rows: 777, seed: 1), file: "sample", features: nil,
            targets: ["truth_hr_x", "truth_hr_y"], validationSplit: 0.2, scaleTargets: true)
        var options = TrainingOptions()
        options.spec = NetworkSpec(inputSize: 6, hiddenSizes: [16, 16], outputSize: 2)
        options.batchSize = 64
        options.epochs = 2
        func train(limit: Int) throws -> ([Float], [EpochRecord], Bool) {
            let initial = Network<CPUBackend>.initialValues(spec: options.spec, profile: options.profile, seed: 3)
            let net = try Network(
                backend: device, spec: options.spec, profile: options.profile, parameters: initial.parameters,
                runningStatistics: initial.runningStatistics)
            let trainer = try Trainer(
                backend: device, options: options, network: net,
                train: (data.train.features, data.train.targets, data.train.rows),
                validation: (data.validation.features, data.validation.targets, data.validation.rows),
                featureScaler: data.featureScaler, targetScaler: data.targetScaler, residentLimitBytes: limit)
            let history = try trainer.run()
            let weights = try net.weights()
            return (weights.parameters + weights.runningStatistics, history, trainer.trainingSetIsResident)
        }
        let resident = try train(limit: 1 << 30)
        let streamed = try train(limit: 0)
        XCTAssertTrue(resident.2)
        XCTAssertFalse(streamed.2)
        XCTAssertEqual(resident.0.map(\.bitPattern), streamed.0.map(\.bitPattern))
        XCTAssertEqual(resident.1.map(\.trainLoss), streamed.1.map(\.trainLoss))
        XCTAssertEqual(resident.1.map(\.validationLoss), streamed.1.map(\.validationLoss))
        XCTAssertLessThan(resident.1.last!.trainLoss, resident.1.first!.trainLoss, "the loss falls")
    }

    /// `train --backend cpu` → model → `predict --backend cpu` agrees with the Double reference's prediction, and
    /// 1 and 2 threads train bitwise the same weights.
    func testTrainAndPredictCommandsOnTheCPUBackend() throws {
        let dir = try temporaryDirectory(self)
        let csv = dir.appendingPathComponent("events.csv")
        XCTAssertEqual(
            try runHRTrain(["generate", "--events", "600", "--seed", "5", "--output", csv.path, "--quiet"]).status, 0)
        var weights: [[Float]] = []
        for threads in ["1", "2"] {
            let model = dir.appendingPathComponent("model\(threads).safetensors")
            let trained = try runHRTrain([
                "train", "--data", csv.path, "--model", model.path, "--hidden", "16,16", "--batch-size", "64",
                "--epochs", "2", "--backend", "cpu", "--threads", threads, "--quiet",
            ])
            XCTAssertEqual(trained.status, 0, trained.err)
            let loaded = try Model.read(from: model)
            XCTAssertTrue(loaded.metadata.device?.hasPrefix("CPU: \(threads) thread") ?? false, "\(loaded.metadata)")
            weights.append(loaded.parameters)
        }
        XCTAssertEqual(weights[0].map(\.bitPattern), weights[1].map(\.bitPattern), "1 vs 2 threads")
        let model = dir.appendingPathComponent("model2.safetensors")
        let output = dir.appendingPathComponent("cpu.csv")
        let predicted = try runHRTrain([
            "predict", "--model", model.path, "--data", csv.path, "--output", output.path, "--backend", "cpu",
        ])
        XCTAssertEqual(predicted.status, 0, predicted.err)
        let loaded = try Model.read(from: model)
        let features = try readTable(csv, options: ReadOptions(columns: loaded.metadata.featureNames))
        let reference = try loaded.predict(features.values, rows: features.rowCount, on: ReferenceBackend())
        let cpu = try readTable(output).values
        let difference = zip(cpu, reference).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
        let norm = reference.reduce(0.0) { $0 + Double($1) * Double($1) }
        XCTAssertEqual(cpu.count, reference.count)
        XCTAssertTrue(cpu.allSatisfy(\.isFinite))
        XCTAssertLessThanOrEqual((difference / norm).squareRoot(), 1e-5, "CPU vs reference prediction")
    }

    func testVerifyCommandOnTheCPUBackend() throws {
        let (status, out, err) = try runHRTrain([
            "verify", "--backend", "cpu", "--threads", "2", "--batch", "50", "--hidden", "20,17", "--fd-probes", "4",
            "--steps", "2",
        ])
        XCTAssertEqual(status, 0, out + err)
        XCTAssertTrue(out.contains("CPU: 2 threads"), out)
        XCTAssertTrue(out.contains("library reports"), out)
        XCTAssertTrue(out.contains("PASS: all"), out)
        let bad = try runHRTrain(["verify", "--backend", "cpu", "--threads", "0"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.err.contains("--threads"), bad.err)
    }
}

/// A CPU tensor of `shape` between two guard regions filled with a sentinel, at an odd offset into its
/// storage; `checkGuards` fails the test if an operation wrote outside its output.
struct CPUGuarded {
    static let guardCount = 67
    static let sentinel: Float = -7.75e33
    let whole: CPUTensor
    let tensor: CPUTensor
    let backend: CPUBackend

    init(_ backend: CPUBackend, shape: [Int], contents: [Double]? = nil) throws {
        let count = shape.reduce(1, *)
        var values = [Float](repeating: Self.sentinel, count: count + 2 * Self.guardCount)
        if let contents { for i in 0..<count { values[Self.guardCount + i] = Float(contents[i]) } }
        self.backend = backend
        whole = try backend.tensor(values, shape: [values.count])
        tensor = backend.view(whole, offset: Self.guardCount, shape: shape)
    }

    func checkGuards(_ what: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let all = try backend.readFloats(whole)
        XCTAssertTrue(
            all.prefix(Self.guardCount).allSatisfy { $0 == Self.sentinel }
                && all.suffix(Self.guardCount).allSatisfy { $0 == Self.sentinel },
            "\(what): an operation wrote into a guard region", file: file, line: line)
    }
}

extension Array {
    /// The first five elements as a tuple.
    fileprivate func tuple5() -> (Element, Element, Element, Element, Element) {
        (self[0], self[1], self[2], self[3], self[4])
    }
}
