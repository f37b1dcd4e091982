import Foundation

/// `hrtrain bench`: steady-state training and inference throughput of the network on one device, where the
/// time goes (per kernel, from OpenCL profiling events), and how that compares with the device's own
/// measured ceilings.
public enum Benchmark {
    /// What to measure.
    public struct Options: Codable, Sendable {
        public var spec = NetworkSpec()
        public var profile: NumericsProfile = .keras
        public var batch = 4000
        /// Timed steady-state training steps.
        public var steps = 30
        /// Untimed steps first (kernel compilation, caches, pool).
        public var warmupSteps = 3
        /// Steps run with profiling events on.
        public var profiledSteps = 10
        /// Matrix size of the SGEMM ceiling measurement (n × n × n).
        public var ceilingSize = 2048
        /// Creates the defaults (the thesis network at batch 4000).
        public init() {}
    }

    /// One row of the per-kernel table.
    public struct KernelRow: Codable, Sendable {
        public var name: String
        public var callsPerStep: Double
        public var millisecondsPerStep: Double
        /// Share of the step's wall time.
        public var share: Double
        public var gflops: Double?
        public var gigabytesPerSecond: Double?
        /// CPU time of the calling thread per step (CPU backend with 1 thread: the cost without other processes'
        /// share of the core).
        public var cpuMillisecondsPerStep: Double?
    }

    /// Everything `bench` measured.
    public struct Report: Codable, Sendable {
        public var device: DeviceInfo
        public var options: Options
        public var hrtrainVersion = HRTrainVersion.string
        /// How the kernel program was obtained and how long that took; the first step includes CLBlast's
        /// kernel compilation (or its load from the driver's cache).
        public var startup: Startup
        public var training: Throughput
        public var inference: Throughput
        public var kernels: [KernelRow]
        public var gemm: GEMMShare
        public var ceiling: Ceiling
        public var transfers: Transfers
        public var memory: Memory
        /// The OpenCL commands a training step enqueues, CLBlast's included, and the host waits.
        public var commands: Commands
        /// GEMM floating-point operations per event per training step.
        public var flopsPerEvent: Int
    }

    public struct Startup: Codable, Sendable {
        public var programOrigin: String
        public var programSeconds: Double
        public var firstStepSeconds: Double
        /// Which CLBlast GEMM parameters ran (see `ComputeContext.gemmParametersOrigin`).
        public var gemmParameters: String?
    }

    public struct Throughput: Codable, Sendable {
        public var eventsPerSecond: Double
        public var millisecondsPerStep: Double
        public var steps: Int

        enum CodingKeys: String, CodingKey {
            case eventsPerSecond = "events_per_second"
            case millisecondsPerStep = "ms_per_step"
            case steps
        }
    }

    public struct GEMMShare: Codable, Sendable {
        public var millisecondsPerStep: Double
        /// Share of the step's wall time.
        public var share: Double
        public var gflops: Double
        /// `gflops` over the measured SGEMM ceiling.
        public var fractionOfCeiling: Double
        /// The step's wall time over the time its GEMMs would take at the ceiling rate.
        public var stepOverGEMMAtCeiling: Double
    }

    public struct Ceiling: Codable, Sendable {
        public var sgemmGFLOPs: Double
        public var sgemmSize: Int
        public var copyGigabytesPerSecond: Double
    }

    public struct Transfers: Codable, Sendable {
        public var hostToDeviceGigabytesPerSecond: Double
        public var deviceToHostGigabytesPerSecond: Double
        /// Time to upload one batch of features and targets.
        public var batchUploadMilliseconds: Double
    }

    /// The commands of the timed training steps, counted by `CommandCounts` (every `clEnqueueNDRangeKernel`
    /// and buffer command of the process, CLBlast's padding and transposition kernels included).
    public struct Commands: Codable, Sendable {
        /// Kernel launches and buffer commands per step.
        public var perStep: Double
        public var kernelsPerStep: Double
        public var transfersPerStep: Double
        /// hrtrain's own kernel launches per step (all launches less those CLBlast made in the step's GEMM calls).
        public var hrtrainKernelsPerStep: Double
        /// GEMM calls per step, and the kernels CLBlast launches for them.
        public var gemmCallsPerStep: Int
        public var gemmKernelsPerStep: Double
        /// The kernels CLBlast launches for one GEMM call of each training shape on fresh buffers: 1 for a direct
        /// kernel, more for the indirect one with its padding/transposition helpers (in the step, a matrix
        /// at an offset into the parameter buffer can cost one copy more).
        public var gemmKernelsPerCall: [String: Int]
        /// Host waits during the timed steps, and the epochs (of up to 8 steps) they ran in: each epoch
        /// uploads its row order (a blocking write) and reads its losses once at the end.
        public var synchronisations: Int
        public var epochs: Int
        /// Whether CLBlast's launches reach the counter (checked on a GEMM); when false, the GEMMs count as
        /// nothing and the figures above are too low.
        public var libraryCommandsCounted: Bool
    }

    public struct Memory: Codable, Sendable {
        public var peakHostBytes: Int
        public var peakDeviceBytes: Int
    }

    /// Runs the benchmark on `context`.
    public static func run(context: ComputeContext, options: Options) throws -> Report {
        let backend = OpenCLBackend(context: context)
        let spec = options.spec
        var rng = SplitMix64(seed: 42)
        let initial = Network<OpenCLBackend>.initialValues(spec: spec, profile: options.profile, seed: 1)
        let network = try Network(
            backend: backend, spec: spec, profile: options.profile, parameters: initial.parameters,
            runningStatistics: initial.runningStatistics)

        // A resident set of eight batches, gathered in shuffled order as the trainer does.
        let rows = options.batch * 8
        let (data, features) = try syntheticResidentSet(backend: backend, spec: spec, rows: rows, using: &rng)
        let losses = try backend.scratch([8])
        let sizes = [Int](repeating: options.batch, count: 8)
        var epoch = 0
        var epochsRun = 0
        func steps(_ count: Int) throws {
            var done = 0
            while done < count {
                epoch += 1
                let order = Trainer<OpenCLBackend>.permutation(rows: rows, seed: 7, epoch: epoch)
                try data.forEachBatch(sizes: Array(sizes.prefix(count - done)), order: order) { x, y, step in
                    try network.trainStep(
                        input: x, target: y, learningRate: 1e-3, loss: backend.view(losses, offset: step, shape: [1]))
                }
                done += min(8, count - done)
                epochsRun += 1
            }
            _ = try backend.read(losses)
        }

        var start = DispatchTime.now()
        try steps(1)
        let firstStep = elapsed(since: start)
        try steps(options.warmupSteps)
        start = DispatchTime.now()
        epochsRun = 0
        let gemmLaunchesBefore = backend.gemmKernelLaunches
        let counted = try CommandCounts.during { try steps(options.steps) }
        let gemmLaunches = backend.gemmKernelLaunches - gemmLaunchesBefore
        let stepSeconds = elapsed(since: start) / Double(options.steps)
        let timedEpochs = epochsRun

        // Our kernels from profiling events. CLBlast's event covers only the last of the kernels an indirect
        // GEMM launches (it pads and transposes first), so the GEMMs are timed by wall clock, shape by shape.
        let profiler = KernelProfiler()
        context.profiler = profiler
        try steps(options.profiledSteps)
        try profiler.collect()
        context.profiler = nil
        let perStep = 1 / Double(options.profiledSteps)
        let stepMilliseconds = stepSeconds * 1e3
        var kernelRows: [KernelRow] = profiler.totals.filter { !$0.key.hasPrefix("gemm") }.map { name, t in
            let seconds = Double(t.nanoseconds) / 1e9
            return KernelRow(
                name: name, callsPerStep: Double(t.calls) * perStep,
                millisecondsPerStep: Double(t.nanoseconds) * perStep / 1e6,
                share: Double(t.nanoseconds) * perStep / 1e6 / stepMilliseconds, gflops: nil,
                gigabytesPerSecond: t.bytes > 0 ? t.bytes / seconds / 1e9 : nil)
        }
        var gemmSeconds = 0.0
        var gemmFlops = 0.0
        var gemmKernels: [String: Int] = [:]
        for shape in trainingGEMMs(spec: spec, batch: options.batch) {
            let seconds = try timeGEMM(backend: backend, shape)
            gemmKernels[shape.label] = try gemmKernelsPerCall(backend: backend, shape)
            gemmSeconds += seconds * Double(shape.calls)
            gemmFlops += shape.flops * Double(shape.calls)
            kernelRows.append(
                KernelRow(
                    name: "gemm \(shape.label) (wall)", callsPerStep: Double(shape.calls),
                    millisecondsPerStep: seconds * 1e3 * Double(shape.calls),
                    share: seconds * 1e3 * Double(shape.calls) / stepMilliseconds, gflops: shape.flops / seconds / 1e9,
                    gigabytesPerSecond: nil))
        }
        kernelRows.sort { $0.millisecondsPerStep > $1.millisecondsPerStep }

        let ceiling = try measureCeiling(backend: backend, size: options.ceilingSize)
        let transfers = try measureTransfers(
            backend: backend, batchBytes: options.batch * (spec.inputSize + spec.outputSize) * 4)
        let inference = try measureInference(
            backend: backend, network: network, batch: options.batch, features: features)

        var usage = rusage()
        getrusage(0, &usage)  // 0 = RUSAGE_SELF (Glibc imports the constant as an enum)
        let gemmRate = gemmFlops / gemmSeconds / 1e9
        let shapes = trainingGEMMs(spec: spec, batch: options.batch)
        let perStepCount = { (n: Int) in Double(n) / Double(options.steps) }
        let gemmKernelsPerStep = perStepCount(gemmLaunches)
        let commands = Commands(
            perStep: perStepCount(counted.commands), kernelsPerStep: perStepCount(counted.kernels),
            transfersPerStep: perStepCount(counted.transfers),
            hrtrainKernelsPerStep: perStepCount(counted.kernels) - gemmKernelsPerStep,
            gemmCallsPerStep: shapes.reduce(0) { $0 + $1.calls }, gemmKernelsPerStep: gemmKernelsPerStep,
            gemmKernelsPerCall: gemmKernels, synchronisations: counted.synchronisations, epochs: timedEpochs,
            libraryCommandsCounted: gemmKernels.values.allSatisfy { $0 >= 1 })
        return Report(
            device: context.device, options: options,
            startup: Startup(
                programOrigin: context.programBuild.origin, programSeconds: context.programBuild.seconds,
                firstStepSeconds: firstStep, gemmParameters: context.gemmParametersOrigin),
            training: Throughput(
                eventsPerSecond: Double(options.batch) / stepSeconds, millisecondsPerStep: stepMilliseconds,
                steps: options.steps),
            inference: inference,
            kernels: kernelRows,
            gemm: GEMMShare(
                millisecondsPerStep: gemmSeconds * 1e3, share: gemmSeconds / stepSeconds, gflops: gemmRate,
                fractionOfCeiling: gemmRate / ceiling.sgemmGFLOPs,
                stepOverGEMMAtCeiling: stepSeconds / (gemmFlops / (ceiling.sgemmGFLOPs * 1e9))),
            ceiling: ceiling, transfers: transfers,
            memory: Memory(peakHostBytes: Int(usage.ru_maxrss) * 1024, peakDeviceBytes: context.memory.peakBytes),
            commands: commands,
            flopsPerEvent: spec.trainingFLOPsPerEvent)
    }

    /// One GEMM of a training step: `c[m, n] = op(a)·op(b)` with inner size k, and how often a step runs it.
    struct GEMMShape {
        var m, n, k: Int
        var transposeA, transposeB: Bool
        var calls: Int
        var flops: Double { 2 * Double(m) * Double(n) * Double(k) }
        var label: String { "\(m)x\(n)x\(k)\(transposeA ? " Aᵀ" : "")\(transposeB ? " Bᵀ" : "")" }
    }

    /// The GEMMs of one training step of `spec` at `batch` rows: forward `h·W`, backward `hᵀ·dz` and `dz·Wᵀ`
    /// (no input gradient for the first layer), identical shapes merged.
    static func trainingGEMMs(spec: NetworkSpec, batch n: Int) -> [GEMMShape] {
        let widths = [spec.inputSize] + spec.hiddenSizes + [spec.outputSize]
        var shapes: [GEMMShape] = []
        func add(_ s: GEMMShape) {
            if let i = shapes.firstIndex(where: {
                $0.m == s.m && $0.n == s.n && $0.k == s.k && $0.transposeA == s.transposeA
                    && $0.transposeB == s.transposeB
            }) {
                shapes[i].calls += 1
            } else {
                shapes.append(s)
            }
        }
        for l in 0..<(widths.count - 1) {
            let (fanIn, fanOut) = (widths[l], widths[l + 1])
            add(GEMMShape(m: n, n: fanOut, k: fanIn, transposeA: false, transposeB: false, calls: 1))
            add(GEMMShape(m: fanIn, n: fanOut, k: n, transposeA: true, transposeB: false, calls: 1))
            if l > 0 { add(GEMMShape(m: n, n: fanIn, k: fanOut, transposeA: false, transposeB: true, calls: 1)) }
        }
        return shapes
    }

    /// The kernels CLBlast launches for one GEMM call of `shape` (counted by `CommandCounts`).
    static func gemmKernelsPerCall(backend: OpenCLBackend, _ shape: GEMMShape) throws -> Int {
        let a = try backend.scratch(shape.transposeA ? [shape.k, shape.m] : [shape.m, shape.k])
        let b = try backend.scratch(shape.transposeB ? [shape.n, shape.k] : [shape.k, shape.n])
        let c = try backend.scratch([shape.m, shape.n])
        return try CommandCounts.during {
            try backend.matmul(a, transposeA: shape.transposeA, b, transposeB: shape.transposeB, into: c)
        }.kernels
    }

    /// The device's own ceilings: the best rate of square CLBlast SGEMMs (n = 512, 1024 and `size`, best of
    /// three each), and a device-to-device copy.
    static func measureCeiling(backend: OpenCLBackend, size: Int) throws -> Ceiling {
        var bestRate = 0.0
        var bestSize = size
        for n in Set([512, 1024, size]).sorted() {
            let a = try backend.scratch([n, n])
            let b = try backend.scratch([n, n])
            let c = try backend.scratch([n, n])
            try backend.fill(a, with: 0.5)
            try backend.fill(b, with: 0.25)
            try backend.matmul(a, transposeA: false, b, transposeB: false, into: c)  // compile / warm up
            try backend.synchronize()
            for _ in 0..<3 {
                let start = DispatchTime.now()
                try backend.matmul(a, transposeA: false, b, transposeB: false, into: c)
                try backend.synchronize()
                let rate = 2 * pow(Double(n), 3) / elapsed(since: start) / 1e9
                if rate > bestRate { (bestRate, bestSize) = (rate, n) }
            }
        }
        let count = 32 * 1024 * 1024  // 128 MiB
        let source = try backend.scratch([count])
        let destination = try backend.scratch([count])
        try backend.fill(source, with: 1)
        try backend.copy(source, to: destination)
        try backend.synchronize()
        var copyBest = Double.infinity
        for _ in 0..<3 {
            let start = DispatchTime.now()
            try backend.copy(source, to: destination)
            try backend.synchronize()
            copyBest = min(copyBest, elapsed(since: start))
        }
        return Ceiling(
            sgemmGFLOPs: bestRate, sgemmSize: bestSize, copyGigabytesPerSecond: Double(2 * count * 4) / copyBest / 1e9)
    }

    /// Host ↔ device bandwidth (64 MiB, best of three) and the upload time of one batch.
    static func measureTransfers(backend: OpenCLBackend, batchBytes: Int) throws -> Transfers {
        let count = 16 * 1024 * 1024
        let host = [Float](repeating: 1, count: count)
        let device = try backend.scratch([count])
        var up = Double.infinity
        var down = Double.infinity
        for _ in 0..<3 {
            var start = DispatchTime.now()
            try backend.context.upload(host, to: device)
            up = min(up, elapsed(since: start))
            start = DispatchTime.now()
            _ = try backend.context.download(device)
            down = min(down, elapsed(since: start))
        }
        let batch = [Float](repeating: 1, count: batchBytes / 4)
        let batchTensor = try backend.scratch([batch.count])
        var batchBest = Double.infinity
        for _ in 0..<5 {
            let start = DispatchTime.now()
            try backend.context.upload(batch, to: batchTensor)
            batchBest = min(batchBest, elapsed(since: start))
        }
        return Transfers(
            hostToDeviceGigabytesPerSecond: Double(count * 4) / up / 1e9,
            deviceToHostGigabytesPerSecond: Double(count * 4) / down / 1e9, batchUploadMilliseconds: batchBest * 1e3)
    }

    /// The `predict` path: upload a batch, standardise, forward in inference mode, read back.
    static func measureInference(backend: OpenCLBackend, network: Network<OpenCLBackend>, batch: Int, features: [Float])
        throws -> Throughput
    {
        let f = network.spec.inputSize
        let mean = try backend.tensor([Double](repeating: 0, count: f), shape: [f])
        let scale = try backend.tensor([Double](repeating: 1, count: f), shape: [f])
        let x = try backend.scratch([batch, f])
        func once(_ b: Int) throws {
            try backend.context.upload(Array(features[(b % 8) * batch * f..<((b % 8) + 1) * batch * f]), to: x)
            try backend.standardScale(x, mean: mean, scale: scale, into: x)
            _ = try backend.context.download(network.forward(x, training: false))
        }
        try once(0)
        let count = 16
        let start = DispatchTime.now()
        for b in 0..<count { try once(b) }
        let seconds = elapsed(since: start) / Double(count)
        return Throughput(eventsPerSecond: Double(batch) / seconds, millisecondsPerStep: seconds * 1e3, steps: count)
    }
}

extension Benchmark {
    /// A resident set of `rows` random events (features ~ N(0, 1), targets ~ N(0, 10²), identity scaler): the
    /// benchmarks gather batches from it in shuffled order, as the trainer does.
    static func syntheticResidentSet<B: Backend>(
        backend: B, spec: NetworkSpec, rows: Int, using rng: inout SplitMix64
    ) throws -> (set: DeviceDataset<B>, features: [Float]) {
        let features = (0..<rows * spec.inputSize).map { _ in Float(rng.normal()) }
        let targets = (0..<rows * spec.outputSize).map { _ in Float(10 * rng.normal()) }
        let identity = StandardScaler(
            mean: .init(repeating: 0, count: spec.inputSize), scale: .init(repeating: 1, count: spec.inputSize))
        let set = try DeviceDataset(
            backend: backend, features: features, targets: targets, rows: rows, featureScaler: identity,
            targetScaler: nil, residentLimitBytes: .max, chunkRows: rows)
        return (set, features)
    }
}
