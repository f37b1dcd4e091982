import ArgumentParser
import Foundation
import HRTrain

/// The file formats `hrtrain export` writes.
enum ExportFormat: String, ExpressibleByArgument, CaseIterable {
    /// ONNX (ONNX Runtime, TMVA SOFIE, …).
    case onnx
}

extension ONNXBatchNormForm: ExpressibleByArgument {}

extension HRTrainCommand {
    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a model as ONNX, computing what `hrtrain predict` computes.",
            discussion: """
                The ONNX graph (IR version 8, opset 17) takes one input "features" [N, F] float32 — the raw \
                feature columns in the model's order — and gives one output "recoil" [N, outputs] float32. It \
                holds the feature scaler, the hidden blocks (batch normalisation in inference mode, folded into \
                the Gemm weights or, with --batch-norm nodes, as BatchNormalization nodes), the output layer, \
                the inverse target scaler, the raw baseline columns added back (models trained with \
                --baseline: Gather, Add) and the response calibration û / R(|û|) (models from `hrtrain \
                calibrate`; R linear in ln|û| between the knots, constant beyond them, as Max/Min against the \
                knots and a MatMul with the slopes; --no-calibration leaves it out, as `hrtrain predict \
                --no-calibration` does). The feature and target names, the baseline, the calibration's knots, \
                the profile and hrtrain's version are in metadata_props and doc_string. A model holding anything \
                the exporter cannot reproduce is refused. The file is written atomically.
                """)

        @Option(help: "The model file (safetensors, from `hrtrain train` or `hrtrain init`).") var model: String
        @Option(help: "The output format.") var format: ExportFormat = .onnx
        @Option(help: "Where to write the exported model (e.g. model.onnx).") var output: String
        @Option(help: "Batch normalisation folded into the Gemm weights, or as BatchNormalization nodes.")
        var batchNorm: ONNXBatchNormForm = .folded
        @Flag(help: "Leave the model's response calibration (`hrtrain calibrate`) out of the graph, if it has one.")
        var noCalibration = false
        @Flag(name: .shortAndLong, help: "No summary line.") var quiet = false

        func run() throws {
            try reportingErrors { try export() }
        }

        private func export() throws {
            let outputURL = URL(fileURLWithPath: output)
            try requireWritableDirectory(of: outputURL, option: "--output")
            let summary = try ONNXExport.export(
                modelFile: URL(fileURLWithPath: model), to: outputURL, batchNorm: batchNorm, calibrated: !noCalibration)
            var counts: [String: Int] = [:]
            var order: [String] = []
            for op in summary.operators {
                if counts[op] == nil { order.append(op) }
                counts[op, default: 0] += 1
            }
            let operators = order.map { counts[$0]! == 1 ? $0 : "\(counts[$0]!)×\($0)" }.joined(separator: ", ")
            let form =
                summary.batchNorm == .folded ? "folded into the Gemm weights" : "as BatchNormalization nodes"
            var steps = ""
            if let baseline = summary.baseline { steps += ", baseline \(baseline.joined(separator: ",")) added" }
            if let knots = summary.calibrationKnots { steps += ", response calibration (\(knots) knots) applied" }
            if summary.calibrationLeftOut { steps += ", response calibration left out (--no-calibration)" }
            if !quiet {
                print(
                    "exported \(model) to \(output): ONNX IR \(summary.irVersion), opset \(summary.opsetVersion), "
                        + "\(summary.operators.count) nodes (\(operators)), batch norm \(form)\(steps), "
                        + "\(summary.byteCount) bytes"
                )
            }
        }
    }
}
