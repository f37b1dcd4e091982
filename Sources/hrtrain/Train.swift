import ArgumentParser
import Foundation
import HRTrain

extension HRTrainCommand {
    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Train the recoil regression network on a sample (CSV, HDF5 or .npy).",
            discussion: """
                Keras-fit semantics: the last --validation-split of the (non-test) rows are the validation rows, taken \
                before any shuffling; the StandardScaler is fitted on the non-test rows; every epoch shuffles the \
                training rows with a permutation from (--seed, epoch); the last partial batch is used (a single \
                leftover row joins the batch before it). A checkpoint is written atomically after every epoch; \
                --resume continues from one and ends with bitwise the same weights as an uninterrupted run.
                """)

        @OptionGroup var deviceOptions: DeviceOptions
        @Option(help: "Training sample: .csv, .h5/.hdf5 or .npy.") var data: String
        @Option(help: "Where to write the trained model (safetensors).") var model: String
        @Option(help: "Write one JSON line per epoch here.") var metrics: String?
        @Option(
            help:
                "Feature columns, comma separated, or @FILE with one name per line (default: every column but the targets)."
        ) var features: String?
        @Option(help: "Target columns, comma separated.") var targets = "truth_hr_x,truth_hr_y"
        @Option(help: "A separate test sample (evaluated after training).") var testFile: String?
        @Option(
            help: ArgumentHelp(
                "Hold out the last fraction of the rows as a test set: a decimal (0.2), a ratio (1349234/3625136) or 'thesis' (the thesis' 1,349,234 of 3,625,136). round(rows × fraction) rows, computed exactly (halves up).",
                valueName: "fraction")) var testFraction: TestFraction?
        @Option(
            help: "Fraction of the training rows used for validation (the last ones, Keras semantics; default 0.2).")
        var validationSplit: Double?
        @Option(help: "Epochs (the total, also when resuming; default 10).") var epochs: Int?
        @Option(help: "Rows per step (default 4000).") var batchSize: Int?
        @Option(help: "Adam learning rate (default 1e-3).") var learningRate: Double?
        @Option(help: "Numerics profile: keras (default) or pytorch.") var profile: NumericsProfile?
        @Option(help: "Layer order: dense-tanh-bn (default) or dense-bn-tanh.") var layout: LayerOrder?
        @Option(help: "Hidden layer sizes, comma separated (default 256,256,256).") var hidden: String?
        @Option(help: "Seed of the weight initialisation and the shuffles (default 1).") var seed: UInt64?
        @Flag(inversion: .prefixedNo, help: "Shuffle the training rows every epoch.") var shuffle = true
        @Option(help: "Early stopping: epochs without improvement of val_loss before stopping (off unless given).")
        var patience: Int?
        @Option(help: "Early stopping: the smallest change that counts as an improvement.") var minDelta: Double = 0
        @Flag(help: "Early stopping: put back the best epoch's weights when it stops.") var restoreBest = false
        @Option(help: "Reduce the learning rate after this many epochs without improvement (off unless given).")
        var reduceLrPatience: Int?
        @Option(help: "Factor of the learning-rate reduction.") var reduceLrFactor: Double = 0.1
        @Option(help: "Smallest improvement for the learning-rate schedule.") var reduceLrMinDelta: Double = 1e-4
        @Option(help: "Lower bound of the learning rate.") var minLearningRate: Double = 0
        @Flag(help: "Standardise the targets too (inverted on prediction).") var scaleTargets = false
        @Option(help: "A data column of per-event loss weights (finite, > 0; not a feature): the weighted MSE.")
        var weights: String?
        @Option(
            help: ArgumentHelp(
                "Weight events so that the |target| spectrum is flat in these bin edges (GeV, e.g. 0,10,20,30,50,100,200): weights (N/K/N_k)^α, capped, mean 1 over the training rows.",
                valueName: "edges")) var flattenTargetMagnitude: String?
        @Option(help: "The power α of the flattening weights: 1 flattens fully, 0.5 half-way.") var flattenPower = 1.0
        @Option(help: "The cap on a flattening bin's weight (N/K/N_k)^α, before the normalisation to mean 1.")
        var flattenMaxWeight = TargetMagnitudeFlattening.defaultMaximumWeight
        @Option(
            help: ArgumentHelp(
                "Residual learning: one feature column per target (e.g. hr_all_x,hr_all_y); the network learns target − baseline and predictions add it back.",
                valueName: "x,y")) var baseline: String?
        @Flag(help: "Drop rows with NaN or ±Inf (and report how many) instead of failing.") var dropNonfinite = false
        @Option(help: "Checkpoint file (default: MODEL.checkpoint).") var checkpoint: String?
        @Option(help: "Continue from this checkpoint.") var resume: String?
        @Option(help: "Start from the weights of this model file (from `hrtrain init`).") var initFrom: String?
        @Option(
            help: ArgumentHelp(
                "Keep at most this many bytes of training data on the device; more is streamed in chunks (default: what the device allows).",
                visibility: .hidden)) var maxDeviceMemory: Int?
        @Flag(name: .shortAndLong, help: "Only errors and the final summary.") var quiet = false
        @Flag(name: .shortAndLong, help: "More detail: data, device, memory.") var verbose = false

        func validate() throws {
            if let epochs, epochs < 1 { throw ValidationError("--epochs must be at least 1, got \(epochs)") }
            if let batchSize, batchSize < 2 {
                throw ValidationError(
                    "--batch-size must be at least 2 (batch normalisation needs two rows), got \(batchSize)")
            }
            if let learningRate, !(learningRate > 0 && learningRate.isFinite) {
                throw ValidationError("--learning-rate must be positive, got \(learningRate)")
            }
            if let v = validationSplit, !(0..<1).contains(v) {
                throw ValidationError("--validation-split must be in [0, 1), got \(v)")
            }
            if let t = testFraction?.value, !(0..<1).contains(t) {
                throw ValidationError("--test-fraction must be in [0, 1), got \(t)")
            }
            if flattenTargetMagnitude == nil
                && (flattenPower != 1 || flattenMaxWeight != TargetMagnitudeFlattening.defaultMaximumWeight)
            {
                throw ValidationError("--flatten-power and --flatten-max-weight need --flatten-target-magnitude")
            }
            if !(flattenPower.isFinite && flattenPower >= 0) {
                throw ValidationError("--flatten-power must be a finite number ≥ 0, got \(flattenPower)")
            }
            if !(flattenMaxWeight.isFinite && flattenMaxWeight >= 1) {
                throw ValidationError("--flatten-max-weight must be a finite number ≥ 1, got \(flattenMaxWeight)")
            }
            if let flattenTargetMagnitude {
                do { _ = try parseBinEdges(flattenTargetMagnitude, option: "--flatten-target-magnitude") } catch {
                    throw ValidationError("--flatten-target-magnitude: \((error as? DataError)?.message ?? "\(error)")")
                }
            }
            if let baseline, parseList(baseline).isEmpty {
                throw ValidationError("--baseline needs column names such as hr_all_x,hr_all_y, got '\(baseline)'")
            }
            if testFile != nil && testFraction != nil {
                throw ValidationError("give either --test-file or --test-fraction, not both")
            }
            if let patience, patience < 0 { throw ValidationError("--patience must be ≥ 0") }
            if let p = reduceLrPatience, p < 1 { throw ValidationError("--reduce-lr-patience must be ≥ 1") }
            if !(reduceLrFactor > 0 && reduceLrFactor < 1) {
                throw ValidationError("--reduce-lr-factor must be in (0, 1), got \(reduceLrFactor)")
            }
            if let hidden { _ = try parseHidden(hidden) }
            if resume != nil && initFrom != nil {
                throw ValidationError("give either --resume or --init-from, not both")
            }
            if quiet && verbose { throw ValidationError("--quiet and --verbose exclude each other") }
        }

        func run() throws {
            try reportingErrors { try train() }
        }

        private func train() throws {
            let log = Log(quiet: quiet, verbose: verbose)
            let modelURL = URL(fileURLWithPath: model)
            let checkpointURL = URL(fileURLWithPath: checkpoint ?? model + ".checkpoint")
            try requireWritableDirectory(of: modelURL, option: "--model")
            if let metrics { try requireWritableDirectory(of: URL(fileURLWithPath: metrics), option: "--metrics") }

            // Options: from the checkpoint when resuming, else from the flags.
            let resumed = try resume.map { try Checkpoint.read(from: URL(fileURLWithPath: $0)) }
            var options = resumed?.metadata.options ?? TrainingOptions()
            if resumed == nil {
                options.spec.layerOrder = layout ?? options.spec.layerOrder
                options.spec.hiddenSizes = try hidden.map(parseHidden) ?? options.spec.hiddenSizes
                options.profile = profile ?? options.profile
                options.batchSize = batchSize ?? options.batchSize
                options.learningRate = learningRate ?? options.learningRate
                options.seed = seed ?? options.seed
                options.shuffle = shuffle
                options.validationSplit = validationSplit ?? options.validationSplit
                options.testFraction = testFraction?.value ?? 0
                options.scaleTargets = scaleTargets
                options.weightColumn = weights
                options.flattening = try flattenTargetMagnitude.map {
                    FlatteningRequest(
                        edges: try parseBinEdges($0, option: "--flatten-target-magnitude"), power: flattenPower,
                        maximumWeight: flattenMaxWeight)
                }
                options.baseline = baseline.map(parseList)
                if let patience {
                    options.earlyStopping = EarlyStopping(
                        patience: patience, minDelta: minDelta, restoreBestWeights: restoreBest)
                }
                if let p = reduceLrPatience {
                    options.reduceLearningRate = ReduceLearningRateOnPlateau(
                        factor: reduceLrFactor, patience: p, minDelta: reduceLrMinDelta, minimum: minLearningRate)
                }
            } else if [
                layout == nil, hidden == nil, profile == nil, batchSize == nil, learningRate == nil, seed == nil,
            ].contains(false) {
                log.warn(
                    "--resume: the architecture and optimiser settings come from the checkpoint; the ones given on the command line are ignored"
                )
            }
            options.epochs = epochs ?? (resumed?.metadata.options.epochs ?? options.epochs)

            // Data.
            let start = DispatchTime.now()
            let featureList = try resumed.map { $0.model.metadata.featureNames } ?? features.map(parseColumnList)
            let targetList = resumed?.model.metadata.targetNames ?? parseList(targets)
            let read = try readTableWithReport(
                URL(fileURLWithPath: data), options: ReadOptions(dropNonFinite: dropNonfinite, option: "--data"))
            if read.droppedRowCount > 0 {
                log.warn(
                    "--drop-nonfinite: dropped \(read.droppedRowCount) row\(read.droppedRowCount == 1 ? "" : "s") with NaN or Inf from \(data)"
                )
            }
            let testTable = try testFile.map {
                try readTableWithReport(
                    URL(fileURLWithPath: $0), options: ReadOptions(dropNonFinite: dropNonfinite, option: "--test-file")
                ).table
            }
            var prepared = try PreparedData.prepare(
                table: read.table, file: data, features: featureList, targets: targetList, testTable: testTable,
                testFile: testFile,
                testFraction: options.testFraction, validationSplit: options.validationSplit,
                scaleTargets: options.scaleTargets, batchSize: options.batchSize, weightColumn: options.weightColumn,
                flattening: options.flattening, baseline: options.baseline)
            for w in prepared.warnings { log.warn(w) }
            log.detail(
                "read \(read.table.rowCount) rows × \(read.table.columnCount) columns from \(data) in \(String(format: "%.2f", elapsed(since: start))) s: \(prepared.train.rows) training, \(prepared.validation.rows) validation, \(prepared.test?.rows ?? 0) test rows"
            )
            options.spec.inputSize = prepared.featureNames.count
            options.spec.outputSize = prepared.targetNames.count

            // Network and device.
            let context = try deviceOptions.open()
            let backend = OpenCLBackend(context: context)
            log.detail(
                "device: \(context.device.name) (\(context.device.platform)); kernel program \(context.programBuild.origin) in \(String(format: "%.2f", context.programBuild.seconds)) s"
            )
            let network: Network<OpenCLBackend>
            var state: TrainerState? = nil
            var best: (parameters: [Double], running: [Double])? = nil
            if let resumed {
                guard resumed.metadata.trainingRows == prepared.train.rows,
                    resumed.metadata.validationRows == prepared.validation.rows
                else {
                    throw CommandError(
                        "--resume: the checkpoint was written for \(resumed.metadata.trainingRows) training and \(resumed.metadata.validationRows) validation rows, but \(data) gives \(prepared.train.rows) and \(prepared.validation.rows): use the same data and split"
                    )
                }
                prepared.featureScaler = resumed.model.featureScaler
                prepared.targetScaler = resumed.model.targetScaler
                network = try resumed.model.network(on: backend)
                try network.restore(
                    parameters: resumed.model.parameters.map(Double.init),
                    firstMoment: resumed.firstMoment.map(Double.init),
                    secondMoment: resumed.secondMoment.map(Double.init),
                    runningStatistics: resumed.model.runningStatistics.map(Double.init), step: resumed.metadata.adamStep
                )
                state = resumed.metadata.state
                best = resumed.best.map { ($0.parameters.map(Double.init), $0.running.map(Double.init)) }
                log.info("resuming after epoch \(resumed.metadata.state.epoch) of \(options.epochs) from \(resume!)")
            } else if let initFrom {
                let initial = try Model.read(from: URL(fileURLWithPath: initFrom))
                guard initial.metadata.featureNames == prepared.featureNames,
                    initial.metadata.targetNames == prepared.targetNames
                else {
                    throw CommandError(
                        "--init-from \(initFrom): the model's features/targets (\(initial.metadata.featureNames.count)/\(initial.metadata.targetNames.count) columns) are not the ones selected from \(data)"
                    )
                }
                options.spec = initial.metadata.spec
                options.profile = initial.metadata.profile
                network = try initial.network(on: backend)
            } else {
                let initial = Network<OpenCLBackend>.initialValues(
                    spec: options.spec, profile: options.profile, seed: options.seed)
                network = try Network(
                    backend: backend, spec: options.spec, profile: options.profile, parameters: initial.parameters,
                    runningStatistics: initial.runningStatistics)
            }
            let residentLimit =
                maxDeviceMemory ?? min(context.device.maxAllocationBytes, context.device.globalMemoryBytes / 2)
            let trainer = try Trainer(
                backend: backend, options: options, network: network,
                train: (prepared.train.features, prepared.train.targets, prepared.train.rows),
                validation: (prepared.validation.features, prepared.validation.targets, prepared.validation.rows),
                featureScaler: prepared.featureScaler, targetScaler: prepared.targetScaler,
                residentLimitBytes: residentLimit, state: state, best: best, trainingWeights: prepared.train.weights,
                validationWeights: prepared.validation.weights)
            log.detail(
                trainer.trainingSetIsResident
                    ? "training set resident on the device"
                    : "training set streamed in chunks (it exceeds \(formatBytes(residentLimit)) of device memory)")
            let progress = ProgressPrinter(
                log: log, epochs: options.epochs, batchSize: options.batchSize, rows: prepared.train.rows)
            progress.trainer = { try trainer.latestLoss() }
            trainer.observer = progress
            log.info(
                "training \(options.spec.hiddenSizes.map(String.init).joined(separator: ",")) \(options.spec.layerOrder.rawValue) (\(options.profile.rawValue) profile) on \(prepared.train.rows) events, batch \(options.batchSize), \(context.device.name)"
            )

            var metadata = ModelMetadata(
                spec: options.spec, profile: options.profile, featureNames: prepared.featureNames,
                targetNames: prepared.targetNames, training: options, dataFile: data, device: context.device.name)
            metadata.baseline = prepared.baseline
            func currentModel(epochs: Int) throws -> Model {
                metadata.epochsTrained = epochs
                return Model(
                    metadata: metadata, parameters: try backend.context.download(network.parameters),
                    runningStatistics: try backend.context.download(network.runningStatistics),
                    featureScaler: prepared.featureScaler, targetScaler: prepared.targetScaler)
            }
            try trainer.run { trainer in
                let s = trainer.state
                let ckpt = Checkpoint(
                    metadata: .init(
                        model: metadata, options: options, state: s, adamStep: network.step,
                        trainingRows: prepared.train.rows, validationRows: prepared.validation.rows,
                        nextShuffleSeed: Trainer<OpenCLBackend>.shuffleSeed(seed: options.seed, epoch: s.epoch + 1)),
                    model: try currentModel(epochs: s.epoch),
                    firstMoment: try backend.context.download(network.firstMoment),
                    secondMoment: try backend.context.download(network.secondMoment),
                    best: try trainer.bestWeights().map { ($0.parameters.map(Float.init), $0.running.map(Float.init)) })
                try ckpt.write(to: checkpointURL)
                if let metrics { try writeMetrics(s.history, to: URL(fileURLWithPath: metrics)) }
                if ProcessInfo.processInfo.environment["HRTRAIN_TEST_EXIT_AFTER_EPOCH"].flatMap(Int.init) == s.epoch {
                    Foundation.exit(75)  // a real interruption, for the resume test: the process ends here, mid-run
                }
            }
            let final = try currentModel(epochs: trainer.state.epoch)
            try final.write(to: modelURL)
            if trainer.state.stopped {
                log.info(
                    "early stopping after epoch \(trainer.state.epoch) (best val_loss \(trainer.state.best.map { String(format: "%.6g", $0) } ?? "-") at epoch \(trainer.state.bestEpoch ?? 0)\(options.earlyStopping?.restoreBestWeights == true ? ", restored" : ""))"
                )
            }
            if let test = prepared.test {
                let predictions = try final.predict(test.features, rows: test.rows, on: backend)
                let mse =
                    zip(predictions, test.targets).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
                    / Double(max(predictions.count, 1))
                log.result("test loss (MSE, \(test.rows) events): \(String(format: "%.6g", mse))")
            }
            log.result("model written to \(model) (checkpoint: \(checkpointURL.path))")
        }
    }
}

/// `--test-fraction`: a decimal, a ratio `a/b`, or `thesis` (1,349,234 / 3,625,136).
struct TestFraction: ExpressibleByArgument {
    /// The fraction.
    var value: Double

    init?(argument: String) {
        let text = argument.trimmingCharacters(in: .whitespaces)
        if text == "thesis" {
            value = Double(EventGenerator.thesisTestCount) / Double(EventGenerator.thesisEventCount)
        } else if let slash = text.firstIndex(of: "/") {
            guard let a = Double(text[..<slash]), let b = Double(text[text.index(after: slash)...]), b > 0 else {
                return nil
            }
            value = a / b
        } else {
            guard let v = Double(text) else { return nil }
            value = v
        }
    }
}

/// Rewrites the metrics file atomically: one JSON object per line and epoch.
func writeMetrics(_ history: [EpochRecord], to url: URL) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let text =
        try history.map { String(decoding: try encoder.encode($0), as: UTF8.self) }.joined(separator: "\n") + "\n"
    try AtomicFile.write(to: url) { try $0.write(text) }
}

/// Fails early, before any work, when `url`'s folder does not exist or cannot be written.
func requireWritableDirectory(of url: URL, option: String) throws {
    let dir = url.deletingLastPathComponent().path
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDirectory), isDirectory.boolValue else {
        throw CommandError("\(option) \(url.path): the folder \(dir) does not exist")
    }
    guard FileManager.default.isWritableFile(atPath: dir) else {
        throw CommandError("\(option) \(url.path): the folder \(dir) is not writable")
    }
}

/// `a,b,c` → ["a", "b", "c"].
func parseList(_ text: String) -> [String] {
    text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
}

/// A column list: `a,b,c`, or `@FILE` with one name per line (blank lines and `#` comments ignored).
func parseColumnList(_ text: String) throws -> [String] {
    guard text.hasPrefix("@") else { return parseList(text) }
    let path = String(text.dropFirst())
    guard let contents = try? String(contentsOfFile: path, encoding: .utf8) else {
        throw CommandError("--features \(text): cannot read \(path)")
    }
    return contents.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter {
        !$0.isEmpty && !$0.hasPrefix("#")
    }
}
