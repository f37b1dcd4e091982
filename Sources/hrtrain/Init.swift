import ArgumentParser
import Foundation
import HRTrain

extension HRTrainCommand {
    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "init",
            abstract: "Write an untrained model: the initial weights from a seed, for `hrtrain train --init-from`.",
            discussion: """
                The weights are the ones `hrtrain train` draws from the same --seed, --profile, --hidden and \
                --layout (dense layers per the profile's initialiser, γ = 1, β = 0, running mean 0, running \
                variance 1), so a run can be reproduced, or the same starting point loaded into another \
                framework. The feature scaler is the identity (mean 0, scale 1) unless --scaler-from fits a \
                StandardScaler on a data file's rows. The features default to the 38 columns of the generated \
                sample. The file is written atomically.
                """)

        @Option(help: "Where to write the model (safetensors).") var out: String
        @Option(
            help: ArgumentHelp(
                "Feature columns, comma separated, or @FILE with one name per line (default: the 38 generated-sample "
                    + "features).")
        ) var features: String?
        @Option(help: "Number of input features, named f0, f1, … (instead of --features).") var inputs: Int?
        @Option(help: "Target columns, comma separated.") var targets = "truth_hr_x,truth_hr_y"
        @Option(help: "Hidden layer sizes, comma separated.") var hidden = "256,256,256"
        @Option(help: "Layer order: dense-tanh-bn or dense-bn-tanh.") var layout: LayerOrder = .denseTanhBatchNorm
        @Option(help: "Numerics profile: keras or pytorch.") var profile: NumericsProfile = .keras
        @Option(help: "Seed of the weight initialisation (the default of `hrtrain train`).") var seed: UInt64 =
            TrainingOptions().seed
        @Option(
            help: "Fit the feature scaler on every row of this file (.csv, .h5/.hdf5 or .npy) instead of the identity.")
        var scalerFrom: String?
        @Flag(help: "With --scaler-from: drop rows with NaN or ±Inf (and report how many) instead of failing.")
        var dropNonfinite = false

        func validate() throws {
            _ = try parseHidden(hidden)
            if features != nil && inputs != nil {
                throw ValidationError("give either --features or --inputs, not both")
            }
            if let inputs, inputs < 1 { throw ValidationError("--inputs must be at least 1, got \(inputs)") }
            if parseList(targets).isEmpty { throw ValidationError("--targets must name at least one column") }
            if dropNonfinite && scalerFrom == nil {
                throw ValidationError("--drop-nonfinite only applies with --scaler-from")
            }
            _ = try columnNames()
        }

        /// The feature and target names the options select, checked for repeats and overlap.
        private func columnNames() throws -> (features: [String], targets: [String]) {
            let featureNames =
                try features.map(parseColumnList) ?? inputs.map { n in (0..<n).map { "f\($0)" } }
                ?? EventGenerator.featureNames
            let targetNames = parseList(targets)
            if featureNames.isEmpty { throw ValidationError("--features names no column") }
            for (names, option) in [(featureNames, "--features"), (targetNames, "--targets")] {
                if let duplicate = Dictionary(grouping: names, by: { $0 }).first(where: { $0.value.count > 1 })?.key {
                    throw ValidationError("\(option): the column \"\(duplicate)\" is named twice")
                }
            }
            if let clash = featureNames.first(where: targetNames.contains) {
                throw ValidationError("the column \"\(clash)\" is both a feature and a target")
            }
            return (featureNames, targetNames)
        }

        func run() throws {
            try reportingErrors { try write() }
        }

        private func write() throws {
            let log = Log(quiet: false, verbose: false)
            let outURL = URL(fileURLWithPath: out)
            try requireWritableDirectory(of: outURL, option: "--out")
            let (featureNames, targetNames) = try columnNames()
            let spec = NetworkSpec(
                inputSize: featureNames.count, hiddenSizes: try parseHidden(hidden), outputSize: targetNames.count,
                layerOrder: layout)
            var scaler = StandardScaler(
                mean: Array(repeating: 0, count: spec.inputSize), scale: Array(repeating: 1, count: spec.inputSize))
            if let scalerFrom {
                let read = try readTableWithReport(
                    URL(fileURLWithPath: scalerFrom),
                    options: ReadOptions(dropNonFinite: dropNonfinite, columns: featureNames, field: .scalerData))
                warnDroppedRows(read.droppedRowCount, from: scalerFrom, log: log)
                scaler = StandardScaler.fit(read.table.values, columns: spec.inputSize, rows: 0..<read.table.rowCount)
                for c in scaler.constantColumns {
                    log.warn("feature \"\(featureNames[c])\" is constant in \(scalerFrom): its scale is set to 1")
                }
            }
            let initial = Network<ReferenceBackend>.initialValues(spec: spec, profile: profile, seed: seed)
            let model = Model(
                metadata: ModelMetadata(
                    spec: spec, profile: profile, featureNames: featureNames, targetNames: targetNames,
                    initialization: .seed(seed, profile: profile)),
                parameters: initial.parameters.map(Float.init),
                runningStatistics: initial.runningStatistics.map(Float.init),
                featureScaler: scaler, targetScaler: nil)
            try model.write(to: outURL)
            log.result(
                "untrained model written to \(out): \(spec.inputSize) inputs, hidden "
                    + "\(spec.hiddenSizes.map(String.init).joined(separator: ",")) \(layout.rawValue), "
                    + "\(spec.outputSize) outputs, \(ParameterLayout(spec).parameterCount) parameters "
                    + "(\(profile.rawValue) initialisation, seed "
                    + "\(seed)\(scalerFrom.map { ", scaler fitted on \($0)" } ?? ", identity scaler"))"
            )
        }
    }
}
