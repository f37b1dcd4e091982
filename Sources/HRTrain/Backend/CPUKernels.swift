import CPUShim
import Foundation

/// Sixteen neighbouring columns of a row: one AVX-512 register, two AVX2 registers.
typealias Strip = SIMD16<Float>

/// The CPU backend's numerics, as functions over raw Float32 pointers with explicit shapes (row-major,
/// `rows × cols`, leading dimension `cols`), vectorised with SIMD types and run on a fixed partition of the
/// work:
///
/// - per-column work (bias gradients, batch norm, the fused hidden-block passes) is split into strips of 16
///   columns; each strip walks all rows in order on one thread, summing rows in blocks of 64 and the block sums
///   in order, so every reduction has one fixed order, whatever the number of threads;
/// - elementwise work (Adam, gather, scaling, tanh) is split into fixed chunks; each element is computed
///   alone, so the result does not depend on the partition either.
///
/// Mirrors the column-strip OpenCL kernels (`Kernels/columns.cl`) formula by formula. At every `CPUKernelLevel`
/// but `swift`, the fused hidden-block forward, inference and backward run in the C shim instead
/// (`Sources/CPUShim/cpukernels.c`): the same operations per element, compiled for SSE2, AVX2 or AVX-512, the
/// training passes walking whole rows with one sum per 64-row block (the strips' blocks, added in the same
/// order), so the results are bitwise these.
enum CPUKernels {
    /// Columns per strip.
    static let stripWidth = 16
    /// Rows summed before their sum is added to the running total (keeps Float32 sums accurate).
    static let sumBlock = 64
    /// Elements per chunk of the elementwise operations.
    static let chunk = 16_384

    // MARK: Strip loads and stores

    @inline(__always) static func load(_ p: UnsafePointer<Float>, _ n: Int) -> Strip {
        if n == stripWidth { return UnsafeRawPointer(p).loadUnaligned(as: Strip.self) }
        var v = Strip(repeating: 0)
        for i in 0..<n { v[i] = p[i] }
        return v
    }

    @inline(__always) static func store(_ v: Strip, _ p: UnsafeMutablePointer<Float>, _ n: Int) {
        if n == stripWidth {
            UnsafeMutableRawPointer(p).storeBytes(of: v, as: Strip.self)
            return
        }
        for i in 0..<n { p[i] = v[i] }
    }

    // MARK: Elementary functions

    /// tanh to a few Float32 ulps: the odd rational minimax approximation p(x)/q(x) of degree 13/6 that Eigen
    /// uses (`generic_fast_tanh_float`), on x clamped to ±7.905 (where it reaches 1 in Float32); below
    /// |x| = 4e-4, tanh x = x in Float32. 15 multiply-adds and one division per element; NaN stays NaN.
    @inline(__always) static func tanh(_ x: Strip) -> Strip {
        let limit: Float = 7.905_311_107_635_498
        var c = x.replacing(with: limit, where: x .> limit)
        c.replace(with: -limit, where: c .< -limit)
        let x2: Strip = c * c
        var p: Strip = x2 * Float(-2.760_768_477_423_55e-16) + Float(2.000_187_904_824_77e-13)
        p = p * x2 + Float(-8.604_671_522_137_35e-11)
        p = p * x2 + Float(5.122_297_090_371_14e-08)
        p = p * x2 + Float(1.485_722_357_179_79e-05)
        p = p * x2 + Float(6.372_619_288_754_36e-04)
        p = p * x2 + Float(4.893_524_558_917_86e-03)
        p *= c
        var q: Strip = x2 * Float(1.198_258_394_667_02e-06) + Float(1.185_347_056_866_54e-04)
        q = q * x2 + Float(2.268_434_632_439_00e-03)
        q = q * x2 + Float(4.893_525_185_543_85e-03)
        let t: Strip = p / q
        let tiny: Float = 4e-4
        return t.replacing(with: x, where: (x .< tiny) .& (x .> -tiny))
    }

    /// The constants of `tanh(_:)` in the order the C kernels take them: limit, p0…p6, q0…q3, tiny.
    static let tanhConstants: [Float] = [
        7.905_311_107_635_498, Float(-2.760_768_477_423_55e-16), Float(2.000_187_904_824_77e-13),
        Float(-8.604_671_522_137_35e-11), Float(5.122_297_090_371_14e-08), Float(1.485_722_357_179_79e-05),
        Float(6.372_619_288_754_36e-04), Float(4.893_524_558_917_86e-03), Float(1.198_258_394_667_02e-06),
        Float(1.185_347_056_866_54e-04), Float(2.268_434_632_439_00e-03), Float(4.893_525_185_543_85e-03), 4e-4,
    ]

    /// Hands `tanhConstants` to the C kernels (once per process).
    static let installTanhConstants: Void = {
        tanhConstants.withUnsafeBufferPointer { cpushim_set_tanh_constants($0.baseAddress!) }
    }()

    // MARK: Column strips

    /// Runs `body(c0, n)` for every strip of `cols` columns (n ≤ 16 columns from c0), in parallel.
    @inline(__always) static func forEachStrip(
        cols: Int, parallel: CPUParallel, _ body: (_ c0: Int, _ n: Int) -> Void
    ) {
        let strips = (cols + stripWidth - 1) / stripWidth
        parallel.forEach(strips) { s in
            let c0 = s * stripWidth
            body(c0, min(stripWidth, cols - c0))
        }
    }

    /// Σ_r f(r) over rows in blocks of `sumBlock` (the block sums added in order).
    @inline(__always) static func blockedSum(rows: Int, _ f: (Int) -> Strip) -> Strip {
        var total = Strip(repeating: 0)
        var r = 0
        while r < rows {
            var block = Strip(repeating: 0)
            let end = min(rows, r + sumBlock)
            while r < end {
                block += f(r)
                r += 1
            }
            total += block
        }
        return total
    }

    /// `sums[c] = Σ_r x[r, c]`.
    static func columnSums(
        _ x: UnsafePointer<Float>, rows: Int, cols: Int, into sums: UnsafeMutablePointer<Float>, parallel: CPUParallel
    ) {
        forEachStrip(cols: cols, parallel: parallel) { c0, n in
            store(blockedSum(rows: rows) { load(x + $0 * cols + c0, n) }, sums + c0, n)
        }
    }

    /// Batch statistics of one strip of `v` (two passes: mean, then the mean squared deviation), saved and
    /// folded into the running statistics; returns (mean, 1/√(σ²+ε)).
    @inline(__always) static func stripStatistics(
        _ v: UnsafePointer<Float>, c0: Int, n: Int, rows: Int, cols: Int, settings: BatchNormSettings,
        savedMean: UnsafeMutablePointer<Float>, savedInverseStd: UnsafeMutablePointer<Float>,
        runningMean: UnsafeMutablePointer<Float>, runningVariance: UnsafeMutablePointer<Float>
    ) -> (mean: Strip, inverseStd: Strip) {
        let count = Float(rows)
        let mean = blockedSum(rows: rows) { load(v + $0 * cols + c0, n) } / count
        let variance =
            blockedSum(rows: rows) { r in
                let d = load(v + r * cols + c0, n) - mean
                return d * d
            } / count
        let inverseStd = 1 / (variance + Float(settings.epsilon)).squareRoot()
        store(mean, savedMean + c0, n)
        store(inverseStd, savedInverseStd + c0, n)
        let f = Float(settings.runningUpdateFactor)
        let stored = settings.unbiasedRunningVariance ? variance * (count / Float(rows - 1)) : variance
        store((1 - f) * load(runningMean + c0, n) + f * mean, runningMean + c0, n)
        store((1 - f) * load(runningVariance + c0, n) + f * stored, runningVariance + c0, n)
        return (mean, inverseStd)
    }

    /// The per-column vectors of a batch norm in training mode.
    struct BatchNormVectors {
        var gamma, beta: UnsafePointer<Float>
        var runningMean, runningVariance, savedMean, savedInverseStd: UnsafeMutablePointer<Float>

        /// The same vectors with the settings' Float32 constants, for the C kernels.
        func shim(settings: BatchNormSettings) -> cpushim_batch_norm {
            cpushim_batch_norm(
                gamma: gamma, beta: beta, running_mean: runningMean, running_variance: runningVariance,
                saved_mean: savedMean, saved_inverse_std: savedInverseStd, epsilon: Float(settings.epsilon),
                update_factor: Float(settings.runningUpdateFactor), unbiased: settings.unbiasedRunningVariance ? 1 : 0)
        }
    }

    /// Training-mode batch norm of `x` into `y` (no bias, no activation).
    static func batchNormTraining(
        _ x: UnsafePointer<Float>, rows: Int, cols: Int, vectors bn: BatchNormVectors, settings: BatchNormSettings,
        into y: UnsafeMutablePointer<Float>, parallel: CPUParallel
    ) {
        forEachStrip(cols: cols, parallel: parallel) { c0, n in
            let (mean, s) = stripStatistics(
                x, c0: c0, n: n, rows: rows, cols: cols, settings: settings, savedMean: bn.savedMean,
                savedInverseStd: bn.savedInverseStd, runningMean: bn.runningMean, runningVariance: bn.runningVariance)
            let g = load(bn.gamma + c0, n) * s
            let shift = load(bn.beta + c0, n)
            for r in 0..<rows { store(g * (load(x + r * cols + c0, n) - mean) + shift, y + r * cols + c0, n) }
        }
    }

    /// The fused training-mode forward of a hidden block after its GEMM, one pass per strip:
    /// ```
    /// dense-tanh-bn:  saved = tanh(z + b),  y = BN(saved)
    /// dense-bn-tanh:  saved = z + b,        y = tanh(BN(saved))
    /// ```
    /// `saved` may be `z` itself.
    static func hiddenBlockForward(
        order: LayerOrder, z: UnsafePointer<Float>, bias: UnsafePointer<Float>, rows: Int, cols: Int,
        vectors bn: BatchNormVectors, settings: BatchNormSettings, saved: UnsafeMutablePointer<Float>,
        output y: UnsafeMutablePointer<Float>, level: CPUKernelLevel, parallel: CPUParallel
    ) {
        let tanhFirst = order == .denseTanhBatchNorm
        if let shim = level.shim {
            var vectors = bn.shim(settings: settings)
            cpushim_hidden_block_forward(
                shim, Int32(parallel.threads), tanhFirst ? 1 : 0, z, bias, Int32(rows), Int32(cols), &vectors, saved, y)
            return
        }
        forEachStrip(cols: cols, parallel: parallel) { c0, n in
            let b = load(bias + c0, n)
            for r in 0..<rows {
                let u = load(z + r * cols + c0, n) + b
                store(tanhFirst ? tanh(u) : u, saved + r * cols + c0, n)
            }
            let (mean, s) = stripStatistics(
                saved, c0: c0, n: n, rows: rows, cols: cols, settings: settings, savedMean: bn.savedMean,
                savedInverseStd: bn.savedInverseStd, runningMean: bn.runningMean, runningVariance: bn.runningVariance)
            let g = load(bn.gamma + c0, n) * s
            let shift = load(bn.beta + c0, n)
            for r in 0..<rows {
                let v = g * (load(saved + r * cols + c0, n) - mean) + shift
                store(tanhFirst ? v : tanh(v), y + r * cols + c0, n)
            }
        }
    }

    /// The fused inference-mode forward of a hidden block after its GEMM (running statistics), one pass:
    /// `normInput = tanh(z + b)` or `z + b`, `y = BN(normInput)` or `tanh(BN(normInput))`.
    static func hiddenBlockInference(
        order: LayerOrder, z: UnsafePointer<Float>, bias: UnsafePointer<Float>, rows: Int, cols: Int,
        gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, runningMean: UnsafePointer<Float>,
        runningVariance: UnsafePointer<Float>, epsilon: Float, normInput: UnsafeMutablePointer<Float>,
        output y: UnsafeMutablePointer<Float>, level: CPUKernelLevel, parallel: CPUParallel
    ) {
        let tanhFirst = order == .denseTanhBatchNorm
        if let shim = level.shim {
            var vectors = cpushim_batch_norm(
                gamma: gamma, beta: beta, running_mean: UnsafeMutablePointer(mutating: runningMean),
                running_variance: UnsafeMutablePointer(mutating: runningVariance), saved_mean: nil,
                saved_inverse_std: nil, epsilon: epsilon, update_factor: 0, unbiased: 0)
            forEachRowBlock(rows: rows, cols: cols, parallel: parallel) { r0, r1 in
                cpushim_block_inference_rows(
                    shim, tanhFirst ? 1 : 0, z, bias, Int32(r0), Int32(r1), Int32(cols), &vectors, normInput, y)
            }
            return
        }
        forEachRowBlock(rows: rows, cols: cols, parallel: parallel) { r0, r1 in
            var c0 = 0
            while c0 < cols {
                let n = min(stripWidth, cols - c0)
                let b = load(bias + c0, n)
                let s = load(gamma + c0, n) / (load(runningVariance + c0, n) + epsilon).squareRoot()
                let m = load(runningMean + c0, n)
                let shift = load(beta + c0, n)
                for r in r0..<r1 {
                    let u = load(z + r * cols + c0, n) + b
                    let t = tanhFirst ? tanh(u) : u
                    store(t, normInput + r * cols + c0, n)
                    let v = s * (t - m) + shift
                    store(tanhFirst ? v : tanh(v), y + r * cols + c0, n)
                }
                c0 += stripWidth
            }
        }
    }

    /// The saved statistics and γ a batch-norm backward reads.
    struct BatchNormSaved {
        var gamma, savedMean, savedInverseStd: UnsafePointer<Float>
    }

    /// Batch-norm backward: `dβ = Σ g`, `dγ = Σ g·x̂`, `dx = γ s/N (N g − Σ g − x̂ Σ g x̂)`, where
    /// `g = dy` (`tanhOutput` nil) or `g = dy (1 − y²)` with `y = tanhOutput` (the backward of tanh after the
    /// batch norm); then `dz = dx (1 − t²)` when `tanhInput` is given (the backward of tanh before the batch
    /// norm, t its output = the batch norm's input), and `biasGradient = Σ dz` when given. One pass per strip
    /// for the sums, one for dz.
    static func batchNormBackward(
        outputGradient dy: UnsafePointer<Float>, input x: UnsafePointer<Float>, rows: Int, cols: Int,
        saved bn: BatchNormSaved, tanhOutput: UnsafePointer<Float>?, tanhInput: Bool,
        inputGradient dz: UnsafeMutablePointer<Float>, gammaGradient: UnsafeMutablePointer<Float>,
        betaGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>?,
        level: CPUKernelLevel, parallel: CPUParallel
    ) {
        if let shim = level.shim {
            var arguments = cpushim_block_backward(
                output_gradient: dy, input: x, gamma: bn.gamma, saved_mean: bn.savedMean,
                saved_inverse_std: bn.savedInverseStd, tanh_output: tanhOutput, tanh_input: tanhInput ? 1 : 0,
                input_gradient: dz, gamma_gradient: gammaGradient, beta_gradient: betaGradient,
                bias_gradient: biasGradient)
            cpushim_hidden_block_backward(shim, Int32(parallel.threads), &arguments, Int32(rows), Int32(cols))
            return
        }
        forEachStrip(cols: cols, parallel: parallel) { c0, n in
            @inline(__always) func g(_ r: Int) -> Strip {
                let d = load(dy + r * cols + c0, n)
                guard let y = tanhOutput else { return d }
                let yv = load(y + r * cols + c0, n)
                return d * (1 - yv * yv)
            }
            let m = load(bn.savedMean + c0, n)
            let s = load(bn.savedInverseStd + c0, n)
            var sumG = Strip(repeating: 0)
            var sumGXhat = Strip(repeating: 0)
            var r = 0
            while r < rows {
                var blockG = Strip(repeating: 0)
                var blockGXhat = Strip(repeating: 0)
                let end = min(rows, r + sumBlock)
                while r < end {
                    let gv = g(r)
                    blockG += gv
                    blockGXhat += gv * ((load(x + r * cols + c0, n) - m) * s)
                    r += 1
                }
                sumG += blockG
                sumGXhat += blockGXhat
            }
            store(sumG, betaGradient + c0, n)
            store(sumGXhat, gammaGradient + c0, n)
            let count = Float(rows)
            let k = load(bn.gamma + c0, n) * s / count
            let sumDz = blockedSum(rows: rows) { r in
                let xv = load(x + r * cols + c0, n)
                var d = k * (count * g(r) - sumG - (xv - m) * s * sumGXhat)
                if tanhInput { d *= 1 - xv * xv }
                store(d, dz + r * cols + c0, n)
                return d
            }
            if let biasGradient { store(sumDz, biasGradient + c0, n) }
        }
    }

    /// Inference-mode batch norm: `y = γ (x − m)/√(v + ε) + β`.
    static func batchNormInference(
        _ x: UnsafePointer<Float>, rows: Int, cols: Int, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
        runningMean: UnsafePointer<Float>, runningVariance: UnsafePointer<Float>, epsilon: Float,
        into y: UnsafeMutablePointer<Float>, parallel: CPUParallel
    ) {
        forEachRowBlock(rows: rows, cols: cols, parallel: parallel) { r0, r1 in
            var c0 = 0
            while c0 < cols {
                let n = min(stripWidth, cols - c0)
                let s = load(gamma + c0, n) / (load(runningVariance + c0, n) + epsilon).squareRoot()
                let m = load(runningMean + c0, n)
                let b = load(beta + c0, n)
                for r in r0..<r1 { store(s * (load(x + r * cols + c0, n) - m) + b, y + r * cols + c0, n) }
                c0 += stripWidth
            }
        }
    }

    // MARK: Row blocks and elementwise

    /// Runs `body(r0, r1)` on fixed blocks of rows (about `chunk` elements each), in parallel.
    @inline(__always) static func forEachRowBlock(
        rows: Int, cols: Int, parallel: CPUParallel, _ body: (_ r0: Int, _ r1: Int) -> Void
    ) {
        let blockRows = max(1, chunk / max(cols, 1))
        let blocks = (rows + blockRows - 1) / blockRows
        parallel.forEach(blocks) { b in body(b * blockRows, min(rows, (b + 1) * blockRows)) }
    }

    /// `y[r, c] = op(z[r, c] + bias[c])` with op the identity or tanh (`y` may be `z`).
    static func biasAdd(
        _ z: UnsafePointer<Float>, bias: UnsafePointer<Float>, rows: Int, cols: Int, tanh applyTanh: Bool,
        into y: UnsafeMutablePointer<Float>, parallel: CPUParallel
    ) {
        forEachRowBlock(rows: rows, cols: cols, parallel: parallel) { r0, r1 in
            var c0 = 0
            while c0 < cols {
                let n = min(stripWidth, cols - c0)
                let b = load(bias + c0, n)
                for r in r0..<r1 {
                    let v = load(z + r * cols + c0, n) + b
                    store(applyTanh ? tanh(v) : v, y + r * cols + c0, n)
                }
                c0 += stripWidth
            }
        }
    }

    /// Runs `body(start, count)` on fixed chunks of `count` elements, in parallel.
    @inline(__always) static func forEachChunk(
        _ count: Int, parallel: CPUParallel, _ body: (_ start: Int, _ count: Int) -> Void
    ) {
        let chunks = (count + chunk - 1) / chunk
        parallel.forEach(chunks) { c in body(c * chunk, min(chunk, count - c * chunk)) }
    }

    /// Applies `f` to every strip of 16 elements of the chunk (the tail lane by lane).
    @inline(__always) static func elementwise(
        _ start: Int, _ count: Int, _ f: (_ offset: Int, _ n: Int) -> Void
    ) {
        var i = start
        let end = start + count
        while i < end {
            let n = min(stripWidth, end - i)
            f(i, n)
            i += n
        }
    }

    /// `y = tanh(x)` (`y` may be `x`).
    static func tanh(_ x: UnsafePointer<Float>, count: Int, into y: UnsafeMutablePointer<Float>, parallel: CPUParallel)
    {
        forEachChunk(count, parallel: parallel) { start, length in
            elementwise(start, length) { i, n in store(tanh(load(x + i, n)), y + i, n) }
        }
    }

    /// `dz = dy · (1 − y²)`.
    static func tanhBackward(
        outputGradient dy: UnsafePointer<Float>, output y: UnsafePointer<Float>, count: Int,
        into dz: UnsafeMutablePointer<Float>, parallel: CPUParallel
    ) {
        forEachChunk(count, parallel: parallel) { start, length in
            elementwise(start, length) { i, n in
                let yv = load(y + i, n)
                store(load(dy + i, n) * (1 - yv * yv), dz + i, n)
            }
        }
    }

    /// Adam over a flat buffer: `m ← β1 m + (1−β1) g`, `v ← β2 v + (1−β2) g²`,
    /// `θ ← θ − a m/(√v c + ε)`.
    static func adam(
        parameters theta: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, m: UnsafeMutablePointer<Float>,
        v: UnsafeMutablePointer<Float>, count: Int, coefficients k: AdamCoefficients, parallel: CPUParallel
    ) {
        let (beta1, beta2) = (Float(k.beta1), Float(k.beta2))
        let (oneMinusBeta1, oneMinusBeta2) = (Float(1 - k.beta1), Float(1 - k.beta2))
        let (a, c, epsilon) = (Float(k.stepSize), Float(k.rootScale), Float(k.epsilon))
        forEachChunk(count, parallel: parallel) { start, length in
            elementwise(start, length) { i, n in
                let g = load(gradients + i, n)
                let mi = beta1 * load(m + i, n) + oneMinusBeta1 * g
                let vi = beta2 * load(v + i, n) + oneMinusBeta2 * g * g
                store(mi, m + i, n)
                store(vi, v + i, n)
                store(load(theta + i, n) - a * mi / (vi.squareRoot() * c + epsilon), theta + i, n)
            }
        }
    }

    /// `loss = (1/n) Σ (p − t)²` (in strips of 16 elements, blocks of 64 strips, in order) and
    /// `gradient = 2 (p − t)/n`. Serial: the output layer has two columns.
    static func meanSquaredError(
        prediction p: UnsafePointer<Float>, target t: UnsafePointer<Float>, count: Int,
        gradient: UnsafeMutablePointer<Float>
    ) -> Float {
        let scale = 2 / Float(count)
        var total = Strip(repeating: 0)
        var block = Strip(repeating: 0)
        var strips = 0
        elementwise(0, count) { i, n in
            let d = load(p + i, n) - load(t + i, n)
            store(scale * d, gradient + i, n)
            block += d * d
            strips += 1
            if strips % sumBlock == 0 {
                total += block
                block = Strip(repeating: 0)
            }
        }
        total += block
        return total.sum() / Float(count)
    }

    /// The weighted MSE `Σ_r w_r Σ_c d² / (C Σ w)` with `d = p − t`, and its gradient `2 w_r d / (C Σ w)`.
    /// Fixed blocks of rows (`forEachRowBlock`) sum `Σ w` and `Σ w Σ d²` in Double in row order, in parallel;
    /// the block sums are added in block order on the calling thread, so the result does not depend on the
    /// number of threads. The gradient is elementwise, in the same blocks.
    static func weightedMeanSquaredError(
        prediction p: UnsafePointer<Float>, target t: UnsafePointer<Float>, weights w: UnsafePointer<Float>,
        rows: Int, cols: Int, gradient g: UnsafeMutablePointer<Float>, parallel: CPUParallel
    ) -> Float {
        let blockRows = max(1, chunk / max(cols, 1))
        let blocks = (rows + blockRows - 1) / blockRows
        let partial = UnsafeMutablePointer<Double>.allocate(capacity: 2 * max(blocks, 1))
        defer { partial.deallocate() }
        forEachRowBlock(rows: rows, cols: cols, parallel: parallel) { r0, r1 in
            var weightSum = 0.0
            var sum = 0.0
            for r in r0..<r1 {
                weightSum += Double(w[r])
                var rowSum = 0.0
                for c in 0..<cols {
                    let d = Double(p[r * cols + c]) - Double(t[r * cols + c])
                    rowSum += d * d
                }
                sum += Double(w[r]) * rowSum
            }
            partial[2 * (r0 / blockRows)] = weightSum
            partial[2 * (r0 / blockRows) + 1] = sum
        }
        var weightSum = 0.0
        var sum = 0.0
        for b in 0..<blocks {
            weightSum += partial[2 * b]
            sum += partial[2 * b + 1]
        }
        let normalisation = Double(cols) * weightSum
        forEachRowBlock(rows: rows, cols: cols, parallel: parallel) { r0, r1 in
            for r in r0..<r1 {
                let factor = Float(2 * Double(w[r]) / normalisation)
                for c in 0..<cols {
                    let i = r * cols + c
                    g[i] = factor * (p[i] - t[i])
                }
            }
        }
        return Float(sum / normalisation)
    }

    /// `out[r, :] = source[indices[r], :]` (indices checked by the caller).
    static func gatherRows(
        _ source: UnsafePointer<Float>, cols: Int, indices: UnsafePointer<Int32>, rows: Int,
        into out: UnsafeMutablePointer<Float>, parallel: CPUParallel
    ) {
        forEachRowBlock(rows: rows, cols: cols, parallel: parallel) { r0, r1 in
            for r in r0..<r1 {
                (out + r * cols).update(from: source + Int(indices[r]) * cols, count: cols)
            }
        }
    }

    /// StandardScaler: `out[r, c] = (x[r, c] − mean[c]) / scale[c]`.
    static func standardScale(
        _ x: UnsafePointer<Float>, mean: UnsafePointer<Float>, scale: UnsafePointer<Float>, rows: Int, cols: Int,
        into out: UnsafeMutablePointer<Float>, parallel: CPUParallel
    ) {
        forEachRowBlock(rows: rows, cols: cols, parallel: parallel) { r0, r1 in
            var c0 = 0
            while c0 < cols {
                let n = min(stripWidth, cols - c0)
                let m = load(mean + c0, n)
                let s = load(scale + c0, n)
                for r in r0..<r1 { store((load(x + r * cols + c0, n) - m) / s, out + r * cols + c0, n) }
                c0 += stripWidth
            }
        }
    }
}

extension CPUKernels {
    /// C = op(A)·op(B) for the output layer's narrow forms (A·B, Aᵀ·B with n ≤ 4; A·Bᵀ with k ≤ 4) on the C
    /// shim's kernels (`kernels/narrow.h`; level `swift` runs the SSE2 build), row-major with leading dimensions
    /// `lda`, `ldb`, `ldc`; false, with nothing written, for any other form (the caller uses the BLAS).
    static func narrowGEMM(
        level: CPUKernelLevel, threads: Int, transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
        into c: UnsafeMutablePointer<Float>, _ ldc: Int
    ) -> Bool {
        cpushim_narrow_sgemm(
            level.shim ?? Int32(CPUSHIM_LEVEL_SSE2), Int32(threads), transposeA ? 1 : 0, transposeB ? 1 : 0, Int32(m),
            Int32(n), Int32(k), a, Int32(lda), b, Int32(ldb), c, Int32(ldc)) != 0
    }
}

/// Runs work items on up to `threads` threads (libgomp's team, shared with BLIS's OpenMP build); which thread
/// runs which item never changes a result (see `CPUKernels`).
struct CPUParallel {
    /// Threads to use (1: serial on the calling thread).
    var threads: Int

    /// Calls `body(i)` for every `i` in `0..<items`.
    func forEach(_ items: Int, _ body: (Int) -> Void) {
        if threads <= 1 || items <= 1 {
            for i in 0..<items { body(i) }
            return
        }
        withoutActuallyEscaping(body) { escapable in
            var closure = escapable
            withUnsafeMutablePointer(to: &closure) { pointer in
                cpushim_parallel_for(
                    Int32(threads), Int32(items),
                    { context, item in
                        context!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(Int(item))
                    }, pointer)
            }
        }
    }
}

/// The instruction set of the fused hidden-block kernels (forward, inference, backward): `swift` runs the Swift
/// SIMD code of `CPUKernels` (compiled for the baseline x86-64 target, SSE2), the others the same operations in
/// the C shim compiled for that level. All levels give bitwise the same results; only the speed differs.
public enum CPUKernelLevel: String, Codable, Sendable, CaseIterable {
    case swift, sse2, avx2, avx512

    /// The C shim's level constant (nil: the Swift code).
    var shim: Int32? {
        switch self {
        case .swift: return nil
        case .sse2: return Int32(CPUSHIM_LEVEL_SSE2)
        case .avx2: return Int32(CPUSHIM_LEVEL_AVX2)
        case .avx512: return Int32(CPUSHIM_LEVEL_AVX512)
        }
    }

    /// Whether a CPU with `features` can run this level (from cpuid, never assumed).
    public func isSupported(by features: CPUFeatures) -> Bool {
        #if arch(x86_64)
            switch self {
            case .swift, .sse2: return true
            case .avx2: return features.avx2
            case .avx512: return features.avx512
            }
        #else
            return self == .swift
        #endif
    }

    /// The widest level a CPU with `features` runs.
    public static func best(for features: CPUFeatures) -> CPUKernelLevel {
        allCases.last { $0.isSupported(by: features) }!
    }

    /// The level of this process: `$HRTRAIN_CPU_KERNELS` (swift, sse2, avx2, avx512) when set and supported,
    /// else the widest the CPU runs.
    static func selected(environment: [String: String] = ProcessInfo.processInfo.environment) throws
        -> CPUKernelLevel
    {
        let features = CPUFeatures.current
        guard let name = environment["HRTRAIN_CPU_KERNELS"], !name.isEmpty else { return best(for: features) }
        guard let level = CPUKernelLevel(rawValue: name.lowercased()) else {
            throw BackendError(
                "HRTRAIN_CPU_KERNELS must be one of \(allCases.map(\.rawValue).joined(separator: ", ")), got '\(name)'")
        }
        guard level.isSupported(by: features) else {
            throw BackendError("HRTRAIN_CPU_KERNELS=\(name) needs a CPU with it; this one has \(features.level)")
        }
        return level
    }
}
