import ArgumentParser
import Foundation
import HRTrain

/// Where a model runs for inference.
enum BackendChoice: String, ExpressibleByArgument, CaseIterable {
    /// Float32 on an OpenCL device.
    case opencl
    /// Float32 on the host's cores (BLAS and vectorised Swift).
    case cpu
    /// The Double CPU reference.
    case reference
}

/// The options `predict` and `evaluate` share: the model, the data, and where and how to run the model.
struct InferenceOptions: ParsableArguments {
    @Option(help: "The model file (safetensors, from `hrtrain train` or `hrtrain init`).") var model: String
    @Option(help: "The events: .csv, .h5/.hdf5 or .npy, holding the model's feature columns (by name).") var data:
        String
    @Option(
        help: ArgumentHelp(
            "opencl, cpu (Float32) or reference (Double) (default: $HRTRAIN_BACKEND, else OpenCL if --device, "
                + "$HRTRAIN_DEVICE or an OpenCL GPU is there, else cpu).",
            valueName: "kind"))
    var backend: BackendChoice?
    @Option(
        help: ArgumentHelp(
            "Threads of the CPU backend (default: the cores free at start, all on an idle machine).", valueName: "N"))
    var threads: Int?
    @OptionGroup var deviceOptions: DeviceOptions
    @Option(help: "Events per forward pass.") var batchSize = 4000
    @Flag(help: "Drop rows with NaN or ±Inf (and report how many) instead of failing; the output then has fewer rows.")
    var dropNonfinite = false
    @Flag(help: "Do not apply the model's response calibration (from `hrtrain calibrate`), if it has one.")
    var noCalibration = false

    func validate() throws {
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
        try boundedFlag("--batch-size \(batchSize)") {
            try SizeLimits.requireHostArray(
                shape: [batchSize, 8], elementSize: 8, what: "a batch of \(batchSize) rows")
        }
        if let backend, backend != .opencl, deviceOptions.device != nil {
            throw ValidationError("--device applies to --backend opencl only")
        }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
    }

    /// Reads and validates the model file.
    func loadModel() throws -> Model {
        try InputFile.requireRegularFile(URL(fileURLWithPath: model), field: .model)
        do { return try Model.read(from: URL(fileURLWithPath: model)) } catch var error as DataError {
            error.field = error.field ?? .model
            throw error
        }
    }

    /// Reads the data file, warning about dropped rows.
    func readData(log: Log) throws -> Table {
        let read = try readTableWithReport(
            URL(fileURLWithPath: data), options: ReadOptions(dropNonFinite: dropNonfinite, field: .data))
        warnDroppedRows(read.droppedRowCount, from: data, log: log)
        return read.table
    }

    /// The model's feature columns of `table`, row-major; a missing column fails naming all that are missing.
    func features(of model: Model, in table: Table) throws -> [Float] {
        let names = model.metadata.featureNames
        let missing = names.filter { table.columnIndex($0) == nil }
        if let first = missing.first {
            if missing.count == 1 {
                var error = DataError.unknownColumn(first, available: table.columnNames, file: data, field: .data)
                error.message = "the model \(self.model) needs a feature column that the data lacks: " + error.message
                throw error
            }
            throw DataError(
                "the model \(self.model) needs \(missing.count) feature columns that the data lacks: "
                    + "\(missing.joined(separator: ", ")). Available columns: "
                    + "\(table.columnNames.joined(separator: ", "))",
                file: data, field: .data)
        }
        return table.selecting(try table.indices(of: names, file: data, field: .data)).values
    }

    /// Runs `model` on `features` (`[rows, inputs]`) on the chosen backend; returns `[rows, outputs]`, the
    /// backend's name and the seconds the prediction took (device setup excluded).
    func predict(_ model: Model, features: [Float], rows: Int, log: Log) throws -> (
        values: [Float], backend: String, seconds: Double
    ) {
        let choice = try BackendOptions.resolve(
            backend: backend, threads: threads, deviceRequested: deviceOptions.device != nil)
        switch choice {
        case .cpu:
            let backend = try CPUBackend(threads: threads)
            let start = DispatchTime.now()
            let values = try model.predict(
                features, rows: rows, on: backend, batchSize: batchSize, calibrated: !noCalibration)
            return (values, backend.name, elapsed(since: start))
        case .opencl:
            let context = try deviceOptions.open()
            try SizeLimits.requireNetwork(
                model.metadata.spec, batch: min(batchSize, max(rows, 1)), on: context.device)
            log.detail(
                "device: \(context.device.name) (\(context.device.platform)); kernel program "
                    + "\(context.programBuild.origin) in \(String(format: "%.2f", context.programBuild.seconds)) s"
            )
            let backend = OpenCLBackend(context: context)
            let start = DispatchTime.now()
            let values = try model.predict(
                features, rows: rows, on: backend, batchSize: batchSize, calibrated: !noCalibration)
            return (values, backend.name, elapsed(since: start))
        case .reference:
            try SizeLimits.requireReferenceNetwork(model.metadata.spec, batch: min(batchSize, max(rows, 1)))
            let backend = ReferenceBackend()
            let start = DispatchTime.now()
            let values = try model.predict(
                features, rows: rows, on: backend, batchSize: batchSize, calibrated: !noCalibration)
            return (values, backend.name, elapsed(since: start))
        }
    }
}

extension HRTrainCommand {
    struct Predict: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a model on events and write its predictions (CSV, .npy or HDF5).",
            discussion: """
                Reads the model's feature columns by name from --data, scales them with the model's \
                StandardScaler, runs the network with batch normalisation in inference mode (running \
                statistics), un-scales the outputs if the targets were scaled, adds the baseline columns back \
                (models trained with --baseline), applies the response calibration (models from `hrtrain \
                calibrate`; --no-calibration skips it), and writes one column per model \
                target (named as in the model) and one row per event, in input order, to --output: .csv, .npy \
                or .h5/.hdf5 (dataset /data) by extension, atomically.
                """)

        @OptionGroup var inference: InferenceOptions
        @Option(help: "Where to write the predictions: .csv, .npy or .h5/.hdf5.") var output: String
        @OptionGroup var verbosity: VerbosityOptions

        func validate() throws {
            try requireTableFormat(output, field: .output)
        }

        func run() throws {
            try reportingErrors { try predict() }
        }

        private func predict() throws {
            let log = verbosity.log
            let outputURL = URL(fileURLWithPath: output)
            try checkOutputs { plan in
                plan.input(inference.model, option: "--model")
                plan.input(inference.data, option: "--data")
                plan.output(output, option: "--output")
            }
            let model = try inference.loadModel()
            let table = try inference.readData(log: log)
            let features = try inference.features(of: model, in: table)
            let result = try inference.predict(model, features: features, rows: table.rowCount, log: log)
            try writeTable(
                Table(columnNames: model.metadata.targetNames, rowCount: table.rowCount, values: result.values),
                to: outputURL)
            log.info(
                "predicted \(table.rowCount) events in \(String(format: "%.3f", result.seconds)) s "
                    + "(\(String(format: "%.0f", Double(table.rowCount) / max(result.seconds, 1e-9))) events/s) on "
                    + "\(result.backend); written to \(output)"
            )
        }
    }
}
