import CLShim
import Foundation

/// Row indices on an OpenCL device (Int32), for `gatherRows`.
public final class DeviceIndices {
    let buffer: CLBuffer
    /// Number of indices.
    public let count: Int
    init(buffer: CLBuffer, count: Int) {
        self.buffer = buffer
        self.count = count
    }
}

/// Float32 on an OpenCL device: CLBlast for the GEMMs, `Kernels/*.cl` for everything else.
public final class OpenCLBackend: Backend {
    public typealias Tensor = DeviceTensor
    public typealias Indices = DeviceIndices

    /// The device context every operation is queued on.
    public let context: ComputeContext

    /// How the per-column work (batch norm, bias gradients) is laid out on the device.
    public enum KernelVariant: String, Codable, Sendable, CaseIterable {
        /// Work-groups of 16 columns × 16 row lanes reducing through local memory (GPUs).
        case tiled
        /// One work-item per strip of 16 columns (a float16 vector) walking the rows, and the fused
        /// hidden-block kernels (CPU drivers, where barriers and local memory are costly).
        case columnStrip = "column-strip"
    }
    /// The variant in use: `$HRTRAIN_KERNEL_VARIANT` if set, else column-strip on CPU devices, tiled elsewhere.
    public let variant: KernelVariant
    /// Columns per work-item of the column-strip kernels (one float16).
    static let stripWidth = 16

    /// Work-group shape of the column reductions (must match `COL_TILE`/`ROW_LANES` in the kernels).
    static let columnTile = 16
    static let rowLanes = 16
    /// Work-group size of the MSE reduction (`LOSS_LANES`).
    static let lossLanes = 256
    /// Work-group size of the elementwise kernels.
    static let elementwiseGroup = 256

    /// The arguments that decide the size of CLBlast's temporary GEMM buffer.
    struct GEMMCall: Hashable {
        var m, n, k: Int
        var transposeA, transposeB: Bool
        var offsets: [Int]
        var leading: [Int]
    }
    private var gemmTemporarySizes: [GEMMCall: Int] = [:]
    /// One temporary buffer for every GEMM (the queue is in order, so they never overlap), grown on demand.
    /// Without it CLBlast allocates and frees its padded copies on every call — thousands of page faults
    /// per training step on a CPU device.
    private var gemmTemporaryBuffer: CLBuffer?

    private var gemmParametersVersion = -1

    private func gemmTemporary(_ call: GEMMCall) throws -> CLBuffer? {
        if gemmParametersVersion != CLBlastParameters.version {  // new parameters, new padding: sizes change
            gemmTemporarySizes = [:]
            gemmParametersVersion = CLBlastParameters.version
        }
        let size: Int
        if let known = gemmTemporarySizes[call] {
            size = known
        } else {
            var bytes = 0
            try clblastCheck(
                CLBlastSGemmTempBufferSize(
                    CLBlastLayoutRowMajor, call.transposeA ? CLBlastTransposeYes : CLBlastTransposeNo,
                    call.transposeB ? CLBlastTransposeYes : CLBlastTransposeNo, call.m, call.n, call.k, call.offsets[0],
                    call.leading[0], call.offsets[1], call.leading[1], call.offsets[2], call.leading[2], &context.queue,
                    &bytes),
                "CLBlastSGemmTempBufferSize")
            size = bytes
            gemmTemporarySizes[call] = size
        }
        if size == 0 { return nil }
        if let buffer = gemmTemporaryBuffer, buffer.byteCount >= size { return buffer }
        gemmTemporaryBuffer = try CLBuffer(context: context, byteCount: size)
        return gemmTemporaryBuffer
    }

    /// The kernel plan of `call` under the context's GEMM parameters (nil with CLBlast's defaults).
    func gemmPlan(_ call: GEMMCall) -> GEMMKernelPlan? {
        context.gemmParameters.map {
            GEMMKernelPlan(
                m: call.m, n: call.n, k: call.k, transposeA: call.transposeA, transposeB: call.transposeB,
                offsets: call.offsets, leading: call.leading, parameters: $0)
        }
    }

    /// Prepares CLBlast for `call`: with parameters that limit the helpers of an indirect GEMM
    /// (`GEMMParameters.maximumIndirectHelpers`), sets `XGEMM_MIN_INDIRECT_SIZE` so that CLBlast runs the call
    /// the way `GEMMKernelPlan.routedIndirect` says. Returns whether the call may run indirect (and so needs the
    /// temporary buffer).
    private func routeGEMM(_ call: GEMMCall) throws -> Bool {
        guard let parameters = context.gemmParameters, parameters.maximumIndirectHelpers != nil,
            let plan = gemmPlan(call)
        else { return true }
        guard plan.sizeRuleIndirect else { return false }  // direct under either threshold
        let indirect = plan.routedIndirect(parameters)
        try CLBlastParameters.setMinIndirectSize(
            indirect ? parameters.minIndirectSize : CLBlastParameters.neverIndirect, device: context.deviceID)
        return indirect
    }

    /// The kernels CLBlast has launched for this backend's GEMMs so far (its padding and transposition
    /// helpers included; see `CommandCounts`), so that a step's launches can be split into hrtrain's and CLBlast's.
    public private(set) var gemmKernelLaunches = 0

    /// Wraps an open device context, with `variant` or the device's default variant.
    public init(context: ComputeContext, variant: KernelVariant? = nil) {
        self.context = context
        let fromEnvironment = ProcessInfo.processInfo.environment["HRTRAIN_KERNEL_VARIANT"].flatMap(
            KernelVariant.init(rawValue:))
        self.variant = variant ?? fromEnvironment ?? (context.device.kind == .cpu ? .columnStrip : .tiled)
    }

    /// Opens a device (see `ComputeContext.init(deviceIndex:)`).
    public convenience init(deviceIndex: Int? = nil) throws {
        self.init(context: try ComputeContext(deviceIndex: deviceIndex))
    }

    public var name: String {
        "OpenCL: \(context.device.name)" + (variant == .tiled ? "" : " (\(variant.rawValue) kernels)")
    }

    // MARK: Memory

    public func tensor(_ values: [Double], shape: [Int]) throws -> DeviceTensor {
        try tensor(values.map(Float.init), shape: shape)
    }
    public func tensor(_ values: [Float], shape: [Int]) throws -> DeviceTensor {
        try require(values.count == shape.reduce(1, *), "tensor: \(values.count) values for shape \(shape)")
        let t = try DeviceTensor(
            buffer: CLBuffer(context: context, byteCount: values.count * 4), offset: 0, shape: shape, pool: nil)
        try context.upload(values, to: t)
        return t
    }
    public func scratch(_ shape: [Int]) throws -> DeviceTensor { try context.pool.tensor(shape) }
    public func view(_ tensor: DeviceTensor, offset: Int, shape: [Int]) -> DeviceTensor {
        tensor.view(offset: offset, shape: shape)
    }
    public func shape(of tensor: DeviceTensor) -> [Int] { tensor.shape }
    public func read(_ tensor: DeviceTensor) throws -> [Double] { try context.download(tensor).map(Double.init) }
    public func readFloats(_ tensor: DeviceTensor) throws -> [Float] { try context.download(tensor) }
    public func write(_ values: [Float], to tensor: DeviceTensor) throws {
        try require(values.count == tensor.count, "write: \(values.count) values for \(tensor.count) elements")
        try context.upload(values, to: tensor)
    }
    public func write(_ values: [Double], to tensor: DeviceTensor) throws {
        try require(values.count == tensor.count, "write: \(values.count) values for \(tensor.count) elements")
        try context.upload(values.map(Float.init), to: tensor)
    }
    public func copy(_ source: DeviceTensor, to destination: DeviceTensor) throws {
        try require(source.count == destination.count, "copy: element counts differ")
        try context.copy(source, to: destination)
    }
    public func fill(_ tensor: DeviceTensor, with value: Double) throws {
        try run(
            "kernel_fill_f32",
            [.tensor(tensor), .float(Float(value)), .int(Int32(tensor.count))],
            count: tensor.count)
    }
    public func indices(_ values: [Int32]) throws -> DeviceIndices {
        let buffer = try CLBuffer(context: context, byteCount: values.count * 4)
        try values.withUnsafeBytes { raw in
            try clCheck(
                clEnqueueWriteBuffer(
                    context.queue, buffer.mem, cl_bool(CL_TRUE), 0, raw.count, raw.baseAddress, 0, nil, nil),
                "clEnqueueWriteBuffer", detail: "row indices")
        }
        return DeviceIndices(buffer: buffer, count: values.count)
    }
    public func synchronize() throws { try context.finish() }

    // MARK: Dense layer

    public func matmul(_ a: DeviceTensor, transposeA: Bool, _ b: DeviceTensor, transposeB: Bool, into c: DeviceTensor)
        throws
    {
        let (m, n, k) = try matmulDimensions(a.shape, transposeA, b.shape, transposeB, c.shape)
        let label = "gemm \(m)x\(n)x\(k)\(transposeA ? " Aᵀ" : "")\(transposeB ? " Bᵀ" : "")"
        let bytes = Double(4 * (m * k + k * n + m * n))
        let ta = transposeA ? CLBlastTransposeYes : CLBlastTransposeNo
        let tb = transposeB ? CLBlastTransposeYes : CLBlastTransposeNo
        let call = GEMMCall(
            m: m, n: n, k: k, transposeA: transposeA, transposeB: transposeB,
            offsets: [a.offset, b.offset, c.offset], leading: [a.columns, b.columns, c.columns])
        let temp = try routeGEMM(call) ? try gemmTemporary(call) : nil
        let before = CommandCounts.current().kernels
        defer { gemmKernelLaunches += CommandCounts.current().kernels - before }
        let status = context.recordingEvent(label, flops: 2 * Double(m) * Double(n) * Double(k), bytes: bytes) {
            event in
            CLBlastSgemmWithTempBuffer(
                CLBlastLayoutRowMajor, ta, tb, m, n, k, 1,
                a.buffer.mem, a.offset, a.columns, b.buffer.mem, b.offset, b.columns, 0,
                c.buffer.mem, c.offset, c.columns, &context.queue, event, temp?.mem)
        }
        try clblastCheck(
            status, "CLBlastSgemm", detail: "m=\(m) n=\(n) k=\(k) transA=\(transposeA) transB=\(transposeB)")
    }

    public func biasAdd(_ z: DeviceTensor, bias: DeviceTensor, into y: DeviceTensor) throws {
        try rowwise("kernel_bias_add_f32", z, bias, y)
    }

    public func columnSums(_ x: DeviceTensor, into sums: DeviceTensor) throws {
        try require(sums.count == x.columns, "columnSums: \(x.columns) columns into \(sums.count) sums")
        if variant == .columnStrip {
            return try runStrips(
                "kernel_column_sums_strip_f32",
                [
                    .tensor(x), .tensor(sums),
                    .int(Int32(x.rows)), .int(Int32(x.columns)),
                ], columns: x.columns, bytes: 4 * x.count)
        }
        try runColumns(
            "kernel_column_sums_f32",
            [
                .tensor(x), .tensor(sums),
                .int(Int32(x.rows)), .int(Int32(x.columns)),
            ], columns: x.columns, bytes: 4 * x.count)
    }

    // MARK: tanh

    public func biasTanh(_ z: DeviceTensor, bias: DeviceTensor, into y: DeviceTensor) throws {
        try rowwise("kernel_bias_tanh_f32", z, bias, y)
    }

    public func tanh(_ x: DeviceTensor, into y: DeviceTensor) throws {
        try require(x.count == y.count, "tanh: element counts differ")
        try run(
            "kernel_tanh_f32",
            [
                .tensor(x), .tensor(y),
                .int(Int32(x.count)),
            ], count: x.count)
    }

    public func tanhBackward(outputGradient dy: DeviceTensor, output y: DeviceTensor, into dz: DeviceTensor) throws {
        try require(dy.count == y.count && dz.count == y.count, "tanhBackward: element counts differ")
        try run(
            "kernel_tanh_backward_f32",
            [
                .tensor(dy), .tensor(y),
                .tensor(dz), .int(Int32(y.count)),
            ], count: y.count)
    }

    // MARK: Batch normalisation

    public func batchNormTraining(
        _ x: DeviceTensor, gamma: DeviceTensor, beta: DeviceTensor, runningMean: DeviceTensor,
        runningVariance: DeviceTensor, savedMean: DeviceTensor, savedInverseStd: DeviceTensor,
        settings: BatchNormSettings, into y: DeviceTensor
    ) throws {
        let (rows, cols) = (x.rows, x.columns)
        try require(rows >= 2, "batch normalisation in training mode needs at least 2 rows, got \(rows)")
        try require(
            [gamma, beta, runningMean, runningVariance, savedMean, savedInverseStd].allSatisfy { $0.count == cols }
                && y.count == x.count, "batchNormTraining: per-feature tensors must have \(cols) elements")
        try runColumns(
            "kernel_batchnorm_stats_f32",
            [
                .tensor(x), .buffer(savedMean.buffer.mem),
                .int(Int32(savedMean.offset)),
                .tensor(savedInverseStd),
                .tensor(runningMean),
                .tensor(runningVariance),
                .int(Int32(rows)), .int(Int32(cols)), .float(Float(settings.epsilon)),
                .float(Float(settings.runningUpdateFactor)), .int(settings.unbiasedRunningVariance ? 1 : 0),
            ], columns: cols, bytes: 8 * x.count)
        try batchNormApply(x, mean: savedMean, inverseStd: savedInverseStd, gamma: gamma, beta: beta, into: y)
    }

    public func batchNormInference(
        _ x: DeviceTensor, gamma: DeviceTensor, beta: DeviceTensor, runningMean: DeviceTensor,
        runningVariance: DeviceTensor, epsilon: Double, into y: DeviceTensor
    ) throws {
        let cols = x.columns
        try require(
            [gamma, beta, runningMean, runningVariance].allSatisfy { $0.count == cols } && y.count == x.count,
            "batchNormInference: per-feature tensors must have \(cols) elements")
        let inverseStd = try scratch([cols])
        try run(
            "kernel_batchnorm_invstd_f32",
            [
                .tensor(runningVariance),
                .buffer(inverseStd.buffer.mem), .int(0), .float(Float(epsilon)), .int(Int32(cols)),
            ], count: cols)
        try batchNormApply(x, mean: runningMean, inverseStd: inverseStd, gamma: gamma, beta: beta, into: y)
    }

    private func batchNormApply(
        _ x: DeviceTensor, mean: DeviceTensor, inverseStd: DeviceTensor, gamma: DeviceTensor, beta: DeviceTensor,
        into y: DeviceTensor
    ) throws {
        try run(
            "kernel_batchnorm_apply_f32",
            [
                .tensor(x), .tensor(mean),
                .tensor(inverseStd), .buffer(gamma.buffer.mem),
                .int(Int32(gamma.offset)), .tensor(beta),
                .tensor(y), .int(Int32(x.rows)), .int(Int32(x.columns)),
            ], count: x.count)
    }

    public func batchNormBackward(
        outputGradient dy: DeviceTensor, input x: DeviceTensor, gamma: DeviceTensor, savedMean: DeviceTensor,
        savedInverseStd: DeviceTensor, inputGradient dx: DeviceTensor, gammaGradient: DeviceTensor,
        betaGradient: DeviceTensor
    ) throws {
        let (rows, cols) = (x.rows, x.columns)
        try require(dy.count == x.count && dx.count == x.count, "batchNormBackward: dy/dx must match x")
        try require(
            [gamma, savedMean, savedInverseStd, gammaGradient, betaGradient].allSatisfy { $0.count == cols },
            "batchNormBackward: per-feature tensors must have \(cols) elements")
        try runColumns(
            "kernel_batchnorm_backward_reduce_f32",
            [
                .tensor(dy), .tensor(x),
                .tensor(savedMean), .buffer(savedInverseStd.buffer.mem),
                .int(Int32(savedInverseStd.offset)), .buffer(gammaGradient.buffer.mem),
                .int(Int32(gammaGradient.offset)),
                .tensor(betaGradient), .int(Int32(rows)),
                .int(Int32(cols)),
            ], columns: cols, bytes: 8 * x.count)
        try run(
            "kernel_batchnorm_backward_dx_f32",
            [
                .tensor(dy), .tensor(x),
                .tensor(savedMean), .buffer(savedInverseStd.buffer.mem),
                .int(Int32(savedInverseStd.offset)), .tensor(gamma),
                .tensor(gammaGradient), .buffer(betaGradient.buffer.mem),
                .int(Int32(betaGradient.offset)), .tensor(dx), .int(Int32(rows)),
                .int(Int32(cols)),
            ], count: x.count, traffic: 3)
    }

    // MARK: Hidden block

    public func hiddenBlockForward(_ block: HiddenBlock<DeviceTensor>) throws {
        let (z, saved, y) = (block.preActivation, block.normInput, block.output)
        let (rows, cols) = (z.rows, z.columns)
        try require(rows >= 2, "batch normalisation in training mode needs at least 2 rows, got \(rows)")
        let perFeature = [
            block.bias, block.gamma, block.beta, block.runningMean, block.runningVariance, block.savedMean,
            block.savedInverseStd,
        ]
        try require(
            perFeature.allSatisfy { $0.count == cols } && saved.count == z.count && y.count == z.count,
            "hiddenBlockForward: shapes differ")
        let settings = block.settings
        guard variant == .columnStrip else { return try tiledHiddenBlockForward(block) }
        try runStrips(
            block.order == .denseTanhBatchNorm
                ? "kernel_bias_tanh_bn_forward_strip_f32" : "kernel_bias_bn_tanh_forward_strip_f32",
            [
                .tensor(z), .tensor(block.bias), .tensor(block.gamma), .tensor(block.beta), .tensor(saved),
                .tensor(y), .tensor(block.savedMean), .tensor(block.savedInverseStd), .tensor(block.runningMean),
                .tensor(block.runningVariance), .int(Int32(rows)), .int(Int32(cols)),
                .float(Float(settings.epsilon)), .float(Float(settings.runningUpdateFactor)),
                .int(settings.unbiasedRunningVariance ? 1 : 0),
            ], columns: cols, bytes: 4 * 5 * z.count)
    }

    public func hiddenBlockBackward(_ block: HiddenBlock<DeviceTensor>) throws {
        let (dy, dz) = (block.outputGradient, block.preActivationGradient)
        let (rows, cols) = (dy.rows, dy.columns)
        let perFeature = [
            block.gamma, block.savedMean, block.savedInverseStd, block.gammaGradient, block.betaGradient,
            block.biasGradient,
        ]
        try require(
            perFeature.allSatisfy { $0.count == cols }
                && [block.normInput, block.output, dz].allSatisfy { $0.count == dy.count },
            "hiddenBlockBackward: shapes differ")
        guard variant == .columnStrip else { return try tiledHiddenBlockBackward(block) }
        var arguments: [Kernel.Argument] = [.tensor(dy)]
        switch block.order {
        case .denseTanhBatchNorm: arguments += [.tensor(block.normInput)]
        case .denseBatchNormTanh: arguments += [.tensor(block.output), .tensor(block.normInput)]
        }
        arguments += [
            .tensor(block.savedMean), .tensor(block.savedInverseStd), .tensor(block.gamma), .tensor(dz),
            .tensor(block.gammaGradient), .tensor(block.betaGradient), .tensor(block.biasGradient),
            .int(Int32(rows)), .int(Int32(cols)),
        ]
        try runStrips(
            block.order == .denseTanhBatchNorm
                ? "kernel_bn_tanh_backward_strip_f32" : "kernel_tanh_bn_backward_strip_f32",
            arguments, columns: cols, bytes: 4 * (block.order == .denseTanhBatchNorm ? 5 : 7) * dy.count)
    }

    // MARK: Loss, optimizer, data

    public func meanSquaredError(
        prediction p: DeviceTensor, target t: DeviceTensor, gradient g: DeviceTensor, loss: DeviceTensor
    ) throws {
        try require(
            p.count == t.count && g.count == t.count && loss.count >= 1,
            "meanSquaredError: prediction \(p.shape), target \(t.shape), gradient \(g.shape)")
        let kernel = try context.kernel("kernel_mse_loss_grad_f32")
        try kernel.setArguments([
            .tensor(p), .tensor(t),
            .tensor(g), .tensor(loss),
            .int(Int32(p.count)),
        ])
        try context.launch(kernel, global: [Self.lossLanes], local: [Self.lossLanes], bytes: 12 * p.count)
    }

    /// One launch (`kernel_bias_mse_loss_grad_f32`).
    public func biasMeanSquaredError(
        _ z: DeviceTensor, bias: DeviceTensor, target t: DeviceTensor, prediction p: DeviceTensor,
        gradient g: DeviceTensor, biasGradient: DeviceTensor, loss: DeviceTensor
    ) throws {
        try require(
            z.count == p.count && p.count == t.count && g.count == t.count && loss.count >= 1
                && bias.count == z.columns && biasGradient.count == z.columns,
            "biasMeanSquaredError: z \(z.shape), bias \(bias.shape), target \(t.shape), prediction \(p.shape), "
                + "gradient \(g.shape), bias gradient \(biasGradient.shape)")
        let kernel = try context.kernel("kernel_bias_mse_loss_grad_f32")
        try kernel.setArguments([
            .tensor(z), .tensor(bias), .tensor(t), .tensor(p), .tensor(g), .tensor(biasGradient), .tensor(loss),
            .int(Int32(z.rows)), .int(Int32(z.columns)),
        ])
        try context.launch(kernel, global: [Self.lossLanes], local: [Self.lossLanes], bytes: 20 * p.count)
    }

    public func weightedMeanSquaredError(
        prediction p: DeviceTensor, target t: DeviceTensor, weights w: DeviceTensor, gradient g: DeviceTensor,
        loss: DeviceTensor
    ) throws {
        try require(
            p.shape.count == 2 && p.count == t.count && g.count == t.count && w.count == p.rows && loss.count >= 1,
            "weightedMeanSquaredError: prediction \(p.shape), target \(t.shape), weights \(w.shape), gradient "
                + "\(g.shape)")
        let kernel = try context.kernel("kernel_weighted_mse_loss_grad_f32")
        try kernel.setArguments([
            .tensor(p), .tensor(t), .tensor(w),
            .tensor(g), .tensor(loss),
            .int(Int32(p.rows)), .int(Int32(p.columns)),
        ])
        try context.launch(
            kernel, global: [Self.lossLanes], local: [Self.lossLanes], bytes: 4 * (5 * p.count + 2 * p.rows))
    }

    public func adamUpdate(
        parameters: DeviceTensor, gradients: DeviceTensor, m: DeviceTensor, v: DeviceTensor,
        coefficients k: AdamCoefficients
    ) throws {
        try require(
            [gradients, m, v].allSatisfy { $0.count == parameters.count && $0.offset == 0 } && parameters.offset == 0,
            "adamUpdate: parameters, gradients and moments must be whole buffers of equal size")
        try run(
            "kernel_adam_update_f32",
            [
                .buffer(parameters.buffer.mem), .buffer(gradients.buffer.mem), .buffer(m.buffer.mem),
                .buffer(v.buffer.mem),
                .int(Int32(parameters.count)), .float(Float(k.beta1)), .float(Float(1 - k.beta1)),
                .float(Float(k.beta2)), .float(Float(1 - k.beta2)), .float(Float(k.stepSize)),
                .float(Float(k.rootScale)), .float(Float(k.epsilon)),
            ], count: parameters.count, traffic: 7)
    }

    public func gatherRows(_ source: DeviceTensor, indices: DeviceIndices, indexOffset: Int, into out: DeviceTensor)
        throws
    {
        try require(
            out.columns == source.columns, "gatherRows: source has \(source.columns) columns, output \(out.columns)")
        try require(
            indexOffset >= 0 && indexOffset + out.rows <= indices.count, "gatherRows: index range out of bounds")
        try run(
            "kernel_gather_rows_f32",
            [
                .tensor(source), .buffer(indices.buffer.mem),
                .int(Int32(indexOffset)),
                .tensor(out), .int(Int32(out.rows)), .int(Int32(out.columns)),
            ], count: out.count, traffic: 3)
    }

    /// One launch (`kernel_gather_rows3_f32`) for up to three sources.
    public func gatherRows(
        _ sources: [DeviceTensor], indices: DeviceIndices, indexOffset: Int, into outputs: [DeviceTensor]
    ) throws {
        try require(
            sources.count == outputs.count && (1...3).contains(sources.count),
            "gatherRows: 1 to 3 sources with one output each, got \(sources.count) and \(outputs.count)")
        if sources.count == 1 {
            return try gatherRows(sources[0], indices: indices, indexOffset: indexOffset, into: outputs[0])
        }
        let rows = outputs[0].rows
        for (source, output) in zip(sources, outputs) {
            try require(
                output.columns == source.columns && output.rows == rows,
                "gatherRows: source has \(source.columns) columns, output \(output.shape) (\(rows) rows expected)")
        }
        try require(indexOffset >= 0 && indexOffset + rows <= indices.count, "gatherRows: index range out of bounds")
        var arguments: [Kernel.Argument] = []
        for slot in 0..<3 {
            let used = slot < sources.count
            let (source, output) = used ? (sources[slot], outputs[slot]) : (sources[0], outputs[0])
            arguments += [.tensor(source), .tensor(output), .int(used ? Int32(source.columns) : 0)]
        }
        arguments += [.buffer(indices.buffer.mem), .int(Int32(indexOffset)), .int(Int32(rows))]
        let width = sources.reduce(0) { $0 + $1.columns }
        try run("kernel_gather_rows3_f32", arguments, count: rows * width, traffic: 2)
    }

    public func standardScale(_ x: DeviceTensor, mean: DeviceTensor, scale: DeviceTensor, into out: DeviceTensor) throws
    {
        try require(
            mean.count == x.columns && scale.count == x.columns && out.count == x.count, "standardScale: shapes differ")
        try run(
            "kernel_standard_scale_f32",
            [
                .tensor(x), .tensor(mean),
                .tensor(scale), .tensor(out),
                .int(Int32(x.rows)), .int(Int32(x.columns)),
            ], count: x.count)
    }

    // MARK: Launch helpers

    /// An elementwise kernel over `count` work-items.
    /// `traffic` is the number of Float32 values the kernel reads and writes per work-item (for the profile).
    private func run(_ name: String, _ arguments: [Kernel.Argument], count: Int, traffic: Int = 2) throws {
        let kernel = try context.kernel(name)
        try kernel.setArguments(arguments)
        try context.launch(kernel, global: [count], local: [Self.elementwiseGroup], bytes: 4 * traffic * count)
    }

    /// A column reduction: one work-group of `columnTile × rowLanes` per `columnTile` columns.
    private func runColumns(_ name: String, _ arguments: [Kernel.Argument], columns: Int, bytes: Int) throws {
        let kernel = try context.kernel(name)
        try kernel.setArguments(arguments)
        try context.launch(
            kernel, global: [columns, Self.rowLanes], local: [Self.columnTile, Self.rowLanes], bytes: bytes)
    }

    /// A column-strip kernel: one work-item per 16 columns, work-groups of one.
    private func runStrips(_ name: String, _ arguments: [Kernel.Argument], columns: Int, bytes: Int) throws {
        let kernel = try context.kernel(name)
        try kernel.setArguments(arguments)
        try context.launch(
            kernel, global: [(columns + Self.stripWidth - 1) / Self.stripWidth], local: [1], bytes: bytes)
    }

    /// `y[r, c] = op(z[r, c], bias[c])` kernels.
    private func rowwise(_ name: String, _ z: DeviceTensor, _ bias: DeviceTensor, _ y: DeviceTensor) throws {
        try require(
            bias.count == z.columns && y.count == z.count,
            "\(name): bias has \(bias.count) elements for \(z.columns) columns")
        try run(
            name,
            [
                .tensor(z), .tensor(bias),
                .tensor(y), .int(Int32(z.rows)), .int(Int32(z.columns)),
            ], count: z.count)
    }
}
