import Dispatch

/// Rows of features and targets on their way to the device: uploaded once when they fit, streamed in chunks
/// otherwise. Either way the rows a step sees, and so the results, are bit for bit the same: in both modes the
/// raw Float32 rows go to the device and are standardised there by the same kernel.
final class DeviceDataset<B: Backend> {
    let backend: B
    let rows: Int
    let featureCount: Int
    let targetCount: Int
    /// The raw rows on the host, `[rows, featureCount]` and `[rows, targetCount]`.
    let features: [Float]
    let targets: [Float]
    /// One loss weight per row, if the training is weighted.
    let weights: [Float]?
    private let featureMean, featureScale: B.Tensor
    private let targetMean, targetScale: B.Tensor?
    /// Resident mode: the whole (standardised) set on the device.
    private var residentFeatures: B.Tensor?
    private var residentTargets: B.Tensor?
    private var residentWeights: B.Tensor?
    /// Streaming mode: rows per uploaded chunk.
    let chunkRows: Int
    /// Whether the set lives on the device.
    var isResident: Bool { residentFeatures != nil }

    /// `features` `[rows, F]` and `targets` `[rows, T]` (raw), `weights` `[rows]` if weighted; the set is
    /// resident when they fit in `residentLimitBytes`.
    init(
        backend: B, features: [Float], targets: [Float], weights: [Float]? = nil, rows: Int,
        featureScaler: StandardScaler, targetScaler: StandardScaler?, residentLimitBytes: Int, chunkRows: Int
    ) throws {
        self.backend = backend
        self.rows = rows
        featureCount = features.count / max(rows, 1)
        targetCount = targets.count / max(rows, 1)
        self.features = features
        self.targets = targets
        self.weights = weights
        featureMean = try backend.tensor(featureScaler.mean, shape: [featureCount])
        featureScale = try backend.tensor(featureScaler.scale, shape: [featureCount])
        targetMean = try targetScaler.map { try backend.tensor($0.mean, shape: [targets.count / max(rows, 1)]) }
        targetScale = try targetScaler.map { try backend.tensor($0.scale, shape: [targets.count / max(rows, 1)]) }
        self.chunkRows = max(chunkRows, 1)
        if (features.count + targets.count + (weights?.count ?? 0)) * 4 <= residentLimitBytes {
            let x = try backend.tensor(features, shape: [rows, featureCount])
            let y = try backend.tensor(targets, shape: [rows, targetCount])
            try standardise(x: x, y: y)
            residentFeatures = x
            residentTargets = y
            residentWeights = try weights.map { try backend.tensor($0, shape: [rows, 1]) }
        }
    }

    private func standardise(x: B.Tensor, y: B.Tensor) throws {
        try backend.standardScale(x, mean: featureMean, scale: featureScale, into: x)
        if let targetMean, let targetScale {
            try backend.standardScale(y, mean: targetMean, scale: targetScale, into: y)
        }
    }

    /// Calls `body(x, y, step)` for consecutive batches of the given sizes, taking rows in `order` (a
    /// permutation of `0..<rows`) or in file order when `order` is nil.
    func forEachBatch(sizes: [Int], order: [Int32]?, _ body: (B.Tensor, B.Tensor, Int) throws -> Void) throws {
        try forEachWeightedBatch(sizes: sizes, order: order) { x, y, _, step in try body(x, y, step) }
    }

    /// `forEachBatch` with each batch's weights `[n]` (nil when the set has none). The steps before
    /// `firstStep` are skipped (a resumed partial epoch): the batches from `firstStep` on are the same rows.
    func forEachWeightedBatch(
        sizes: [Int], order: [Int32]?, firstStep: Int = 0, _ body: (B.Tensor, B.Tensor, B.Tensor?, Int) throws -> Void
    ) throws {
        if let residentFeatures, let residentTargets {
            guard let order else {
                var start = 0
                for (step, n) in sizes.enumerated() {
                    if step < firstStep {
                        start += n
                        continue
                    }
                    try body(
                        backend.view(residentFeatures, offset: start * featureCount, shape: [n, featureCount]),
                        backend.view(residentTargets, offset: start * targetCount, shape: [n, targetCount]),
                        residentWeights.map { backend.view($0, offset: start, shape: [n]) }, step)
                    start += n
                }
                return
            }
            let indices = try backend.indices(order)
            var start = 0
            var buffers: [Int: (B.Tensor, B.Tensor, B.Tensor?)] = [:]
            for (step, n) in sizes.enumerated() {
                if step < firstStep {
                    start += n
                    continue
                }
                if buffers[n] == nil {
                    buffers[n] = (
                        try backend.scratch([n, featureCount]), try backend.scratch([n, targetCount]),
                        try residentWeights.map { _ in try backend.scratch([n, 1]) }
                    )
                }
                let (x, y, w) = buffers[n]!
                // One launch for the batch's features, targets and weights.
                var (sources, outputs) = ([residentFeatures, residentTargets], [x, y])
                if let residentWeights, let w {
                    sources.append(residentWeights)
                    outputs.append(w)
                }
                try backend.gatherRows(sources, indices: indices, indexOffset: start, into: outputs)
                try body(x, y, w.map { backend.view($0, offset: 0, shape: [n]) }, step)
                start += n
            }
            return
        }
        // Streaming: whole batches are packed into chunks of about `chunkRows` rows, gathered on the host,
        // uploaded, standardised on the device, and consumed as views. The host gathers chunk i + 1 on another
        // thread while the device trains on chunk i; the upload itself is queued in order.
        var plan: [(start: Int, rows: Int, sizes: [Int])] = []
        var step = 0
        var start = 0
        while step < firstStep {  // whole batches skipped: the chunks start at the first batch trained
            start += sizes[step]
            step += 1
        }
        while step < sizes.count {
            var chunk: [Int] = []
            var total = 0
            while step < sizes.count && (chunk.isEmpty || total + sizes[step] <= chunkRows) {
                total += sizes[step]
                chunk.append(sizes[step])
                step += 1
            }
            plan.append((start, total, chunk))
            start += total
        }
        let chunks = plan
        let (features, targets, weights, featureCount, targetCount) = (
            self.features, self.targets, self.weights, self.featureCount, self.targetCount
        )
        @Sendable func gather(_ chunk: (start: Int, rows: Int, sizes: [Int])) -> (x: [Float], y: [Float], w: [Float]?) {
            var xs = [Float](repeating: 0, count: chunk.rows * featureCount)
            var ys = [Float](repeating: 0, count: chunk.rows * targetCount)
            var ws = weights.map { _ in [Float](repeating: 0, count: chunk.rows) }
            for r in 0..<chunk.rows {
                let source = order.map { Int($0[chunk.start + r]) } ?? (chunk.start + r)
                for c in 0..<featureCount { xs[r * featureCount + c] = features[source * featureCount + c] }
                for c in 0..<targetCount { ys[r * targetCount + c] = targets[source * targetCount + c] }
                if let weights { ws![r] = weights[source] }
            }
            return (xs, ys, ws)
        }
        func prefetch(_ i: Int) -> ChunkPrefetch {
            let p = ChunkPrefetch()
            let chunk = chunks[i]
            DispatchQueue.global().async(group: p.done) { p.result = gather(chunk) }
            return p
        }
        var next = plan.isEmpty ? nil : prefetch(0)
        step = firstStep
        for i in plan.indices {
            next!.done.wait()
            let (xs, ys, ws) = next!.result!
            next = i + 1 < plan.count ? prefetch(i + 1) : nil
            let x = try backend.tensor(xs, shape: [plan[i].rows, featureCount])
            let y = try backend.tensor(ys, shape: [plan[i].rows, targetCount])
            let w = try ws.map { try backend.tensor($0, shape: [plan[i].rows]) }
            try standardise(x: x, y: y)
            var offset = 0
            for n in plan[i].sizes {
                try body(
                    backend.view(x, offset: offset * featureCount, shape: [n, featureCount]),
                    backend.view(y, offset: offset * targetCount, shape: [n, targetCount]),
                    w.map { backend.view($0, offset: offset, shape: [n]) }, step)
                offset += n
                step += 1
            }
        }
    }
}

/// A chunk of rows being gathered on another thread: `done` is left when `result` is set.
///
/// `@unchecked Sendable`: `result` is written once by the gathering thread before it leaves `done`, and read
/// only after `done.wait()`; the group orders the two.
private final class ChunkPrefetch: @unchecked Sendable {
    let done = DispatchGroup()
    var result: (x: [Float], y: [Float], w: [Float]?)?
}
