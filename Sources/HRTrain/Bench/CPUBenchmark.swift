import Foundation

extension Benchmark {
    /// What `hrtrain bench --backend cpu` measured.
    public struct CPUReport: Codable, Sendable {
        /// The backend's name (threads, BLAS).
        public var backend: String
        public var blas: BLASSelection
        public var threads: Int
        public var options: Options
        public var hrtrainVersion = HRTrainVersion.string
        public var training: Throughput
        public var inference: Throughput
        /// Wall time per operation of a training step (every operation is synchronous on the CPU).
        public var operations: [KernelRow]
        /// CPU time of the calling thread per profiled step (with 1 thread: the step's cost on an idle core).
        public var stepCPUMilliseconds: Double?
        /// The step's GEMMs inside the step, and their shares.
        public var gemm: GEMMShare
        /// The step's GEMM shapes timed alone (best of 5 × 4 calls): the BLAS's own rate for these shapes.
        public var isolatedGEMMMilliseconds: Double
        public var isolatedGEMMGFLOPs: Double
        /// The step's wall time over its GEMMs timed alone (1 = nothing but GEMMs at the BLAS's rate).
        public var stepOverIsolatedGEMMs: Double
        /// Square SGEMMs through the same BLAS (best over n = 512, 1024, `ceilingSize`).
        public var ceiling: Ceiling
        public var peakHostBytes: Int
        public var flopsPerEvent: Int
    }

    /// Runs the benchmark on the CPU backend: steady-state training steps from a shuffled resident set (as in
    /// training), a per-operation table from timed steps, the GEMMs alone, the BLAS's square-SGEMM ceiling and
    /// the inference path.
    public static func runCPU(backend cpu: CPUBackend, options: Options) throws -> CPUReport {
        let backend = TimedBackend(cpu)
        let spec = options.spec
        var rng = SplitMix64(seed: 42)
        let initial = Network<CPUBackend>.initialValues(spec: spec, profile: options.profile, seed: 1)
        let network = try Network(
            backend: backend, spec: spec, profile: options.profile, parameters: initial.parameters,
            runningStatistics: initial.runningStatistics)
        let rows = options.batch * 8
        let (data, features) = try syntheticResidentSet(backend: backend, spec: spec, rows: rows, using: &rng)
        let losses = try backend.scratch([8])
        var epoch = 0
        func steps(_ count: Int) throws {
            var done = 0
            while done < count {
                epoch += 1
                let order = Trainer<TimedBackend<CPUBackend>>.permutation(rows: rows, seed: 7, epoch: epoch)
                let sizes = [Int](repeating: options.batch, count: min(8, count - done))
                try data.forEachBatch(sizes: sizes, order: order) { x, y, step in
                    try network.trainStep(
                        input: x, target: y, learningRate: 1e-3, loss: backend.view(losses, offset: step, shape: [1]))
                }
                done += sizes.count
            }
            _ = try backend.read(losses)
        }
        try steps(1 + options.warmupSteps)
        var start = DispatchTime.now()
        try steps(options.steps)
        let stepSeconds = elapsed(since: start) / Double(options.steps)

        backend.recording = true
        let cpuStart = threadCPUSeconds()
        start = DispatchTime.now()
        try steps(options.profiledSteps)
        let profiledSeconds = elapsed(since: start)
        let profiledCPUSeconds = threadCPUSeconds() - cpuStart
        backend.recording = false
        let perStep = 1 / Double(options.profiledSteps)
        var operations = backend.totals.filter { $0.key != "read" }.map { name, t in
            KernelRow(
                name: name, callsPerStep: Double(t.calls) * perStep, millisecondsPerStep: t.seconds * perStep * 1e3,
                share: t.seconds / profiledSeconds, gflops: t.flops > 0 ? t.flops / t.seconds / 1e9 : nil,
                gigabytesPerSecond: nil, cpuMillisecondsPerStep: t.cpuSeconds * perStep * 1e3)
        }
        let accounted = operations.reduce(0) { $0 + $1.millisecondsPerStep }
        let accountedCPU: Double = backend.totals.filter { $0.key != "read" }.values.reduce(0) { $0 + $1.cpuSeconds }
        operations.sort { $0.millisecondsPerStep > $1.millisecondsPerStep }
        operations.append(
            KernelRow(
                name: "(outside the operations: batch assembly, loop)", callsPerStep: 1,
                millisecondsPerStep: profiledSeconds * perStep * 1e3 - accounted,
                share: 1 - accounted / (profiledSeconds * perStep * 1e3), gflops: nil, gigabytesPerSecond: nil,
                cpuMillisecondsPerStep: (profiledCPUSeconds - accountedCPU) * perStep * 1e3))
        let gemmRows = backend.totals.filter { $0.key.hasPrefix("gemm") }
        let gemmSeconds = gemmRows.values.reduce(0) { $0 + $1.seconds } * perStep
        let gemmFlops = gemmRows.values.reduce(0) { $0 + $1.flops } * perStep

        var isolated = 0.0
        for shape in trainingGEMMs(spec: spec, batch: options.batch) {
            isolated += try timeGEMM(backend: cpu, shape) * Double(shape.calls)
        }
        let ceiling = try measureCPUCeiling(backend: cpu, size: options.ceilingSize)
        let inference = try measureCPUInference(
            backend: cpu, spec: spec, profile: options.profile, batch: options.batch, features: features)
        var usage = rusage()
        getrusage(0, &usage)
        let stepFlops = Double(spec.trainingFLOPsPerEvent) * Double(options.batch)
        let stepCPUMilliseconds: Double = profiledCPUSeconds * perStep * 1e3
        return CPUReport(
            backend: cpu.name, blas: cpu.blas.reportingNow(), threads: cpu.threads, options: options,
            training: Throughput(
                eventsPerSecond: Double(options.batch) / stepSeconds, millisecondsPerStep: stepSeconds * 1e3,
                steps: options.steps),
            inference: inference, operations: operations, stepCPUMilliseconds: stepCPUMilliseconds,
            gemm: GEMMShare(
                millisecondsPerStep: gemmSeconds * 1e3, share: gemmSeconds / stepSeconds,
                gflops: gemmFlops / gemmSeconds / 1e9,
                fractionOfCeiling: gemmFlops / gemmSeconds / 1e9 / ceiling.sgemmGFLOPs,
                stepOverGEMMAtCeiling: stepSeconds / (stepFlops / (ceiling.sgemmGFLOPs * 1e9))),
            isolatedGEMMMilliseconds: isolated * 1e3, isolatedGEMMGFLOPs: gemmFlops / isolated / 1e9,
            stepOverIsolatedGEMMs: stepSeconds / isolated, ceiling: ceiling,
            peakHostBytes: Int(usage.ru_maxrss) * 1024, flopsPerEvent: spec.trainingFLOPsPerEvent)
    }

    /// Wall seconds of one GEMM of `shape` on any synchronous backend (best of five runs of four calls).
    static func timeGEMM<B: Backend>(backend: B, _ shape: GEMMShape) throws -> Double {
        let a = try backend.scratch(shape.transposeA ? [shape.k, shape.m] : [shape.m, shape.k])
        let b = try backend.scratch(shape.transposeB ? [shape.n, shape.k] : [shape.k, shape.n])
        let c = try backend.scratch([shape.m, shape.n])
        try backend.fill(a, with: 0.5)
        try backend.fill(b, with: 0.25)
        try backend.matmul(a, transposeA: shape.transposeA, b, transposeB: shape.transposeB, into: c)
        try backend.synchronize()
        var best = Double.infinity
        for _ in 0..<5 {
            let start = DispatchTime.now()
            for _ in 0..<4 {
                try backend.matmul(a, transposeA: shape.transposeA, b, transposeB: shape.transposeB, into: c)
            }
            try backend.synchronize()
            best = min(best, elapsed(since: start) / 4)
        }
        return best
    }

    /// The BLAS's square SGEMM rate (n = 512, 1024 and `size`, best of three each) and a memory copy.
    static func measureCPUCeiling(backend: CPUBackend, size: Int) throws -> Ceiling {
        var bestRate = 0.0
        var bestSize = size
        for n in Set([512, 1024, size]).sorted() {
            let seconds = try timeGEMM(
                backend: backend, GEMMShape(m: n, n: n, k: n, transposeA: false, transposeB: false, calls: 1))
            let rate = 2 * pow(Double(n), 3) / seconds / 1e9
            if rate > bestRate { (bestRate, bestSize) = (rate, n) }
        }
        let count = 32 * 1024 * 1024
        let source = try backend.scratch([count])
        let destination = try backend.scratch([count])
        try backend.copy(source, to: destination)
        var copyBest = Double.infinity
        for _ in 0..<3 {
            let start = DispatchTime.now()
            try backend.copy(source, to: destination)
            copyBest = min(copyBest, elapsed(since: start))
        }
        return Ceiling(
            sgemmGFLOPs: bestRate, sgemmSize: bestSize, copyGigabytesPerSecond: Double(2 * count * 4) / copyBest / 1e9)
    }

    /// The `predict` path on the CPU: copy a batch in, standardise, forward in inference mode, read back.
    static func measureCPUInference(
        backend: CPUBackend, spec: NetworkSpec, profile: NumericsProfile, batch: Int, features: [Float]
    ) throws -> Throughput {
        let initial = Network<CPUBackend>.initialValues(spec: spec, profile: profile, seed: 1)
        let network = try Network(
            backend: backend, spec: spec, profile: profile, parameters: initial.parameters,
            runningStatistics: initial.runningStatistics)
        let f = spec.inputSize
        let mean = try backend.tensor([Double](repeating: 0, count: f), shape: [f])
        let scale = try backend.tensor([Double](repeating: 1, count: f), shape: [f])
        let x = try backend.scratch([batch, f])
        func once(_ b: Int) throws {
            try backend.write(Array(features[(b % 8) * batch * f..<((b % 8) + 1) * batch * f]), to: x)
            try backend.standardScale(x, mean: mean, scale: scale, into: x)
            _ = try backend.readFloats(network.forward(x, training: false))
        }
        try once(0)
        let count = 16
        let start = DispatchTime.now()
        for b in 0..<count { try once(b) }
        let seconds = elapsed(since: start) / Double(count)
        return Throughput(eventsPerSecond: Double(batch) / seconds, millisecondsPerStep: seconds * 1e3, steps: count)
    }
}
