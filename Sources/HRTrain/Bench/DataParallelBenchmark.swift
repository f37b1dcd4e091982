import Foundation

/// `hrtrain bench` under MPI: synchronous data-parallel training steps on every rank (each on its share of
/// every global batch, with the gradient all-reduce), and what the all-reduce costs.
public enum DataParallelBenchmark {
    /// What rank 0 reports.
    public struct Report: Codable, Sendable {
        public var ranks: Int
        /// The global batch (`--batch`) and the largest share of a rank.
        public var batch: Int
        public var largestShare: Int
        public var synchronizedBatchNorm: Bool
        public var steps: Int
        /// Global events per second of the whole job (global batch / slowest rank's step time).
        public var eventsPerSecond: Double
        public var millisecondsPerStep: Double
        /// Per step: time inside MPI_Allreduce (rank 0; includes waiting for the slowest rank): the gradients',
        /// and with synchronised batch norm the statistics'.
        public var allReduceMillisecondsPerStep: Double
        /// MPI_Allreduce calls per step (1 for the gradients; 3 more per block with synchronised batch norm).
        public var allReducesPerStep: Double
        /// Per step: the gradients' round trip (device → host, weight, MPI_Allreduce, host → device), rank 0.
        public var gradientExchangeMillisecondsPerStep: Double
        /// One all-reduce of the gradients alone, after a barrier (median of 20; rank 0).
        public var isolatedAllReduceMilliseconds: Double
        /// Floats in the gradient all-reduce.
        public var gradientFloats: Int
        /// Each rank's device.
        public var devices: [Int]
        /// The device of rank 0.
        public var device: String
    }

    /// Runs `options.warmupSteps` untimed and `options.steps` timed steps on every rank of `communicator`.
    public static func run(
        context: ComputeContext, options: Benchmark.Options, communicator: Communicator, synchronizeBatchNorm: Bool
    ) throws -> Report {
        let backend = OpenCLBackend(context: context)
        let spec = options.spec
        var rng = SplitMix64(seed: 42)
        let initial = Network<OpenCLBackend>.initialValues(spec: spec, profile: options.profile, seed: 1)
        let network = try Network(
            backend: backend, spec: spec, profile: options.profile, parameters: initial.parameters,
            runningStatistics: initial.runningStatistics)
        let parallel = DataParallel(communicator: communicator, synchronizeBatchNorm: synchronizeBatchNorm)
        // The same resident set of eight global batches on every rank, gathered in shuffled order.
        let rows = options.batch * 8
        let (data, _) = try Benchmark.syntheticResidentSet(backend: backend, spec: spec, rows: rows, using: &rng)
        let losses = try backend.scratch([8])
        var epoch = 0
        func steps(_ count: Int) throws {
            var done = 0
            while done < count {
                epoch += 1
                let sizes = [Int](repeating: options.batch, count: min(8, count - done))
                let order = Trainer<OpenCLBackend>.permutation(rows: rows, seed: 7, epoch: epoch)
                let local = try parallel.localBatches(
                    sizes: sizes, order: Array(order.prefix(sizes.count * options.batch)))
                try data.forEachBatch(sizes: local.sizes, order: local.order) { x, y, step in
                    parallel.prepareStep(network: network, batchRows: options.batch)
                    try network.forward(x, training: true)
                    try network.loss(target: y, into: backend.view(losses, offset: step, shape: [1]))
                    try network.backward()
                    try parallel.reduceGradients(network: network, batchRows: options.batch)
                    try network.applyAdam(learningRate: 1e-3)
                }
                done += sizes.count
            }
            _ = try backend.read(losses)
        }
        try steps(max(options.warmupSteps, 1))
        try communicator.barrier()
        let reduceBefore = communicator.allReduceSeconds
        let callsBefore = communicator.allReduceCalls
        let exchangeBefore = parallel.gradientReductionSeconds
        let start = DispatchTime.now()
        try steps(options.steps)
        var seconds = [elapsed(since: start)]
        let reduceSeconds = communicator.allReduceSeconds - reduceBefore
        let calls = communicator.allReduceCalls - callsBefore
        let exchange = parallel.gradientReductionSeconds - exchangeBefore
        try communicator.allReduceMax(&seconds)
        var gradients = try backend.readFloats(network.gradients)
        var isolated: [Double] = []
        for _ in 0..<20 {
            try communicator.barrier()
            let t = DispatchTime.now()
            try communicator.allReduceSum(&gradients)
            isolated.append(elapsed(since: t))
        }
        let devices = try communicator.allGather(Double(context.device.index)).map { Int($0) }
        let stepSeconds = seconds[0] / Double(options.steps)
        return Report(
            ranks: communicator.size, batch: options.batch,
            largestShare: Sharding.range(count: options.batch, parts: communicator.size, index: 0).count,
            synchronizedBatchNorm: synchronizeBatchNorm, steps: options.steps,
            eventsPerSecond: Double(options.batch) / stepSeconds, millisecondsPerStep: stepSeconds * 1e3,
            allReduceMillisecondsPerStep: reduceSeconds * 1e3 / Double(options.steps),
            allReducesPerStep: Double(calls) / Double(options.steps),
            gradientExchangeMillisecondsPerStep: exchange * 1e3 / Double(options.steps),
            isolatedAllReduceMilliseconds: isolated.sorted()[isolated.count / 2] * 1e3,
            gradientFloats: network.layout.parameterCount, devices: devices, device: context.device.name)
    }
}
