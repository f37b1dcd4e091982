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
                --resume continues from one and ends with bitwise the same weights as an uninterrupted run (on the \
                cpu and opencl backends; checkpoints hold Float32, so the reference backend's Double state resumes \
                rounded).

                SIGINT (Ctrl-C) or SIGTERM during training: the current step is finished, a checkpoint is written at \
                that step (mid-epoch), the command that resumes is printed, and hrtrain exits with status 130 \
                (SIGINT) or 143 (SIGTERM); the model file is not written. A second signal stops at once (status \
                128 + signal; files are only ever replaced atomically). Runs of several MPI ranks keep the default \
                action: the checkpoint of the last completed epoch resumes them.
                """)

        @OptionGroup var deviceOptions: DeviceOptions
        @OptionGroup var distributedOptions: DistributedOptions
        @Flag(
            help: ArgumentHelp(
                "Under MPI: batch norm with the statistics of the whole batch across ranks "
                    + "(default: each rank's share)."))
        var syncBatchnorm = false
        @OptionGroup var backendOptions: BackendOptions
        @Option(help: "Training sample: .csv, .h5/.hdf5 or .npy.") var data: String
        @Option(help: "Where to write the trained model (safetensors).") var model: String
        @Option(help: "Write one JSON line per epoch here.") var metrics: String?
        @Option(
            help: ArgumentHelp(
                "Feature columns, comma separated, or @FILE with one name per line "
                    + "(default: every column but the targets).")) var features: String?
        @Option(help: "Target columns, comma separated.") var targets = "truth_hr_x,truth_hr_y"
        @Option(help: "A separate test sample (evaluated after training).") var testFile: String?
        @Option(
            help: ArgumentHelp(
                "Hold out the last fraction of the rows as a test set: a decimal (0.2), a ratio (1349234/3625136) "
                    + "or 'thesis' (the thesis' 1,349,234 of 3,625,136); round(rows × fraction) rows, computed "
                    + "exactly (halves up).", valueName: "fraction")) var testFraction: TestFraction?
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
        @Option(help: "Early stopping: the smallest change that counts as an improvement.")
        var minDelta = EarlyStopping().minDelta
        @Flag(help: "Early stopping: put back the best epoch's weights when it stops.") var restoreBest = false
        @Option(help: "Reduce the learning rate after this many epochs without improvement (off unless given).")
        var reduceLrPatience: Int?
        @Option(help: "Factor of the learning-rate reduction.")
        var reduceLrFactor = ReduceLearningRateOnPlateau().factor
        @Option(help: "Smallest improvement for the learning-rate schedule.")
        var reduceLrMinDelta = ReduceLearningRateOnPlateau().minDelta
        @Option(help: "Lower bound of the learning rate.") var minLearningRate = ReduceLearningRateOnPlateau().minimum
        @Flag(help: "Standardise the targets too (inverted on prediction).") var scaleTargets = false
        @Option(help: "A data column of per-event loss weights (finite, > 0; not a feature): the weighted MSE.")
        var weights: String?
        @Option(
            help: ArgumentHelp(
                "Weight events so that the |target| spectrum is flat in these bin edges (GeV, e.g. "
                    + "0,10,20,30,50,100,200): weights (N/K/N_k)^α, capped, mean 1 over the training rows.",
                valueName: "edges")) var flattenTargetMagnitude: String?
        @Option(help: "The power α of the flattening weights: 1 flattens fully, 0.5 half-way.") var flattenPower = 1.0
        @Option(help: "The cap on a flattening bin's weight (N/K/N_k)^α, before the normalisation to mean 1.")
        var flattenMaxWeight = TargetMagnitudeFlattening.defaultMaximumWeight
        @Option(
            help: ArgumentHelp(
                "Residual learning: one feature column per target (e.g. hr_all_x,hr_all_y); the network learns "
                    + "target − baseline and predictions add it back.", valueName: "x,y")) var baseline: String?
        @Flag(help: "Drop rows with NaN or ±Inf (and report how many) instead of failing.") var dropNonfinite = false
        @Option(help: "Checkpoint file, written after every epoch and on SIGINT/SIGTERM (default: MODEL.checkpoint).")
        var checkpoint: String?
        @Option(help: "Continue from this checkpoint.") var resume: String?
        @Option(help: "Start from the weights of this model file (from `hrtrain init`).") var initFrom: String?
        @Option(
            help: ArgumentHelp(
                "Keep at most this many bytes of training data on the device; more is streamed in chunks "
                    + "(default: what the device allows).",
                visibility: .hidden)) var maxDeviceMemory: Int?
        @OptionGroup var verbosity: VerbosityOptions

        /// The training settings given on the command line that a resumed run takes from its checkpoint instead.
        var ignoredWhenResuming: [String] {
            let plateau = ReduceLearningRateOnPlateau()
            let given: [(String, Bool)] = [
                ("--layout", layout != nil), ("--hidden", hidden != nil), ("--profile", profile != nil),
                ("--batch-size", batchSize != nil), ("--learning-rate", learningRate != nil), ("--seed", seed != nil),
                ("--validation-split", validationSplit != nil), ("--test-fraction", testFraction != nil),
                ("--no-shuffle", !shuffle), ("--patience", patience != nil),
                ("--min-delta", minDelta != EarlyStopping().minDelta),
                ("--restore-best", restoreBest), ("--reduce-lr-patience", reduceLrPatience != nil),
                ("--reduce-lr-factor", reduceLrFactor != plateau.factor),
                ("--reduce-lr-min-delta", reduceLrMinDelta != plateau.minDelta),
                ("--min-learning-rate", minLearningRate != plateau.minimum), ("--scale-targets", scaleTargets),
                ("--weights", weights != nil), ("--flatten-target-magnitude", flattenTargetMagnitude != nil),
                ("--baseline", baseline != nil),
            ]
            return given.filter(\.1).map(\.0)
        }

        /// A resumed run's `--epochs` (the total) must at least finish the epoch the checkpoint stopped in: fewer
        /// would write a model whose weights belong to no epoch count. Equal to the epochs done, nothing is trained
        /// and the model is written from the checkpoint.
        static func checkResumedEpochs(_ state: TrainerState, total: Int, file: String) throws {
            let needed = state.partialEpoch?.epoch ?? state.epoch
            guard total >= needed else {
                let place =
                    state.partialEpoch.map { "stopped in epoch \($0.epoch) (after \(state.epoch) done)" }
                    ?? "has \(state.epoch) epochs done"
                throw ValidationError(
                    "--epochs \(total): the checkpoint \(file) \(place); --epochs is the total of the run, "
                        + "give at least \(needed)")
            }
        }

        func validate() throws {
            if testFile != nil && testFraction != nil {
                throw ValidationError("give either --test-file or --test-fraction, not both")
            }
            if resume != nil && initFrom != nil {
                throw ValidationError("give either --resume or --init-from, not both")
            }
            if flattenTargetMagnitude == nil
                && (flattenPower != 1 || flattenMaxWeight != TargetMagnitudeFlattening.defaultMaximumWeight)
            {
                throw ValidationError("--flatten-power and --flatten-max-weight need --flatten-target-magnitude")
            }
            if let flattenTargetMagnitude {
                do { _ = try parseBinEdges(flattenTargetMagnitude) } catch let error as DataError {
                    throw ValidationError("--flatten-target-magnitude: \(error.message)")
                }
            }
            do { try flagOptions(initialModel: nil).validate() } catch let error as TrainingOptionsError {
                throw ValidationError(error.flagMessage)
            }
        }

        func run() throws {
            let communicator = try reportingErrors { try distributedOptions.start() }
            defer { communicator.finalize() }
            try reportingErrors(on: communicator) { try train(communicator) }
        }

        /// The training options the flags give (the defaults where a flag is absent; the initial model's
        /// architecture where `--hidden`, `--layout` or `--profile` is absent and there is one).
        private func flagOptions(initialModel: Model?) throws -> TrainingOptions {
            var options = TrainingOptions()
            let spec = initialModel?.metadata.spec ?? options.spec
            options.spec.layerOrder = layout ?? spec.layerOrder
            options.spec.hiddenSizes = try hidden.map(parseHidden) ?? spec.hiddenSizes
            options.profile = profile ?? initialModel?.metadata.profile ?? options.profile
            options.epochs = epochs ?? options.epochs
            options.batchSize = batchSize ?? options.batchSize
            options.learningRate = learningRate ?? options.learningRate
            options.seed = seed ?? options.seed
            options.shuffle = shuffle
            options.validationSplit = validationSplit ?? options.validationSplit
            options.testFraction = testFraction?.value ?? 0
            options.scaleTargets = scaleTargets
            options.weightColumn = weights
            options.flattening = flattenTargetMagnitude.flatMap { try? parseBinEdges($0) }.map {
                FlatteningRequest(edges: $0, power: flattenPower, maximumWeight: flattenMaxWeight)
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
            return options
        }

        private func train(_ communicator: Communicator) throws {
            let leader = communicator.rank == 0  // writes the checkpoints, the metrics and the model, and prints
            var log = verbosity.log
            if !leader { log = Log(quiet: true, verbose: false, muted: true) }
            // Outputs against inputs and each other. The checkpoint may be the one --resume continues from (it
            // is read first, then replaced atomically), so it is planned without --resume, and --resume with the
            // other outputs.
            for includeCheckpoint in [false, true] {
                try checkOutputs { plan in
                    plan.input(data, option: "--data")
                    if let testFile { plan.input(testFile, option: "--test-file") }
                    if let initFrom { plan.input(initFrom, option: "--init-from") }
                    if let features, features.hasPrefix("@") {
                        plan.input(String(features.dropFirst()), option: "--features")
                    }
                    plan.plainOutput(model, option: "--model")
                    if let metrics { plan.plainOutput(metrics, option: "--metrics") }
                    if includeCheckpoint {
                        plan.plainOutput(checkpoint ?? model + ".checkpoint", option: "--checkpoint")
                    } else if let resume {
                        plan.input(resume, option: "--resume")
                    }
                }
            }

            // Options: from the checkpoint when resuming (all but --epochs), else from the flags.
            let resumed = try resume.map { path in
                do { return try Checkpoint.read(from: URL(fileURLWithPath: path)) } catch var error as DataError {
                    error.field = error.field ?? .checkpoint
                    throw error
                }
            }
            let initial = try initFrom.map { try Model.read(from: URL(fileURLWithPath: $0), field: .initialModel) }
            var options = try resumed?.metadata.options ?? flagOptions(initialModel: initial)
            options.epochs = epochs ?? options.epochs
            try options.validate()  // options read back from a checkpoint are checked as flags are
            if let resumed, let resume {
                try Self.checkResumedEpochs(resumed.metadata.state, total: options.epochs, file: resume)
                let ignored = ignoredWhenResuming
                if !ignored.isEmpty {
                    log.warn(
                        "--resume: every setting but --epochs comes from the checkpoint; "
                            + ignored.joined(separator: ", ") + " given on the command line "
                            + (ignored.count == 1 ? "is" : "are") + " ignored")
                }
            }

            if syncBatchnorm && !communicator.usesMPI {
                throw CommandError(
                    "--sync-batchnorm needs MPI: start with mpirun or srun (or add --mpi on for a single rank)")
            }
            if resumed == nil && (communicator.size > 1 || syncBatchnorm) {
                options.ranks = communicator.size
                options.synchronizedBatchNorm = syncBatchnorm
            } else if let resumed, syncBatchnorm, resumed.metadata.options.synchronizedBatchNorm != true {
                log.warn("--resume: --sync-batchnorm comes from the checkpoint, which was written without it")
            }

            // Data: one process reads the whole file; each rank of a data-parallel job only its own rows (rank 0
            // the test rows too, so the collectives meanwhile wait longer for it).
            let start = DispatchTime.now()
            let sample = try communicator.whileReadingData {
                try readSample(communicator, options: options, resumed: resumed, log: log)
            }
            let prepared = sample.prepared
            for warning in prepared.warnings { log.warn(warning) }
            if options.batchSize > prepared.totalTrainingRows {
                log.warn(
                    "--batch-size \(options.batchSize) is larger than the \(prepared.totalTrainingRows) training rows: "
                        + "each epoch is one batch of \(prepared.totalTrainingRows) rows")
            }
            log.detail(
                "read \(sample.description) from \(data) in "
                    + "\(String(format: "%.2f", elapsed(since: start))) s: \(prepared.totalTrainingRows) training, "
                    + "\(prepared.totalValidationRows) validation, \(prepared.test?.rows ?? 0) test rows")

            // Backend and session.
            let fingerprint = sample.fingerprint
            switch try backendOptions.resolved(deviceRequested: deviceOptions.device != nil) {
            case .cpu:
                let backend = try backendOptions.cpuBackend()
                log.detail("backend: \(backend.name)")
                try run(
                    on: backend, device: backend.name, residentLimit: maxDeviceMemory ?? .max, prepared: prepared,
                    options: options, resumed: resumed, initial: initial, log: log, communicator: communicator,
                    fingerprint: fingerprint)
            case .reference:
                try run(
                    on: ReferenceBackend(), device: "reference (Double)", residentLimit: maxDeviceMemory ?? .max,
                    prepared: prepared, options: options, resumed: resumed, initial: initial, log: log,
                    communicator: communicator, fingerprint: fingerprint)
            case .opencl:
                let context = try deviceOptions.open(for: communicator)
                var fullSpec = options.spec
                fullSpec.inputSize = prepared.featureNames.count
                fullSpec.outputSize = prepared.targetNames.count
                try SizeLimits.requireNetwork(
                    fullSpec, batch: min(options.batchSize, prepared.totalTrainingRows), on: context.device)
                log.detail(
                    "device: \(context.device.name) (\(context.device.platform)); kernel program "
                        + "\(context.programBuild.origin) in \(String(format: "%.2f", context.programBuild.seconds)) s")
                try run(
                    on: OpenCLBackend(context: context), device: context.device.name,
                    residentLimit: maxDeviceMemory
                        ?? min(context.device.maxAllocationBytes, context.device.globalMemoryBytes / 2),
                    prepared: prepared, options: options, resumed: resumed, initial: initial, log: log,
                    communicator: communicator, fingerprint: fingerprint)
            }
        }

        /// Reads and prepares the sample. One process: the whole file (`PreparedData.prepare`). Several ranks:
        /// each reads only its part of the training and validation rows (rank 0 also the test rows) — HDF5
        /// hyperslabs and `.npy` offsets — and the scalers and the flattening are fitted over all ranks' rows
        /// (`PreparedData.prepareShard`); CSV, and any file with --drop-nonfinite (which rows remain depends on
        /// all of them), is read whole by every rank, which then keeps only its part.
        private func readSample(_ communicator: Communicator, options: TrainingOptions, resumed: Checkpoint?, log: Log)
            throws -> (prepared: PreparedData, fingerprint: DataFingerprint, description: String)
        {
            let url = URL(fileURLWithPath: data)
            let featureNames = try resumed?.model.metadata.featureNames ?? self.features.map(parseColumnList)
            let targetNames = resumed?.model.metadata.targetNames ?? parseList(self.targets)
            let scalers = resumed.map { ($0.model.featureScaler, $0.model.targetScaler) }
            func readTest(_ file: String) throws -> Table {
                let test = try readTableWithReport(
                    URL(fileURLWithPath: file), options: ReadOptions(dropNonFinite: dropNonfinite, field: .testFile))
                warnDroppedRows(test.droppedRowCount, from: file, log: log)
                return test.table
            }
            guard communicator.size > 1 else {
                let read = try readTableWithReport(
                    url, options: ReadOptions(dropNonFinite: dropNonfinite, field: .data))
                warnDroppedRows(read.droppedRowCount, from: data, log: log)
                let prepared = try PreparedData.prepare(
                    table: read.table, file: data, features: featureNames, targets: targetNames,
                    testTable: try testFile.map(readTest), testFile: testFile, testFraction: options.testFraction,
                    validationSplit: options.validationSplit, scaleTargets: options.scaleTargets, scalers: scalers,
                    weightColumn: options.weightColumn, flattening: options.flattening, baseline: options.baseline)
                return (
                    prepared, DataFingerprint(read.table),
                    "\(read.table.rowCount) rows × \(read.table.columnCount) columns"
                )
            }
            let rankLocal = try TableFormat(url: url, field: .data).readsRowRanges && !dropNonfinite
            let readOptions = ReadOptions(dropNonFinite: dropNonfinite, field: .data)
            var whole: Table?
            let totalRows: Int
            if rankLocal {
                totalRows = try readTableRows(url, rows: [], options: readOptions).totalRows
            } else {
                let read = try readTableWithReport(url, options: readOptions)
                warnDroppedRows(read.droppedRowCount, from: data, log: log)
                whole = read.table
                totalRows = read.table.rowCount
            }
            var part: Table?
            let prepared = try PreparedData.prepareShard(
                totalRows: totalRows, file: data, rank: communicator.rank, ranks: communicator.size,
                reduce: { try communicator.allReduceSum(&$0) },
                readRows: { ranges in
                    let rows = try whole?.rows(ranges) ?? readTableRows(url, rows: ranges, options: readOptions).table
                    part = rows
                    return rows
                },
                features: featureNames, targets: targetNames,
                testTable: communicator.rank == 0 ? try testFile.map(readTest) : nil, separateTest: testFile != nil,
                testFile: testFile, testFraction: options.testFraction, validationSplit: options.validationSplit,
                scaleTargets: options.scaleTargets, scalers: scalers, weightColumn: options.weightColumn,
                flattening: options.flattening, baseline: options.baseline)
            guard let part else { throw CommandError("no rows were read from \(data)") }
            let fingerprint = try DataFingerprint.ofParts(part, totalRows: totalRows, communicator: communicator)
            let how = rankLocal ? "only its rows" : "the whole file (CSV or --drop-nonfinite)"
            return (
                prepared, fingerprint,
                "\(part.rowCount) of the \(totalRows) rows × \(part.columnCount) columns on rank 0, which read \(how)"
            )
        }

        /// Trains on `backend` (`device` names it in the model's metadata and the log).
        private func run<B: Backend>(
            on backend: B, device: String, residentLimit: Int, prepared: PreparedData, options flagged: TrainingOptions,
            resumed: Checkpoint?, initial: Model?, log: Log, communicator: Communicator, fingerprint: DataFingerprint
        ) throws {
            var options = flagged
            let leader = communicator.rank == 0
            let modelURL = URL(fileURLWithPath: model)
            let startingPoint: TrainingSession<B>.Start =
                resumed.map { .resume($0, file: resume) } ?? initial.map { .initFrom($0, file: initFrom) }
                ?? .fresh(seed: options.seed)
            let checkpointURL = URL(fileURLWithPath: checkpoint ?? model + ".checkpoint")
            let distributed = communicator.size > 1 || (resumed?.metadata.options ?? options).ranks != nil
            let parallel =
                distributed
                ? DataParallel(
                    communicator: communicator,
                    synchronizeBatchNorm: (resumed?.metadata.options ?? options).synchronizedBatchNorm == true) : nil
            let session = try TrainingSession(
                backend: backend, data: prepared, options: options, start: startingPoint,
                settings: .init(
                    checkpoint: leader ? checkpointURL : nil,
                    metrics: leader ? metrics.map { URL(fileURLWithPath: $0) } : nil,
                    residentLimitBytes: residentLimit, dataFile: data, testFile: testFile,
                    device: device, dataFingerprint: fingerprint),
                dataParallel: parallel)
            options = session.options
            if let resumed, let partial = resumed.metadata.state.partialEpoch {
                log.info(
                    "resuming epoch \(partial.epoch) of \(options.epochs) after its step \(partial.steps) from "
                        + resume!
                )
            } else if let resumed {
                log.info("resuming after epoch \(resumed.metadata.state.epoch) of \(options.epochs) from \(resume!)")
            }
            log.detail(
                session.trainingSetIsResident
                    ? "training set resident on the device"
                    : "training set streamed in chunks (it exceeds \(formatBytes(residentLimit)) of device memory)")
            let progress = ProgressPrinter(
                log: log, epochs: options.epochs, batchSize: options.batchSize, rows: prepared.totalTrainingRows)
            progress.trainer = { try session.trainer.latestLoss() }
            if leader { session.observer = progress }
            if let ranks = options.ranks {
                log.info(
                    "data-parallel over \(ranks) MPI rank\(ranks == 1 ? "" : "s"): each trains on its share of every "
                        + "batch of \(options.batchSize); batch norm "
                        + (options.synchronizedBatchNorm == true ? "synchronised across ranks" : "per rank"))
            }
            // SIGINT/SIGTERM (one process only: the ranks of an MPI job would stop at different steps): from here
            // on the first one stops the run after the current step, and the session writes the checkpoint there;
            // the model is not written. Installed before the line below, so a signal sent once it appears is
            // always handled this way.
            let interruptible = communicator.size == 1
            if interruptible { Interruption.install() }
            defer { if interruptible { Interruption.uninstall() } }
            let hiddenSizes = options.spec.hiddenSizes.map(String.init).joined(separator: ",")
            log.info(
                "training \(hiddenSizes) \(options.spec.layerOrder.rawValue) (\(options.profile.rawValue) profile) "
                    + "on \(prepared.totalTrainingRows) events, batch \(options.batchSize), \(device)")

            if interruptible {
                session.afterStep = { _, _, _ in Interruption.received == nil ? .proceed : .stop }
                let afterEpoch = session.afterEpoch
                let epochs = options.epochs
                session.afterEpoch = { record, state in
                    // After the last epoch the run ends anyway (the test rows are evaluated, the model written).
                    if Interruption.received != nil && state.epoch < epochs && !state.stopped { return .stop }
                    return try afterEpoch?(record, state) ?? .proceed
                }
            }
            let result = try session.run()
            if let signal = Interruption.received, interruptible, result.stoppedByCallback {
                let state = result.state
                let position =
                    state.partialEpoch.map {
                        "during epoch \($0.epoch) of \(options.epochs), after its step \($0.steps)"
                    }
                    ?? "after epoch \(state.epoch) of \(options.epochs)"
                printError(
                    "hrtrain: interrupted by \(Interruption.name(signal)) \(position); checkpoint written to "
                        + "\(checkpointURL.path) (the model \(model) was not written). To resume:\n  "
                        + Interruption.resumeCommand(checkpoint: checkpointURL.path))
                throw ExitCode(128 + signal)
            }
            if let parallel, parallel.reducedSteps > 0 {
                log.detail(
                    String(
                        format: "gradient exchange: %.3f ms per step (device → host, MPI_Allreduce, host → device)",
                        1e3 * parallel.gradientReductionSeconds / Double(parallel.reducedSteps)))
            }
            guard leader else { return }
            try result.model.write(to: modelURL)
            let state = result.state
            if state.stopped {
                let best = state.best.map { String(format: "%.6g", $0) } ?? "-"
                let restored = options.earlyStopping?.restoreBestWeights == true ? ", restored" : ""
                log.info(
                    "early stopping after epoch \(state.epoch) (best val_loss \(best) at epoch "
                        + "\(state.bestEpoch ?? 0)\(restored))")
            }
            if let test = result.test, let network = test.estimates.first {
                log.result("test loss (MSE, \(test.events) events): \(String(format: "%.6g", network.loss))")
            }
            log.result("model written to \(model) (checkpoint: \(checkpointURL.path))")
            if let signal = Interruption.received, interruptible {
                printError(
                    "hrtrain: \(Interruption.name(signal)) arrived after the last step: training had finished and the "
                        + "model was written")
                throw ExitCode(128 + signal)
            }
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
