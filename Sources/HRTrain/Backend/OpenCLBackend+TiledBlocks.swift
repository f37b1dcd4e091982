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
    func tiledHiddenBlockForward(_ block: HiddenBlock<DeviceTensor>) throws {
        let z = block.preActivation
        let (rows, cols, settings) = (z.rows, z.columns, block.settings)
        try runFusedTiled(
            block.order == .denseTanhBatchNorm
                ? "kernel_bias_tanh_bn_forward_tiled_f32" : "kernel_bias_bn_tanh_forward_tiled_f32",
            [
                .tensor(z), .tensor(block.bias), .tensor(block.gamma), .tensor(block.beta), .tensor(block.normInput),
                .tensor(block.output), .tensor(block.savedMean), .tensor(block.savedInverseStd),
                .tensor(block.runningMean), .tensor(block.runningVariance), .int(Int32(rows)), .int(Int32(cols)),
                .float(Float(settings.epsilon)), .float(Float(settings.runningUpdateFactor)),
                .int(settings.unbiasedRunningVariance ? 1 : 0),
            ], rows: rows, columns: cols, bytes: 4 * 5 * z.count)
    }

    /// The tiled fused backward of a hidden block (see `Backend.hiddenBlockBackward`); shapes checked by the
    /// caller.
    func tiledHiddenBlockBackward(_ block: HiddenBlock<DeviceTensor>) throws {
        let dy = block.outputGradient
        let (rows, cols) = (dy.rows, dy.columns)
        let inputs: [Kernel.Argument] =
            block.order == .denseTanhBatchNorm
            ? [.tensor(dy), .tensor(block.normInput)] : [.tensor(dy), .tensor(block.output), .tensor(block.normInput)]
        try runFusedTiled(
            block.order == .denseTanhBatchNorm
                ? "kernel_bn_tanh_backward_tiled_f32" : "kernel_tanh_bn_backward_tiled_f32",
            inputs + [
                .tensor(block.savedMean), .tensor(block.savedInverseStd), .tensor(block.gamma),
                .tensor(block.preActivationGradient), .tensor(block.gammaGradient), .tensor(block.betaGradient),
                .tensor(block.biasGradient), .int(Int32(rows)), .int(Int32(cols)),
            ], rows: rows, columns: cols, bytes: 4 * (block.order == .denseTanhBatchNorm ? 5 : 7) * dy.count)
    }
}
