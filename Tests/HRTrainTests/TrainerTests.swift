import XCTest

@testable import HRTrain

/// The training loop and the training session: splits and batches, Keras callback semantics, streaming vs
/// resident data, checkpoints and resume in process on both backends, and the bitwise resume after the
/// process is killed.
final class TrainerTests: XCTestCase {
    func testBatchSizesUseThePartialBatchAndFoldASingleRow() {
        XCTAssertEqual(batchSizes(rows: 10, batchSize: 4, training: true), [4, 4, 2])
        XCTAssertEqual(batchSizes(rows: 9, batchSize: 4, training: true), [4, 5])
        XCTAssertEqual(batchSizes(rows: 9, batchSize: 4, training: false), [4, 4, 1])
        XCTAssertEqual(batchSizes(rows: 8, batchSize: 4, training: true), [4, 4])
        XCTAssertEqual(batchSizes(rows: 3, batchSize: 4000, training: true), [3])
    }

    func testPermutationDependsOnlyOnSeedAndEpoch() {
        let a = Trainer<ReferenceBackend>.permutation(rows: 1000, seed: 7, epoch: 3)
        XCTAssertEqual(a, Trainer<ReferenceBackend>.permutation(rows: 1000, seed: 7, epoch: 3))
        XCTAssertNotEqual(a, Trainer<ReferenceBackend>.permutation(rows: 1000, seed: 7, epoch: 4))
        XCTAssertNotEqual(a, Trainer<ReferenceBackend>.permutation(rows: 1000, seed: 8, epoch: 3))
        XCTAssertEqual(a.sorted(), (0..<1000).map(Int32.init))
    }

    func testEarlyStoppingFollowsKeras() {
        var options = TrainingOptions()
        options.earlyStopping = EarlyStopping(patience: 2, minDelta: 0.01)
        var state = TrainerState(learningRate: 1e-3)
        var stoppedAt: Int?
        for (i, loss) in [1.0, 0.9, 0.895, 0.92, 0.5].enumerated() {
            state.epoch = i + 1
            _ = state.applyCallbacks(monitor: loss, options: options)
            if state.stopped {
                stoppedAt = state.epoch
                break
            }
        }
        // 0.895 is not better than 0.9 by 0.01 (wait 1), 0.92 neither (wait 2 ≥ patience): stop at epoch 4.
        XCTAssertEqual(stoppedAt, 4)
        XCTAssertEqual(state.bestEpoch, 2)
        XCTAssertEqual(state.best, 0.9)

        options.earlyStopping = EarlyStopping()  // Keras defaults: patience 0 stops at the first non-improvement
        state = TrainerState(learningRate: 1e-3)
        for (i, loss) in [1.0, 1.0].enumerated() {
            state.epoch = i + 1
            _ = state.applyCallbacks(monitor: loss, options: options)
        }
        XCTAssertTrue(state.stopped)
    }

    func testReduceLearningRateOnPlateauFollowsKeras() {
        var options = TrainingOptions()
        options.reduceLearningRate = ReduceLearningRateOnPlateau(
            factor: 0.5, patience: 2, minDelta: 1e-4, minimum: 2e-4)
        var state = TrainerState(learningRate: 1e-3)
        var rates: [Double] = []
        for (i, loss) in [1.0, 1.0, 1.0, 0.99995, 1.0, 1.0, 1.0, 1.0].enumerated() {
            state.epoch = i + 1
            _ = state.applyCallbacks(monitor: loss, options: options)
            rates.append(state.learningRate)
        }
        XCTAssertEqual(rates, [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 2e-4, 2e-4])
    }

    /// A small regression sample: 6 features, 2 targets that depend non-linearly on them.
    static func sample(rows: Int, seed: UInt64) -> Table {
        var rng = SplitMix64(seed: seed)
        var values: [Float] = []
        for _ in 0..<rows {
            let x = (0..<6).map { _ in rng.normal() }
            values += x.map(Float.init)
            values.append(Float(3 * sin(x[0]) + x[1] * x[2]))
            values.append(Float(x[3] * x[3] - x[4] + 0.1 * rng.normal()))
        }
        return Table(
            columnNames: ["a", "b", "c", "d", "e", "f", "truth_hr_x", "truth_hr_y"], rowCount: rows, values: values)
    }

    func testStreamingGivesBitwiseTheResultsOfTheResidentSet() throws {
        let device = try SharedDevice.backend()
        let data = try PreparedData.prepare(
            table: Self.sample(rows: 777, seed: 1), file: "sample", features: nil,
            targets: ["truth_hr_x", "truth_hr_y"], validationSplit: 0.2, scaleTargets: true)
        var options = TrainingOptions()
        options.spec = NetworkSpec(inputSize: 6, hiddenSizes: [16, 16], outputSize: 2)
        options.batchSize = 64
        options.epochs = 2
        func train(limit: Int) throws -> ([Float], [EpochRecord], Bool) {
            let initial = Network<OpenCLBackend>.initialValues(spec: options.spec, profile: options.profile, seed: 3)
            let net = try Network(
                backend: device, spec: options.spec, profile: options.profile, parameters: initial.parameters,
                runningStatistics: initial.runningStatistics)
            let trainer = try Trainer(
                backend: device, options: options, network: net,
                train: (data.train.features, data.train.targets, data.train.rows),
                validation: (data.validation.features, data.validation.targets, data.validation.rows),
                featureScaler: data.featureScaler, targetScaler: data.targetScaler, residentLimitBytes: limit)
            let history = try trainer.run()
            let weights = try net.weights()
            return (weights.parameters + weights.runningStatistics, history, trainer.trainingSetIsResident)
        }
        let resident = try train(limit: 1 << 30)
        let streamed = try train(limit: 0)
        XCTAssertTrue(resident.2)
        XCTAssertFalse(streamed.2)
        XCTAssertEqual(resident.0.map(\.bitPattern), streamed.0.map(\.bitPattern))
        XCTAssertEqual(resident.1.map(\.trainLoss), streamed.1.map(\.trainLoss))
        XCTAssertEqual(resident.1.map(\.validationLoss), streamed.1.map(\.validationLoss))
        XCTAssertLessThan(resident.1.last!.trainLoss, resident.1.first!.trainLoss, "the loss falls")
    }

    func testValidationLossIsTheInferenceModeMSEOfTheValidationRows() throws {
        let device = try SharedDevice.backend()
        let data = try PreparedData.prepare(
            table: Self.sample(rows: 500, seed: 2), file: "sample", features: nil,
            targets: ["truth_hr_x", "truth_hr_y"], validationSplit: 0.3, scaleTargets: false)
        var options = TrainingOptions()
        options.spec = NetworkSpec(inputSize: 6, hiddenSizes: [8], outputSize: 2)
        options.batchSize = 50
        options.epochs = 1
        let initial = Network<OpenCLBackend>.initialValues(spec: options.spec, profile: .keras, seed: 1)
        let net = try Network(
            backend: device, spec: options.spec, profile: .keras, parameters: initial.parameters,
            runningStatistics: initial.runningStatistics)
        let trainer = try Trainer(
            backend: device, options: options, network: net,
            train: (data.train.features, data.train.targets, data.train.rows),
            validation: (data.validation.features, data.validation.targets, data.validation.rows),
            featureScaler: data.featureScaler, targetScaler: nil, residentLimitBytes: 1 << 30)
        let record = try trainer.run().last!
        let model = Model(
            metadata: ModelMetadata(
                spec: options.spec, profile: .keras, featureNames: data.featureNames, targetNames: data.targetNames),
            parameters: try net.weights().parameters,
            runningStatistics: try net.weights().runningStatistics, featureScaler: data.featureScaler,
            targetScaler: nil)
        let predictions = try model.predict(
            data.validation.features, rows: data.validation.rows, on: ReferenceBackend())
        let mse =
            zip(predictions, data.validation.targets).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
            / Double(predictions.count)
        XCTAssertEqual(record.validationLoss!, mse, accuracy: 1e-5 * mse)
    }

    /// The options of the resume tests: early stopping with restore and a learning-rate schedule, so that
    /// every part of the trainer's state has to survive the checkpoint.
    static func resumeOptions(epochs: Int) -> TrainingOptions {
        var options = TrainingOptions()
        options.spec = NetworkSpec(inputSize: 6, hiddenSizes: [8, 8], outputSize: 2)
        options.batchSize = 32
        options.epochs = epochs
        options.seed = 11
        options.earlyStopping = EarlyStopping(patience: 3, restoreBestWeights: true)
        options.reduceLearningRate = ReduceLearningRateOnPlateau(patience: 1)
        return options
    }

    /// In process on `backend`: a session stopped by its `afterEpoch` callback after epoch 2 leaves a
    /// checkpoint (and metrics) holding exactly the network's Float32 state; a session resumed from that file
    /// ends where the uninterrupted run ends — bitwise on a Float32 backend, and within Float32 rounding on the
    /// Double reference (its checkpoint rounds the state to Float32 once).
    func checkResumeInProcess<B: Backend>(on backend: B, bitwise: Bool) throws {
        let dir = try temporaryDirectory(self)
        let data = try PreparedData.prepare(
            table: Self.sample(rows: 300, seed: 5), file: "sample", features: nil,
            targets: ["truth_hr_x", "truth_hr_y"], testFraction: 0.1, validationSplit: 0.2, scaleTargets: true)
        let options = Self.resumeOptions(epochs: 4)
        let straight = try TrainingSession(backend: backend, data: data, options: options, start: .fresh(seed: 11))
            .run()
        XCTAssertFalse(straight.stoppedByCallback)
        XCTAssertEqual(straight.state.epoch, 4)
        XCTAssertEqual(straight.test?.events, 30)

        let checkpointURL = dir.appendingPathComponent("run.checkpoint")
        let metricsURL = dir.appendingPathComponent("metrics.jsonl")
        let first = try TrainingSession(
            backend: backend, data: data, options: options, start: .fresh(seed: 11),
            settings: .init(checkpoint: checkpointURL, metrics: metricsURL))
        var seen: [Int] = []
        first.afterEpoch = { record, state in
            seen.append(record.epoch)
            return state.epoch == 2 ? .stop : .proceed
        }
        let stopped = try first.run()
        XCTAssertTrue(stopped.stoppedByCallback)
        XCTAssertEqual(seen, [1, 2])
        XCTAssertNil(stopped.test, "a stopped run is not evaluated")
        XCTAssertEqual(try readMetrics(from: metricsURL).map(\.epoch), [1, 2])
        let checkpoint = try Checkpoint.read(from: checkpointURL)
        XCTAssertEqual(checkpoint.metadata.state.epoch, 2)
        XCTAssertEqual(checkpoint.metadata.state.history, stopped.state.history)
        XCTAssertEqual(checkpoint.metadata.adamStep, first.network.step)
        XCTAssertEqual(checkpoint.model.parameters, try first.network.weights().parameters)
        XCTAssertEqual(checkpoint.model.runningStatistics, try first.network.weights().runningStatistics)
        XCTAssertEqual(checkpoint.firstMoment, try first.network.adamMoments().first)
        XCTAssertEqual(checkpoint.secondMoment, try first.network.adamMoments().second)
        XCTAssertEqual(checkpoint.model.featureScaler, data.featureScaler)
        XCTAssertNotNil(checkpoint.best, "restoreBestWeights keeps the best weights in the checkpoint")
        XCTAssertEqual(
            stopped.state.history.map(\.trainLoss), Array(straight.state.history.prefix(2).map(\.trainLoss)),
            "the first two epochs are the uninterrupted run's")

        // Resuming must not depend on the scaler of the data it is given: the checkpoint's is used.
        var other = data
        other.featureScaler = StandardScaler(
            mean: Array(repeating: 0, count: 6), scale: Array(repeating: 1, count: 6))
        let resumedSession = try TrainingSession(
            backend: backend, data: other, options: options, start: .resume(checkpoint, file: checkpointURL.path))
        XCTAssertEqual(resumedSession.data.featureScaler, data.featureScaler)
        let resumed = try resumedSession.run()
        XCTAssertEqual(resumed.state.epoch, 4)
        XCTAssertEqual(resumed.model.metadata.epochsTrained, 4)
        XCTAssertEqual(resumed.state.history.map(\.epoch), [1, 2, 3, 4])
        XCTAssertEqual(resumed.state.learningRate, straight.state.learningRate)
        if bitwise {
            XCTAssertEqual(resumed.model.parameters.map(\.bitPattern), straight.model.parameters.map(\.bitPattern))
            XCTAssertEqual(
                resumed.model.runningStatistics.map(\.bitPattern),
                straight.model.runningStatistics.map(\.bitPattern))
            XCTAssertEqual(resumed.test?.estimates.first?.loss, straight.test?.estimates.first?.loss)
        } else {
            let difference = zip(resumed.model.parameters, straight.model.parameters).reduce(0.0) {
                $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1)
            }
            let norm = straight.model.parameters.reduce(0.0) { $0 + Double($1) * Double($1) }
            let error = (difference / norm).squareRoot()
            XCTAssertLessThan(error, 1e-5, "reference resume vs straight run: relative L2 \(error)")
        }

        // A resume on other data is refused, naming the checkpoint.
        var fewer = data
        fewer.train.rows -= 1
        XCTAssertThrowsError(
            try TrainingSession(backend: backend, data: fewer, options: options, start: .resume(checkpoint))
        ) { error in
            XCTAssertEqual((error as? DataError)?.field, .checkpoint)
            XCTAssertTrue("\(error)".contains("training and"), "\(error)")
        }
    }

    func testResumeInProcessOnTheReference() throws {
        try checkResumeInProcess(on: ReferenceBackend(), bitwise: false)
    }

    func testResumeInProcessOnOpenCLIsBitwise() throws {
        try checkResumeInProcess(on: try SharedDevice.backend(), bitwise: true)
    }

    /// An initial model that disagrees with the options is refused, naming the field.
    /// `afterStep` stops a session in the middle of an epoch (twice: epoch 2 after step 3, then the resumed
    /// session in epoch 3 after step 5); each checkpoint records the position, and resuming from the files ends
    /// with bitwise the weights, statistics and per-epoch losses of the uninterrupted run — with the training
    /// set resident and streamed in chunks (the skipped steps of a resumed epoch are skipped in both).
    func testResumeFromTheMiddleOfAnEpochIsBitwise() throws {
        let backend = try CPUBackend(threads: 1)
        let dir = try temporaryDirectory(self)
        let data = try PreparedData.prepare(
            table: Self.sample(rows: 300, seed: 5), file: "sample", features: nil,
            targets: ["truth_hr_x", "truth_hr_y"], testFraction: 0.1, validationSplit: 0.2, scaleTargets: true)
        let options = Self.resumeOptions(epochs: 4)  // 216 training rows, batches of 32: 7 steps per epoch
        for limit in [Int.max, 0] {
            let settings = { (url: URL) in
                TrainingSession<CPUBackend>.Settings(checkpoint: url, residentLimitBytes: limit)
            }
            let straight = try TrainingSession(
                backend: backend, data: data, options: options, start: .fresh(seed: 11),
                settings: settings(dir.appendingPathComponent("straight.checkpoint"))
            ).run()
            let url = dir.appendingPathComponent("run.checkpoint")
            var session = try TrainingSession(
                backend: backend, data: data, options: options, start: .fresh(seed: 11), settings: settings(url))
            XCTAssertEqual(session.trainingSetIsResident, limit == .max)
            var resumedAt = (epoch: 1, step: 0)
            for (epoch, step) in [(2, 3), (3, 5)] {
                var first: (epoch: Int, done: Int)?
                session.afterStep = { e, done, steps in
                    XCTAssertEqual(steps, 7)
                    first = first ?? (e, done)
                    return e == epoch && done == step ? .stop : .proceed
                }
                let stopped = try session.run()
                XCTAssertTrue(stopped.stoppedByCallback)
                XCTAssertNil(stopped.test)
                // The first step run is the one after the position resumed from.
                XCTAssertEqual(first?.epoch, resumedAt.epoch)
                XCTAssertEqual(first?.done, resumedAt.step + 1)
                resumedAt = (epoch, step)
                let checkpoint = try Checkpoint.read(from: url)
                let partial = try XCTUnwrap(checkpoint.metadata.state.partialEpoch)
                XCTAssertEqual(partial.epoch, epoch)
                XCTAssertEqual(partial.steps, step)
                XCTAssertEqual(checkpoint.metadata.state.epoch, epoch - 1)
                XCTAssertEqual(checkpoint.metadata.adamStep, 7 * (epoch - 1) + step)
                XCTAssertEqual(checkpoint.model.parameters, try session.network.weights().parameters)
                session = try TrainingSession(
                    backend: backend, data: data, options: options, start: .resume(checkpoint, file: url.path),
                    settings: settings(url))
            }
            let resumed = try session.run()
            XCTAssertFalse(resumed.stoppedByCallback)
            XCTAssertNil(resumed.state.partialEpoch)
            XCTAssertEqual(resumed.model.parameters.map(\.bitPattern), straight.model.parameters.map(\.bitPattern))
            XCTAssertEqual(
                resumed.model.runningStatistics.map(\.bitPattern), straight.model.runningStatistics.map(\.bitPattern))
            XCTAssertEqual(resumed.state.history.map(\.trainLoss), straight.state.history.map(\.trainLoss))
            XCTAssertEqual(resumed.state.history.map(\.validationLoss), straight.state.history.map(\.validationLoss))
            XCTAssertEqual(resumed.state.learningRate, straight.state.learningRate)
            XCTAssertEqual(resumed.test?.estimates.first?.loss, straight.test?.estimates.first?.loss)
        }

        // A checkpoint whose partial epoch does not fit its state is refused when read.
        let url = dir.appendingPathComponent("run.checkpoint")
        var file = try SafeTensorsFile.read(from: url)
        let json = try XCTUnwrap(file.metadata["checkpoint"])
        var metadata = try JSONDecoder().decode(Checkpoint.Metadata.self, from: Data(json.utf8))
        metadata.state.partialEpoch = PartialEpoch(epoch: metadata.state.epoch + 2, steps: 1, losses: [1])
        file.metadata["checkpoint"] = try JSON.string(metadata)
        try file.write(to: url)
        XCTAssertThrowsError(try Checkpoint.read(from: url)) {
            XCTAssertTrue("\($0)".contains("does not follow the"), "\($0)")
        }
        // Edited values that a run cannot have written, or that would trap or mislead when continued, are refused
        // when read, naming the file.
        metadata.state.partialEpoch = nil
        let edits: [(String, (inout Checkpoint.Metadata) -> Void)] = [
            ("another network", { $0.options.spec.hiddenSizes = [4, 4] }),
            ("Adam step count", { $0.adamStep = Int.max }),
            ("epochs done", { $0.state.epoch = Int.max }),
            ("learning rate", { $0.state.learningRate = -1 }),
            ("waits", { $0.state.earlyStoppingWait = Int.max }),
            ("waits", { $0.state.plateauWait = -1 }),
            ("training options are not valid", { $0.options.batchSize = 1 }),
            ("best epoch", { $0.state.bestEpoch = $0.state.epoch + 1 }),
        ]
        for (expected, edit) in edits {
            var edited = metadata
            edit(&edited)
            file.metadata["checkpoint"] = try JSON.string(edited)
            try file.write(to: url)
            XCTAssertThrowsError(try Checkpoint.read(from: url), expected) {
                XCTAssertTrue("\($0)".contains(expected) && "\($0)".contains(url.path), "\(expected): \($0)")
            }
        }
        file.metadata["checkpoint"] = try JSON.string(metadata)
        try file.write(to: url)
        XCTAssertNoThrow(try Checkpoint.read(from: url), "the unedited metadata")
    }

    /// A checkpoint written with the older validation split (floor(n·v) validation rows, before it was made Keras'
    /// floor(n·(1−v)) training rows) is refused on resume with that reason, not as other data.
    func testACheckpointOfTheOlderValidationSplitIsRefusedWithTheReason() throws {
        let backend = try CPUBackend(threads: 1)
        let dir = try temporaryDirectory(self)
        let data = try PreparedData.prepare(
            table: Self.sample(rows: 301, seed: 5), file: "sample", features: nil,
            targets: ["truth_hr_x", "truth_hr_y"], validationSplit: 0.2, scaleTargets: true)
        XCTAssertEqual([data.totalTrainingRows, data.totalValidationRows], [240, 61], "Keras: floor(301 · 0.8)")
        let url = dir.appendingPathComponent("run.checkpoint")
        _ = try TrainingSession(
            backend: backend, data: data, options: Self.resumeOptions(epochs: 1), start: .fresh(seed: 11),
            settings: .init(checkpoint: url)
        ).run()
        var file = try SafeTensorsFile.read(from: url)
        var metadata = try JSONDecoder().decode(
            Checkpoint.Metadata.self, from: Data(try XCTUnwrap(file.metadata["checkpoint"]).utf8))
        (metadata.trainingRows, metadata.validationRows) = (241, 60)
        file.metadata["checkpoint"] = try JSON.string(metadata)
        try file.write(to: url)
        let checkpoint = try Checkpoint.read(from: url)
        XCTAssertThrowsError(
            try TrainingSession(
                backend: backend, data: data, options: Self.resumeOptions(epochs: 2),
                start: .resume(checkpoint, file: url.path)
            ).run()
        ) {
            XCTAssertTrue("\($0)".contains("before the validation split was made Keras' own"), "\($0)")
        }
    }

    func testInitFromAModelOfAnotherArchitectureIsRefused() throws {
        let data = try PreparedData.prepare(
            table: Self.sample(rows: 100, seed: 6), file: "sample", features: nil,
            targets: ["truth_hr_x", "truth_hr_y"], validationSplit: 0.2, scaleTargets: false)
        var options = Self.resumeOptions(epochs: 1)
        let spec = NetworkSpec(inputSize: 6, hiddenSizes: [8, 8], outputSize: 2)
        let initial = Network<ReferenceBackend>.initialValues(spec: spec, profile: .keras, seed: 3)
        let model = Model(
            metadata: ModelMetadata(
                spec: spec, profile: .keras, featureNames: data.featureNames, targetNames: data.targetNames,
                initialization: .seed(3, profile: .keras)),
            parameters: initial.parameters.map(Float.init),
            runningStatistics: initial.runningStatistics.map(Float.init),
            featureScaler: data.featureScaler, targetScaler: nil)
        let backend = ReferenceBackend()
        for (change, field) in [
            ({ (o: inout TrainingOptions) in o.spec.hiddenSizes = [8, 9] }, TrainingOptionsError.Field.hiddenSizes),
            ({ (o: inout TrainingOptions) in o.spec.layerOrder = .denseBatchNormTanh }, .layerOrder),
            ({ (o: inout TrainingOptions) in o.profile = .pytorch }, .profile),
        ] {
            var changed = options
            change(&changed)
            XCTAssertThrowsError(
                try TrainingSession(backend: backend, data: data, options: changed, start: .initFrom(model))
            ) { XCTAssertEqual(($0 as? TrainingOptionsError)?.field, field, "\($0)") }
        }
        options.spec = spec
        let session = try TrainingSession(
            backend: backend, data: data, options: options, start: .initFrom(model, file: "init.safetensors"))
        let result = try session.run()
        XCTAssertEqual(result.model.metadata.initialization?.file, "init.safetensors")
        XCTAssertEqual(result.model.metadata.initialization?.seed, 3)
    }

    /// A real interruption: the process is killed (SIGKILL) once its metrics file shows epoch 2; the
    /// checkpoint it left resumes to bitwise the weights of the uninterrupted run.
    func testResumeAfterTheProcessIsKilledEndsWithBitwiseTheSameWeights() throws {
        _ = try SharedDevice.backend()
        let dir = try temporaryDirectory(self)
        let csv = dir.appendingPathComponent("sample.csv")
        try writeTable(Self.sample(rows: 600, seed: 5), to: csv)
        let epochs = 40
        let common = [
            "train", "--data", csv.path, "--epochs", "\(epochs)", "--batch-size", "64", "--hidden", "16,16",
            "--seed", "11", "--quiet", "--patience", "50", "--restore-best", "--reduce-lr-patience", "2",
        ]
        let straight = try runHRTrain(common + ["--model", dir.appendingPathComponent("straight.model").path])
        XCTAssertEqual(straight.status, 0, straight.err)

        let interruptedModel = dir.appendingPathComponent("resumed.model")
        let metrics = dir.appendingPathComponent("metrics.jsonl")
        let process = Process()
        process.executableURL = hrtrainExecutable()
        process.arguments = common + ["--model", interruptedModel.path, "--metrics", metrics.path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        var killedAfter = 0
        while process.isRunning {
            if let records = try? readMetrics(from: metrics), records.count >= 2 {
                kill(process.processIdentifier, SIGKILL)
                killedAfter = records.count
                break
            }
            usleep(2000)
        }
        process.waitUntilExit()
        XCTAssertEqual(process.terminationReason, .uncaughtSignal, "the run must be killed before it ends")
        XCTAssertGreaterThanOrEqual(killedAfter, 2)
        XCTAssertFalse(
            FileManager.default.fileExists(atPath: interruptedModel.path), "no model file from an interrupted run")
        let checkpoint = interruptedModel.path + ".checkpoint"
        let epoch = try Checkpoint.read(from: URL(fileURLWithPath: checkpoint)).metadata.state.epoch
        XCTAssertTrue((killedAfter..<epochs).contains(epoch), "checkpoint after epoch \(epoch)")
        let resumed = try runHRTrain([
            "train", "--data", csv.path, "--model", interruptedModel.path, "--resume", checkpoint, "--quiet",
        ])
        XCTAssertEqual(resumed.status, 0, resumed.err)

        let a = try Model.read(from: dir.appendingPathComponent("straight.model"))
        let b = try Model.read(from: interruptedModel)
        XCTAssertEqual(a.parameters.map(\.bitPattern), b.parameters.map(\.bitPattern))
        XCTAssertEqual(a.runningStatistics.map(\.bitPattern), b.runningStatistics.map(\.bitPattern))
        XCTAssertEqual(b.metadata.epochsTrained, epochs)
    }
}
