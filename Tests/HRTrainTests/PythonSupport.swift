import Foundation
import XCTest

/// The Python interpreter of the interoperability tests: `$HRTRAIN_PYTHON` (`.ci/run` sets it to its venv
/// `.build/pyenv`), else `python3`.
var pythonInterpreter: String { ProcessInfo.processInfo.environment["HRTRAIN_PYTHON"] ?? "python3" }

/// Runs `python -c script arguments…`; returns the exit status and stdout + stderr, or nil if it cannot start.
func runPython(_ script: String, _ arguments: [String] = []) -> (status: Int32, output: String)? {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = [pythonInterpreter, "-c", script] + arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    guard (try? process.run()) != nil else { return nil }
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, output)
}

/// Runs a Python file `script` with `arguments`; as `runPython`.
func runPythonFile(_ script: URL, _ arguments: [String] = []) -> (status: Int32, output: String)? {
    runPython(
        "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
        [script.path] + arguments)
}

/// Skips the test, saying why, unless the interpreter imports every module of `modules`.
func requirePythonModules(_ modules: [String]) throws {
    let probe = runPython("import " + modules.joined(separator: ", "))
    guard let probe, probe.status == 0 else {
        throw XCTSkip(
            "\(pythonInterpreter) cannot import \(modules.joined(separator: ", ")) (.ci/run installs them into "
                + ".build/pyenv; set HRTRAIN_PYTHON): \(probe?.output.split(separator: "\n").last ?? "not started")")
    }
}

/// The repository's root folder (for its `scripts/`).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()
