import ArgumentParser
import Foundation
import HRTrain

extension HRTrainCommand {
    struct Tune: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Search CLBlast's GEMM parameters for the training shapes on this device and keep the best.",
            discussion: """
                Times every GEMM of a training step (forward x·W, backward xᵀ·dy and dy·Wᵀ; the validation \
                passes use the forward shapes) with CLBlast's default parameters, then tries kernel parameter sets \
                through CLBlastOverrideParameters — first the indirect Xgemm kernel on every shape, then the \
                direct one — and picks the best kernel for each part of the step and the size threshold between \
                them. Each candidate costs a kernel compilation, so the search stops after --budget seconds. The \
                result is kept only if it is faster than CLBlast's defaults and than hrtrain's built-in parameters \
                as a run uses them (on PoCL: calls that would need more than one helper kernel routed to the direct \
                kernel); it runs CLBlast's size rule alone, so a step may enqueue more commands (bench counts them). \
                It is stored in the cache folder ($HRTRAIN_CACHE_DIR, $XDG_CACHE_HOME/hrtrain or ~/.cache/hrtrain) \
                and used by every later hrtrain run on this device; delete the file to go back to the defaults.
                """)

        @OptionGroup var deviceOptions: DeviceOptions
        @Option(help: "Rows per step.") var batch = 4000
        @Option(help: "Hidden layer sizes, comma separated.") var hidden = "256,256,256"
        @Option(help: "Input features.") var inputs = 38
        @Option(help: "Outputs.") var outputs = 2
        @Option(help: "Search time in seconds (each candidate compiles CLBlast's kernel).") var budget: Double = 300
        @Flag(help: "Print JSON instead of tables.") var json = false

        func validate() throws {
            if batch < 2 { throw ValidationError("--batch must be at least 2, got \(batch)") }
            let spec = NetworkSpec(inputSize: inputs, hiddenSizes: try parseHidden(hidden), outputSize: outputs)
            try boundedFlag("--hidden \(hidden) --batch \(batch)") { try SizeLimits.network(spec, batch: batch) }
            if !(budget > 0) { throw ValidationError("--budget must be positive") }
            _ = try parseHidden(hidden)
        }

        func run() throws {
            let spec = NetworkSpec(inputSize: inputs, hiddenSizes: try parseHidden(hidden), outputSize: outputs)
            let report = try reportingErrors { () -> GEMMTuning.Report in
                let context = try ComputeContext(
                    deviceIndex: deviceOptions.device?.index(forLocalRank: 0), tunedGEMM: false)
                return try GEMMTuning.tune(context: context, spec: spec, batch: batch, budget: budget) { line in
                    if !json { printError(line) }
                }
            }
            if json {
                print(try jsonString(report))
                return
            }
            func f(_ x: Double) -> String { String(format: "%.1f", x) }
            let rows = report.shapes.map {
                [
                    $0.shape, "\($0.callsPerStep)", f($0.defaultGFLOPs), f($0.tunedGFLOPs),
                    String(format: "%.2f×", $0.tunedGFLOPs / $0.defaultGFLOPs), $0.kernel,
                ]
            }
            print(
                "hrtrain tune: \(report.device), batch \(batch), \(report.candidatesTried) candidates "
                    + "(\(report.candidatesFailed) failed) in \(Int(report.seconds)) s\n"
            )
            print(
                table(
                    ["GEMM shape (m×n×k)", "calls/step", "default GFLOP/s", "tuned GFLOP/s", "speed-up", "kernel"],
                    rows, rightAligned: [1, 2, 3, 4]))
            print(
                String(
                    format: "\nGEMMs of one training step: %.1f ms with CLBlast's defaults, %.1f ms tuned (%.2f×)",
                    report.defaultSeconds * 1e3, report.tunedSeconds * 1e3, report.defaultSeconds / report.tunedSeconds)
            )
            if let builtIn = report.builtInSeconds {
                print(
                    String(
                        format: "with hrtrain's built-in parameters (what runs without a stored tune): %.1f ms",
                        builtIn * 1e3))
            }
            print("parameters: \(report.parameters.summary)")
            print(
                report.storedAt.map { "stored in \($0); every hrtrain run on this device uses them" }
                    ?? "not stored: no better than CLBlast's defaults or hrtrain's built-in parameters")
        }
    }
}
