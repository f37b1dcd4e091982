import ArgumentParser
import Foundation
import HRTrain

extension HRTrainCommand {
    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check the device numerics against the Double reference, tensor by tensor.",
            discussion: """
                Draws random weights and a batch from --seed, runs one full training step (forward, loss, backward, \
                Adam, running-statistics update) on the OpenCL device and on the Double CPU reference, and compares \
                every layer output, the loss, every parameter gradient, the running statistics and the parameters \
                after the step (relative L2 error against a per-kind limit). Also checks the reference's analytic \
                gradients against central finite differences, and a few steps' loss trajectory. Exits non-zero on \
                any FAIL.
                """)

        @OptionGroup var deviceOptions: DeviceOptions
        @OptionGroup var backendOptions: BackendOptions
        @Option(help: "Rows in the batch.") var batch = 4000
        @Option(help: "Random seed (weights and batch).") var seed: UInt64 = 20_190_417
        @Option(help: "Numerics profile: keras or pytorch.") var profile: NumericsProfile = .keras
        @Option(help: "Layer order: dense-tanh-bn or dense-bn-tanh.") var layout: LayerOrder = .denseTanhBatchNorm
        @Option(help: "Input features.") var inputs = 38
        @Option(help: "Hidden layer sizes, comma separated.") var hidden = "256,256,256"
        @Option(help: "Outputs.") var outputs = 2
        @Option(name: .customLong("fd-probes"), help: "Finite-difference probes.") var probes = 24
        @Option(help: "Steps of the loss-trajectory comparison.") var steps = 5
        @Flag(help: "Print JSON instead of a table.") var json = false

        func validate() throws {
            if batch < 2 {
                throw ValidationError("--batch must be at least 2 (batch normalisation needs two rows), got \(batch)")
            }
            _ = try parseHidden(hidden)
            if inputs < 1 || outputs < 1 { throw ValidationError("--inputs and --outputs must be positive") }
            if probes < 0 { throw ValidationError("--fd-probes must be ≥ 0, got \(probes)") }
            if steps < 0 { throw ValidationError("--steps must be ≥ 0, got \(steps)") }
            if steps > 1_000_000 || probes > 1_000_000 {
                throw ValidationError("--steps and --fd-probes must be at most 1000000, got \(steps) and \(probes)")
            }
            let spec = NetworkSpec(
                inputSize: inputs, hiddenSizes: try parseHidden(hidden), outputSize: outputs, layerOrder: layout)
            try boundedFlag("--hidden \(hidden) --batch \(batch)") {
                try SizeLimits.requireReferenceNetwork(spec, batch: batch)
            }
        }

        func run() throws {
            var options = Verification.Options()
            options.batch = batch
            options.seed = seed
            options.profile = profile
            options.spec = NetworkSpec(
                inputSize: inputs, hiddenSizes: try parseHidden(hidden), outputSize: outputs, layerOrder: layout)
            options.finiteDifferenceProbes = probes
            options.trajectorySteps = steps
            let report: Verification.Report
            switch try backendOptions.resolved(deviceRequested: deviceOptions.device != nil) {
            case .cpu:
                let backend = try backendOptions.cpuBackend()
                report = try reportingErrors { try Verification.run(device: backend, options: options) }
            case .reference:
                report = try reportingErrors { try Verification.run(device: ReferenceBackend(), options: options) }
            case .opencl:
                report = try reportingErrors { () -> Verification.Report in
                    let context = try deviceOptions.open()
                    try SizeLimits.requireNetwork(options.spec, batch: batch, on: context.device)
                    return try Verification.run(
                        device: OpenCLBackend(context: context), options: options, program: context.programBuild)
                }
            }
            if json { print(try jsonString(report)) } else { print(render(report)) }
            if !report.passed { throw ExitCode.failure }
        }

        private func render(_ r: Verification.Report) -> String {
            let o = r.options
            var text = """
                hrtrain verify: one training step, \(r.device) (Float32) vs reference (Double)
                seed \(o.seed) · batch \(o.batch) × \(o.spec.inputSize) · hidden \
                \(o.spec.hiddenSizes.map(String.init).joined(separator: ",")) · outputs \(o.spec.outputSize) · \
                layout \
                \(o.spec.layerOrder.rawValue) · profile \(o.profile.rawValue)
                """
            if let p = r.program { text += "\nkernel program: \(p.origin) in \(String(format: "%.2f", p.seconds)) s" }
            if let b = r.blas {
                text +=
                    "\nBLAS: \(b.library.rawValue) at \(b.path); CPU \(b.features.summary); kernels selected "
                    + "'\(b.requestedKernels)', library reports '\(b.reportedKernels)': "
                    + (b.kernelsMatch ? "PASS" : "FAIL")
            }
            func rows(_ list: [TensorComparison]) -> [[String]] {
                list.map { c in
                    [
                        c.name + (c.note == nil ? "" : " *"), c.shape.map(String.init).joined(separator: "×"),
                        sci(c.error) + (c.absolute ? " (abs)" : ""), sci(c.maxAbsoluteError), sci(c.limit),
                        c.nonFinite ? "FAIL (NaN/Inf)" : c.passed ? "PASS" : "FAIL",
                    ]
                }
            }
            text +=
                "\n\n"
                + table(
                    ["tensor", "shape", "rel.err", "max.abs.err", "limit", "result"], rows(r.tensors + r.trajectory),
                    rightAligned: [2, 3, 4])
            let notes = Set((r.tensors + r.trajectory).compactMap(\.note)).sorted()
            for note in notes { text += "\n* " + note }
            if !r.finiteDifferences.isEmpty {
                text +=
                    "\n\nfinite differences of the reference loss (Double, h = 1e-5, first ≤ 256 rows) vs its "
                    + "analytic gradients: "
                let failed = r.finiteDifferences.filter { !$0.passed }
                let worst = r.finiteDifferences.map(\.margin).max() ?? 0
                text +=
                    "\(r.finiteDifferences.count - failed.count)/\(r.finiteDifferences.count) PASS, worst margin "
                    + "\(String(format: "%.3f", worst)) (≤ 1 passes)"
                for f in failed {
                    text += "\n  FAIL \(f.tensor)[\(f.index)]: analytic \(f.analytic), numeric \(f.numeric)"
                }
            }
            let failures =
                (r.tensors + r.trajectory).filter { !$0.passed }.count + r.finiteDifferences.filter { !$0.passed }.count
                + (r.blas.map { $0.kernelsMatch ? 0 : 1 } ?? 0)
            text +=
                "\n\n"
                + (r.passed
                    ? "PASS: all \(r.tensors.count + r.trajectory.count) tensors and \(r.finiteDifferences.count) "
                        + "probes within limits"
                    : "FAIL: \(failures) check\(failures == 1 ? "" : "s") out of limits")
                + String(format: " (%.1f s)", r.seconds)
            return text
        }
    }
}

/// `1.23e-05` style.
func sci(_ x: Double) -> String { x.isFinite ? String(format: "%.2e", x) : "\(x)" }

extension NumericsProfile: ExpressibleByArgument {}
extension LayerOrder: ExpressibleByArgument {}
