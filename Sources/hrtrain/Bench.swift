import ArgumentParser
import Foundation
import HRTrain

extension HRTrainCommand {
    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure training and inference throughput, per-kernel time, and the device's ceilings.",
            discussion: """
                Runs steady-state training steps of the network (rows gathered from a resident, shuffled set, as \
                in training) after untimed warm-up steps; the first step (CLBlast's kernel compilation or its load \
                from the driver's cache) and the program build are reported separately. Then profiles a few steps \
                with OpenCL events, measures a large SGEMM and a device copy as the device's ceilings, host↔device \
                bandwidth and inference (the predict path). --cold starts with empty program caches (hrtrain's and \
                PoCL's) to show the first-run cost.
                """)

        @OptionGroup var deviceOptions: DeviceOptions
        @OptionGroup var distributedOptions: DistributedOptions
        @Flag(help: "Under MPI: synchronise batch norm across ranks, as train --sync-batchnorm.")
        var syncBatchnorm = false
        @OptionGroup var backendOptions: BackendOptions
        @Option(help: "Rows per step.") var batch = 4000
        @Option(help: "Hidden layer sizes, comma separated.") var hidden = "256,256,256"
        @Option(help: "Input features.") var inputs = 38
        @Option(help: "Outputs.") var outputs = 2
        @Option(help: "Layer order: dense-tanh-bn or dense-bn-tanh.") var layout: LayerOrder = .denseTanhBatchNorm
        @Option(help: "Numerics profile: keras or pytorch.") var profile: NumericsProfile = .keras
        @Option(help: "Timed training steps.") var steps = 30
        @Option(help: "Untimed warm-up steps.") var warmupSteps = 3
        @Option(help: "Steps profiled with OpenCL events.") var profiledSteps = 10
        @Option(help: "Largest n of the n×n×n SGEMM ceiling measurement (512 and 1024 are always tried).")
        var ceilingSize = 2048
        @Flag(help: "Start with empty program caches (a first run on a new machine).") var cold = false
        @Flag(help: "Print JSON instead of tables.") var json = false

        func validate() throws {
            if batch < 2 { throw ValidationError("--batch must be at least 2, got \(batch)") }
            let spec = NetworkSpec(inputSize: inputs, hiddenSizes: try parseHidden(hidden), outputSize: outputs)
            try boundedFlag("--hidden \(hidden) --batch \(batch)") { try SizeLimits.network(spec, batch: batch) }
            if steps < 1 || profiledSteps < 1 || warmupSteps < 0 {
                throw ValidationError("--steps and --profiled-steps must be ≥ 1, --warmup-steps ≥ 0")
            }
            _ = try parseHidden(hidden)
        }

        func run() throws {
            if cold {
                let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
                    "hrtrain-cold-\(UUID().uuidString)")
                setenv("HRTRAIN_CACHE_DIR", dir.appendingPathComponent("hrtrain").path, 1)
                setenv("POCL_CACHE_DIR", dir.appendingPathComponent("pocl").path, 1)
            }
            var options = Benchmark.Options()
            options.spec = NetworkSpec(
                inputSize: inputs, hiddenSizes: try parseHidden(hidden), outputSize: outputs, layerOrder: layout)
            options.profile = profile
            options.batch = batch
            options.steps = steps
            options.warmupSteps = warmupSteps
            options.profiledSteps = profiledSteps
            options.ceilingSize = ceilingSize
            let communicator = try reportingErrors { try distributedOptions.start() }
            defer { communicator.finalize() }
            if communicator.usesMPI {
                return try dataParallel(options, communicator)
            }
            if syncBatchnorm { throw ValidationError("--sync-batchnorm needs MPI (mpirun, srun, or --mpi on)") }
            switch try backendOptions.resolved(deviceRequested: deviceOptions.device != nil) {
            case .cpu:
                let backend = try backendOptions.cpuBackend()
                let report = try reportingErrors { try Benchmark.runCPU(backend: backend, options: options) }
                print(json ? try jsonString(report) : render(report))
            case .reference:
                throw ValidationError("bench runs --backend opencl or cpu (the reference is a checker, not a trainer)")
            case .opencl:
                let report = try reportingErrors { try Benchmark.run(context: deviceOptions.open(), options: options) }
                print(json ? try jsonString(report) : render(report))
            }
        }

        private func render(_ r: Benchmark.CPUReport) -> String {
            let o = r.options
            func f(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", x) }
            let widths = o.spec.hiddenSizes.map(String.init).joined(separator: ",")
            var text = """
                hrtrain bench: \(r.backend)
                CPU \(r.blas.features.summary); BLAS \(r.blas.library.rawValue) \(r.blas.path), \
                kernels '\(r.blas.reportedKernels)'; threads wait: \(r.blas.waitPolicy ?? "libgomp default")
                network \(o.spec.inputSize)→\(widths)→\(o.spec.outputSize) \(o.spec.layerOrder.rawValue), \
                \(o.profile.rawValue) profile, \
                batch \(o.batch), Float32; \(f(Double(r.flopsPerEvent) / 1e6, 2)) MFLOP per event per step

                training   \(leftPad(String(Int(r.training.eventsPerSecond)), 9)) events/s   \
                \(f(r.training.millisecondsPerStep, 2)) ms/step   \
                (\(r.training.steps) steps after \(o.warmupSteps + 1) warm-up)
                inference  \(leftPad(String(Int(r.inference.eventsPerSecond)), 9)) events/s   \
                \(f(r.inference.millisecondsPerStep, 2)) ms/batch  \
                (copy in, scale, forward, read back)


                """
            // With one thread everything runs on the calling thread: its CPU time is each operation's cost
            // without the share of the core that other processes took (a busy shared machine).
            let single = r.threads == 1
            let rows = r.operations.map { k in
                [
                    k.name, f(k.callsPerStep, 0), f(k.millisecondsPerStep, 3), f(100 * k.share) + " %",
                    k.gflops.map { f($0) } ?? "",
                ] + (single ? [k.cpuMillisecondsPerStep.map { f($0, 3) } ?? ""] : [])
            }
            text += table(
                ["operation (per training step, wall time)", "calls", "ms", "of step", "GFLOP/s"]
                    + (single ? ["CPU ms"] : []), rows, rightAligned: single ? [1, 2, 3, 4, 5] : [1, 2, 3, 4])
            if single, let cpu = r.stepCPUMilliseconds {
                text += "\nstep CPU   \(f(cpu, 2)) ms of the calling thread per step (1 thread)"
            }
            text += """


                GEMMs      \(f(r.gemm.millisecondsPerStep, 2)) ms/step in the step, \(f(100 * r.gemm.share)) \
                % of it, \(f(r.gemm.gflops)) GFLOP/s; \
                alone \(f(r.isolatedGEMMMilliseconds, 2)) ms (\(f(r.isolatedGEMMGFLOPs)) GFLOP/s): \
                the step takes \(f(r.stepOverIsolatedGEMMs, 2))× its GEMMs at the BLAS's rate
                ceiling    BLAS SGEMM \(f(r.ceiling.sgemmGFLOPs)) GFLOP/s (best square size: \(r.ceiling.sgemmSize)); \
                the step takes \(f(r.gemm.stepOverGEMMAtCeiling, 2))× its GEMMs at that rate; \
                memory copy \(f(r.ceiling.copyGigabytesPerSecond)) GB/s
                memory     peak host \(formatBytes(r.peakHostBytes))
                """
            return text
        }

        /// Under MPI: data-parallel steps on every rank; rank 0 prints the job's figures.
        private func dataParallel(_ options: Benchmark.Options, _ communicator: Communicator) throws {
            do {
                let context = try deviceOptions.open(for: communicator)
                let r = try DataParallelBenchmark.run(
                    context: context, options: options, communicator: communicator,
                    synchronizeBatchNorm: syncBatchnorm)
                guard communicator.rank == 0 else { return }
                if json { return print(try jsonString(r)) }
                func f(_ x: Double, _ digits: Int = 3) -> String { String(format: "%.\(digits)f", x) }
                print(
                    """
                    hrtrain bench (data-parallel): \(r.ranks) rank\(r.ranks == 1 ? "" : "s") (devices \(
                        r.devices.map(String.init).joined(separator: ","))), \(r.device)
                    global batch \(r.batch) (largest share \(r.largestShare)), batch norm \(
                        r.synchronizedBatchNorm ? "synchronised" : "per rank"), \(r.steps) steps
                    training     \(Int(r.eventsPerSecond)) events/s (all ranks)   \(f(r.millisecondsPerStep, 2)) ms/step
                    all-reduce   \(f(r.allReduceMillisecondsPerStep)) ms/step in MPI_Allreduce (\(f(
                        r.allReducesPerStep, 0)) per step; includes waiting for the slowest rank)
                    gradients    \(f(r.gradientExchangeMillisecondsPerStep)) ms/step device → host → \
                    MPI_Allreduce → device (\(r.gradientFloats) floats, \
                    \(f(Double(r.gradientFloats * 4) / 1e6, 2)) MB)
                    alone        \(f(r.isolatedAllReduceMilliseconds)) ms per all-reduce of the gradients after a \
                    barrier (median of 20)
                    """)
            } catch {
                if communicator.size > 1 { communicator.abort("\(error)") }
                printError("error: \(error)")
                throw ExitCode.failure
            }
        }

        private func render(_ r: Benchmark.Report) -> String {
            let o = r.options
            func f(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", x) }
            var text = """
                hrtrain bench: \(r.device.name) (\(r.device.platform))
                network \
                \(o.spec.inputSize)→\
                \(o.spec.hiddenSizes.map(String.init).joined(separator: ","))→\(o.spec.outputSize) \
                \(o.spec.layerOrder.rawValue), \(o.profile.rawValue) profile, \
                batch \(o.batch), Float32; \
                \(f(Double(r.flopsPerEvent) / 1e6, 2)) MFLOP per event per step

                training   \(leftPad(String(Int(r.training.eventsPerSecond)), 9)) events/s \
                  \(f(r.training.millisecondsPerStep, 2)) ms/step   \
                (\(r.training.steps) steps after \(o.warmupSteps) \
                warm-up)
                inference  \(leftPad(String(Int(r.inference.eventsPerSecond)), 9)) events/s \
                  \(f(r.inference.millisecondsPerStep, 2)) ms/batch  (upload, scale, forward, read back)
                start-up   kernel program \(r.startup.programOrigin) in \(f(r.startup.programSeconds, 2)) s; first \
                step \(f(r.startup.firstStepSeconds, 2)) s (includes CLBlast's kernel build or cache load)
                GEMM parameters: \(r.startup.gemmParameters ?? "?")

                """
            let rows = r.kernels.map { k in
                [
                    k.name, f(k.callsPerStep, 0), f(k.millisecondsPerStep, 3), f(100 * k.share) + " %",
                    k.gflops.map { f($0) } ?? "", k.gigabytesPerSecond.map { f($0) } ?? "",
                ]
            }
            text += table(
                ["kernel (per training step)", "calls", "ms", "of step", "GFLOP/s", "GB/s"], rows,
                rightAligned: [1, 2, 3, 4, 5])
            text +=
                "\n(our kernels: OpenCL profiling events; GEMMs: wall clock per shape, since CLBlast's event covers "
                + "only its last kernel)"
            text += """


                GEMMs      \(f(r.gemm.millisecondsPerStep, 2)) ms/step, \(f(100 * r.gemm.share)) % of the step, \
                \(f(r.gemm.gflops)) GFLOP/s = \(f(100 * r.gemm.fractionOfCeiling)) % of the SGEMM ceiling; the step \
                takes \(f(r.gemm.stepOverGEMMAtCeiling, 2))× its GEMMs at the ceiling rate
                ceilings   SGEMM \(f(r.ceiling.sgemmGFLOPs)) GFLOP/s (best square size: \(r.ceiling.sgemmSize)); \
                device copy \(f(r.ceiling.copyGigabytesPerSecond)) GB/s
                transfers  host→device \(f(r.transfers.hostToDeviceGigabytesPerSecond)) GB/s, device→host \
                \(f(r.transfers.deviceToHostGigabytesPerSecond)) GB/s; one batch upload \
                \(f(r.transfers.batchUploadMilliseconds, 3)) ms
                memory     peak host \(formatBytes(r.memory.peakHostBytes)), peak device \
                \(formatBytes(r.memory.peakDeviceBytes))
                """
            text += "\n" + renderCommands(r.commands)
            return text
        }

        /// The command count of a step, and how one GEMM call of each shape launches.
        private func renderCommands(_ c: Benchmark.Commands) -> String {
            func f(_ x: Double) -> String { String(format: "%.1f", x) }
            let perCall = c.gemmKernelsPerCall.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }
            var line = "commands   \(f(c.perStep)) per training step: \(f(c.hrtrainKernelsPerStep)) hrtrain kernels, "
            line += "\(f(c.gemmKernelsPerStep)) CLBlast kernels for \(c.gemmCallsPerStep) GEMM calls, "
            line += "\(f(c.transfersPerStep)) buffer commands; "
            line += "\(c.synchronisations) host waits in the \(c.epochs) epochs of the timed steps"
            if !c.libraryCommandsCounted {
                line += " (CLBlast's launches NOT counted: the counting wrapper is not interposed in this binary)"
            }
            return line + "\n           kernels per GEMM call: " + perCall.joined(separator: ", ")
        }
    }
}
