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
    /// A damaged cached program is rebuilt, with a one-line warning.
    func open() throws -> ComputeContext {
        let context = try ComputeContext(deviceIndex: device)
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
func boundedFlag<T>(_ option: String, _ body: () throws -> T) throws -> T {
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
