import ArgumentParser
import Foundation
import HRTrain

/// `--device N`, shared by every command that runs on a device.
struct DeviceOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "OpenCL device index from `hrtrain devices` (default: $HRTRAIN_DEVICE, else the first GPU, else the first device).",
            valueName: "N"))
    var device: Int?

    func validate() throws {
        if let device, device < 0 { throw ValidationError("--device must be a device index ≥ 0, got \(device)") }
    }

    /// Opens the chosen device and builds or loads the kernel program.
    func open() throws -> ComputeContext { try ComputeContext(deviceIndex: device) }
}

/// A failure found while a command runs (not a malformed command line): printed as `error: …`, exit status 1.
struct CommandError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Writes `text` to standard error.
func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// JSON with sorted keys, pretty printed.
func jsonString<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

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

/// Runs `body`, turning hrtrain's own errors into a message on standard error and exit status 1.
func reportingErrors<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let error as ExitCode { throw error } catch let error as ValidationError {
        throw error
    } catch {
        printError("error: \(error)")
        throw ExitCode.failure
    }
}

/// `--backend` and `--threads`, shared by every command that computes.
struct BackendOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "opencl, cpu or reference (default: $HRTRAIN_BACKEND, else OpenCL if --device, $HRTRAIN_DEVICE or an OpenCL GPU is there, else cpu).",
            valueName: "kind"))
    var backend: BackendChoice?
    @Option(help: ArgumentHelp("Threads of the CPU backend (default: every core).", valueName: "N"))
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
