import ArgumentParser
import Foundation
import HRTrain

/// `--device N`, shared by every command that runs on a device.
struct DeviceOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "OpenCL device index from `hrtrain devices` (default: $HRTRAIN_DEVICE, else the first GPU, else the first "
                + "device); under MPI a list N,M,… gives one per node-local rank.",
            valueName: "N"))
    var device: DeviceList?

    /// Opens the chosen device and builds or loads the kernel program.
    /// A damaged cached program is rebuilt, with a one-line warning.
    func open() throws -> ComputeContext {
        let context = try ComputeContext(deviceIndex: device?.index(forLocalRank: 0))
        if let warning = context.programBuild.warning { printError("warning: \(warning)") }
        return context
    }
}

/// A failure found while a command runs (not a malformed command line): printed as `error: …`, exit status 1.
struct CommandError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Runs `body`, turning a SizeLimitError into a ValidationError that names `option` (exit status 64).
@discardableResult func boundedFlag<T>(_ option: String, _ body: () throws -> T) throws -> T {
    do { return try body() } catch let error as SizeLimitError { throw ValidationError("\(option): \(error)") }
}

/// Checks a command's planned outputs against its inputs and each other (see OutputPlan).
func checkOutputs(_ build: (inout OutputPlan) -> Void) throws {
    var plan = OutputPlan()
    build(&plan)
    try plan.check()
}

/// Writes `text` to standard error.
func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// JSON with sorted keys, pretty printed (the library's one encoder, `JSON.encoder`).
func jsonString<T: Encodable>(_ value: T) throws -> String { try JSON.string(value, pretty: true) }

/// Left-aligned text padded to `width`.
func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}

/// Right-aligned text padded to `width`.
func leftPad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
}

/// Renders rows as an aligned text table; `rightAligned` marks numeric columns.
func table(_ header: [String], _ rows: [[String]], rightAligned: Set<Int> = []) -> String {
    let widths = header.indices.map { c in ([header[c]] + rows.map { $0[c] }).map(\.count).max() ?? 0 }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { c, cell in rightAligned.contains(c) ? leftPad(cell, widths[c]) : pad(cell, widths[c]) }
            .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
    }
    return ([line(header), widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")] + rows.map(line))
        .joined(separator: "\n")
}

/// Runs `body`, turning hrtrain's own errors into a message on standard error and exit status 1. The
/// library names the field an error is about (`DataField`); the message names the command's flag for it:
/// `flags[field]` where the command has its own name, else `DataField.flag`.
func reportingErrors<T>(flags: [DataField: String] = [:], _ body: () throws -> T) throws -> T {
    do { return try body() } catch let error as ExitCode { throw error } catch let error as ValidationError {
        throw error
    } catch {
        printError("error: " + errorMessage(error, flags: flags))
        throw ExitCode.failure
    }
}

/// The message `reportingErrors` prints for `error` (a data error names the flag of its field).
func errorMessage(_ error: Error, flags: [DataField: String] = [:]) -> String {
    switch error {
    case let error as DataError: error.described(as: error.field.map { flags[$0] ?? $0.flag })
    case let error as TrainingOptionsError: error.flagMessage
    case let error as ValidationError: error.message
    default: "\(error)"
    }
}

/// `--backend` and `--threads`, shared by every command that computes.
struct BackendOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "opencl, cpu or reference (default: $HRTRAIN_BACKEND, else OpenCL if --device, "
                + "$HRTRAIN_DEVICE or an OpenCL GPU is there, else cpu).",
            valueName: "kind"))
    var backend: BackendChoice?
    @Option(
        help: ArgumentHelp(
            "Threads of the CPU backend (default: the cores free at start, all on an idle machine).", valueName: "N"))
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
    }

    /// The backend to use: the flag, else `BackendKind.automatic` (`deviceRequested`: whether `--device` is given).
    func resolved(deviceRequested: Bool) throws -> BackendChoice {
        try Self.resolve(backend: backend, threads: threads, deviceRequested: deviceRequested)
    }

    /// `--backend` if given, else `BackendKind.automatic`; checks that `--device` and `--threads` fit it.
    static func resolve(backend: BackendChoice?, threads: Int?, deviceRequested: Bool) throws -> BackendChoice {
        if let backend {
            if backend != .opencl && deviceRequested {
                throw ValidationError("--device applies to --backend opencl only")
            }
            if backend != .cpu && threads != nil { throw ValidationError("--threads applies to --backend cpu only") }
            return backend
        }
        let kind = try reportingErrors { try BackendKind.automatic(deviceRequested: deviceRequested).kind }
        return BackendChoice(rawValue: kind.rawValue)!
    }

    /// The CPU backend with `--threads`.
    func cpuBackend() throws -> CPUBackend { try reportingErrors { try CPUBackend(threads: threads) } }
}

/// The file format named by `path`'s extension, checked before any work; a failure names `field`'s flag.
func requireTableFormat(_ path: String, field: DataField) throws {
    do { _ = try TableFormat(url: URL(fileURLWithPath: path), field: field) } catch let error as DataError {
        throw CommandError(error.described(as: field.flag))
    }
}

extension DataField {
    /// The flag that names this field in most commands (a command maps it otherwise in `reportingErrors`).
    var flag: String {
        switch self {
        case .data: "--data"
        case .features: "--features"
        case .targets: "--targets"
        case .testFile: "--test-file"
        case .testFraction: "--test-fraction"
        case .validationSplit: "--validation-split"
        case .checkpoint: "--resume"
        case .model: "--model"
        case .initialModel: "--init-from"
        case .metrics: "--metrics"
        case .output: "--output"
        case .testOutput: "--test-output"
        case .compare: "--compare"
        case .scalerData: "--scaler-from"
        case .weights: "--weights"
        case .flattening: "--flatten-target-magnitude"
        case .baseline: "--baseline"
        }
    }
}

extension TrainingOptionsError {
    /// The message with the field's flag: `--epochs must be at least 1, got 0`.
    var flagMessage: String {
        let flag =
            switch field {
            case .epochs: "--epochs"
            case .batchSize: "--batch-size"
            case .learningRate: "--learning-rate"
            case .validationSplit: "--validation-split"
            case .testFraction: "--test-fraction"
            case .hiddenSizes: "--hidden"
            case .layerOrder: "--layout"
            case .profile: "--profile"
            case .patience: "--patience"
            case .minDelta: "--min-delta"
            case .reduceLearningRatePatience: "--reduce-lr-patience"
            case .reduceLearningRateFactor: "--reduce-lr-factor"
            case .reduceLearningRateMinDelta: "--reduce-lr-min-delta"
            case .minimumLearningRate: "--min-learning-rate"
            case .weightColumn: "--weights"
            case .flatteningEdges: "--flatten-target-magnitude"
            case .flatteningPower: "--flatten-power"
            case .flatteningMaximumWeight: "--flatten-max-weight"
            case .baseline: "--baseline"
            }
        return "\(flag) \(message)"
    }
}

/// `--quiet` and `--verbose`, shared by the commands that print progress.
struct VerbosityOptions: ParsableArguments {
    @Flag(name: .shortAndLong, help: "Only errors, warnings and the final result.") var quiet = false
    @Flag(name: .shortAndLong, help: "More detail: data, device, kernel program, timings.") var verbose = false

    func validate() throws {
        if quiet && verbose { throw ValidationError("--quiet and --verbose exclude each other") }
    }

    /// The log these flags ask for.
    var log: Log { Log(quiet: quiet, verbose: verbose) }
}

/// Warns, once per file, that `--drop-nonfinite` dropped `count` rows of `file` (nothing when none).
func warnDroppedRows(_ count: Int, from file: String, log: Log) {
    guard count > 0 else { return }
    log.warn("--drop-nonfinite: dropped \(count) row\(count == 1 ? "" : "s") with NaN or Inf from \(file)")
}

/// Parses `256,256,256`.
func parseHidden(_ text: String) throws -> [Int] {
    let parts = text.split(separator: ",", omittingEmptySubsequences: false).map {
        $0.trimmingCharacters(in: .whitespaces)
    }
    let sizes = parts.compactMap { Int($0) }
    guard !parts.isEmpty, sizes.count == parts.count, sizes.allSatisfy({ $0 > 0 }) else {
        throw ValidationError(
            "--hidden must be a comma-separated list of positive sizes such as 256,256,256, got '\(text)'")
    }
    // The hidden layers' parameters alone must fit in memory (every command checks its full footprint later).
    try boundedFlag("--hidden \(text)") {
        try SizeLimits.network(NetworkSpec(inputSize: 1, hiddenSizes: sizes, outputSize: 1), batch: 1)
    }
    return sizes
}

/// `a,b,c` → ["a", "b", "c"].
func parseList(_ text: String) -> [String] {
    text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
}

/// A column list: `a,b,c`, or `@FILE` with one name per line (blank lines and `#` comments ignored).
func parseColumnList(_ text: String) throws -> [String] {
    guard text.hasPrefix("@") else { return parseList(text) }
    let path = String(text.dropFirst())
    let contents: String
    do { contents = try InputFile.readText(URL(fileURLWithPath: path)) } catch let error as DataError {
        throw CommandError("--features \(text): \(error.message)")
    }
    return contents.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter {
        !$0.isEmpty && !$0.hasPrefix("#")
    }
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
