import CLShim

/// The fused hidden-block kernels of the `tiled` variant (`Kernels/fused.cl`): one launch per block forward
/// (bias + tanh + batch norm) and one backward (batch norm + tanh + bias gradient), for GPUs.
extension OpenCLBackend {
    /// Columns per work-group of the fused tiled kernels: 8 floats are one 32-byte memory sector, and narrow
    /// tiles give a 256-wide layer 32 work-groups.
    static let fusedColumnTile = 8
    /// The most row lanes per work-group (8 × 128 = 1024 work-items, where the device allows that many).
    static let fusedMaximumRowLanes = 128

    /// The work-group shape (columns, row lanes) of the fused kernel `kernel` for `rows` rows: as many row
    /// lanes as the device allows for this kernel (a power of two, at most `fusedMaximumRowLanes`), but no
    /// more than the rows need.
    func fusedGroup(_ kernel: Kernel, rows: Int) throws -> (columns: Int, lanes: Int) {
        let maximum = try kernel.maximumWorkGroupSize(on: context.deviceID)
        var lanes = 1
        while lanes * 2 <= Self.fusedMaximumRowLanes && lanes * 2 * Self.fusedColumnTile <= maximum && lanes < rows {
            lanes *= 2
        }
        return (Self.fusedColumnTile, lanes)
    }

    /// Launches a fused tiled kernel over `columns`; appends the local-memory argument for its lane tree.
    func runFusedTiled(_ name: String, _ arguments: [Kernel.Argument], rows: Int, columns: Int, bytes: Int) throws {
        let kernel = try context.kernel(name)
        let (tile, lanes) = try fusedGroup(kernel, rows: rows)
        try kernel.setArguments(arguments + [.local(bytes: 2 * tile * lanes * MemoryLayout<Float>.size)])
        try context.launch(kernel, global: [columns, lanes], local: [tile, lanes], bytes: bytes)
    }

    /// The tiled fused forward of a hidden block (see `Backend.hiddenBlockForward`); shapes checked by the caller.
    func tiledHiddenBlockForward(
        order: LayerOrder, z: DeviceTensor, bias: DeviceTensor, gamma: DeviceTensor, beta: DeviceTensor,
        runningMean: DeviceTensor, runningVariance: DeviceTensor, savedMean: DeviceTensor,
        savedInverseStd: DeviceTensor, settings: BatchNormSettings, saved: DeviceTensor, output y: DeviceTensor
    ) throws {
        let (rows, cols) = (z.rows, z.columns)
        try runFusedTiled(
            order == .denseTanhBatchNorm
                ? "kernel_bias_tanh_bn_forward_tiled_f32" : "kernel_bias_bn_tanh_forward_tiled_f32",
            [
                .tensor(z), .tensor(bias), .tensor(gamma), .tensor(beta), .tensor(saved), .tensor(y),
                .tensor(savedMean), .tensor(savedInverseStd), .tensor(runningMean), .tensor(runningVariance),
                .int(Int32(rows)), .int(Int32(cols)), .float(Float(settings.epsilon)),
                .float(Float(settings.runningUpdateFactor)), .int(settings.unbiasedRunningVariance ? 1 : 0),
            ], rows: rows, columns: cols, bytes: 4 * 5 * z.count)
    }

    /// The tiled fused backward of a hidden block (see `Backend.hiddenBlockBackward`); shapes checked by the
    /// caller.
    func tiledHiddenBlockBackward(
        order: LayerOrder, outputGradient dy: DeviceTensor, saved: DeviceTensor, output y: DeviceTensor,
        gamma: DeviceTensor, savedMean: DeviceTensor, savedInverseStd: DeviceTensor, inputGradient dz: DeviceTensor,
        gammaGradient: DeviceTensor, betaGradient: DeviceTensor, biasGradient: DeviceTensor
    ) throws {
        let (rows, cols) = (dy.rows, dy.columns)
        let inputs: [Kernel.Argument] =
            order == .denseTanhBatchNorm ? [.tensor(dy), .tensor(saved)] : [.tensor(dy), .tensor(y), .tensor(saved)]
        try runFusedTiled(
            order == .denseTanhBatchNorm ? "kernel_bn_tanh_backward_tiled_f32" : "kernel_tanh_bn_backward_tiled_f32",
            inputs + [
                .tensor(savedMean), .tensor(savedInverseStd), .tensor(gamma), .tensor(dz), .tensor(gammaGradient),
                .tensor(betaGradient), .tensor(biasGradient), .int(Int32(rows)), .int(Int32(cols)),
            ], rows: rows, columns: cols, bytes: 4 * (order == .denseTanhBatchNorm ? 5 : 7) * dy.count)
    }
}
