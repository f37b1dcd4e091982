import XCTest

@testable import HRTrain

/// The training loop: splits and batches, Keras callback semantics, streaming vs resident data, and the
/// bitwise resume after a real interruption of the process.
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
            targets: ["truth_hr_x", "truth_hr_y"], validationSplit: 0.2, scaleTargets: true, batchSize: 64)
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
            return (
                try device.context.download(net.parameters) + device.context.download(net.runningStatistics), history,
                trainer.trainingSetIsResident
            )
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
            targets: ["truth_hr_x", "truth_hr_y"], validationSplit: 0.3, scaleTargets: false, batchSize: 50)
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
            parameters: try device.context.download(net.parameters),
            runningStatistics: try device.context.download(net.runningStatistics), featureScaler: data.featureScaler,
            targetScaler: nil)
        let predictions = try model.predict(
            data.validation.features, rows: data.validation.rows, on: ReferenceBackend())
        let mse =
            zip(predictions, data.validation.targets).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
            / Double(predictions.count)
        XCTAssertEqual(record.validationLoss!, mse, accuracy: 1e-5 * mse)
    }

    func testResumeAfterARealInterruptionEndsWithBitwiseTheSameWeights() throws {
        _ = try SharedDevice.backend()
        let dir = try temporaryDirectory(self)
        let csv = dir.appendingPathComponent("sample.csv")
        try writeTable(Self.sample(rows: 600, seed: 5), to: csv)
        let common = [
            "train", "--data", csv.path, "--epochs", "4", "--batch-size", "64", "--hidden", "16,16", "--seed", "11",
            "--quiet", "--patience", "3", "--restore-best", "--reduce-lr-patience", "1",
        ]
        let straight = try runHRTrain(common + ["--model", dir.appendingPathComponent("straight.model").path])
        XCTAssertEqual(straight.status, 0, straight.err)

        let interruptedModel = dir.appendingPathComponent("resumed.model")
        let first = try runHRTrain(
            common + ["--model", interruptedModel.path], environment: ["HRTRAIN_TEST_EXIT_AFTER_EPOCH": "2"])
        XCTAssertEqual(first.status, 75, "the process ends after epoch 2: \(first.err)")
        XCTAssertFalse(
            FileManager.default.fileExists(atPath: interruptedModel.path), "no model file from an interrupted run")
        let checkpoint = interruptedModel.path + ".checkpoint"
        XCTAssertEqual(try Checkpoint.read(from: URL(fileURLWithPath: checkpoint)).metadata.state.epoch, 2)
        let resumed = try runHRTrain([
            "train", "--data", csv.path, "--model", interruptedModel.path, "--resume", checkpoint, "--quiet",
        ])
        XCTAssertEqual(resumed.status, 0, resumed.err)

        let a = try Model.read(from: dir.appendingPathComponent("straight.model"))
        let b = try Model.read(from: interruptedModel)
        XCTAssertEqual(a.parameters.map(\.bitPattern), b.parameters.map(\.bitPattern))
        XCTAssertEqual(a.runningStatistics.map(\.bitPattern), b.runningStatistics.map(\.bitPattern))
        XCTAssertEqual(b.metadata.epochsTrained, 4)
    }
}
