import Foundation
import XCTest

@testable import HRTrain

/// The OpenCL device all kernel tests share (one context per test process, like one per run).
///
/// Where no OpenCL platform exists the tests are skipped with the reason, never passed silently.
enum SharedDevice {
    static let result: Result<OpenCLBackend, Error> = Result { try OpenCLBackend(context: ComputeContext()) }

    /// The device with each kernel variant (column-strip and tiled), sharing one context.
    static func variants() throws -> [OpenCLBackend] {
        let base = try backend()
        return OpenCLBackend.KernelVariant.allCases.map { OpenCLBackend(context: base.context, variant: $0) }
    }

    static func backend() throws -> OpenCLBackend {
        switch result {
        case .success(let backend): return backend
        case .failure(let error as DeviceError) where error.message.contains("no OpenCL platform"):
            throw XCTSkip("OpenCL tests skipped: \(error.message)")
        case .failure(let error): throw error
        }
    }
}

/// Random values from a fixed-seed generator: each test draws fresh inputs from its own seed.
func randomValues(_ count: Int, seed: UInt64, scale: Double = 1) -> [Double] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { _ in scale * rng.normal() }
}

/// Asserts that `device` matches `reference` in relative L2 norm within `limit`, with no NaN/Inf.
/// `floor` (see `TensorComparison`) is for results that cancel: the size of the terms that cancel.
func assertClose(
    _ device: [Double], _ reference: [Double], limit: Double, floor: Double = 0, _ what: String,
    file: StaticString = #filePath, line: UInt = #line
) {
    let c = TensorComparison(
        name: what, shape: [reference.count], device: device, reference: reference, limit: limit, floor: floor)
    XCTAssertFalse(c.nonFinite, "\(what): NaN or Inf", file: file, line: line)
    XCTAssertTrue(
        c.passed, "\(what): error \(c.error) > limit \(c.limit) (max abs \(c.maxAbsoluteError))", file: file, line: line
    )
}

/// A device tensor of `shape` placed between two guard regions of a larger buffer, whose guards are filled
/// with a sentinel; `checkGuards` fails the test if a kernel wrote outside its output.
struct GuardedTensor {
    static let guardCount = 67
    static let sentinel: Float = -7.75e33
    let whole: DeviceTensor
    let tensor: DeviceTensor

    init(_ backend: OpenCLBackend, shape: [Int], contents: [Double]? = nil) throws {
        let count = shape.reduce(1, *)
        var values = [Float](repeating: Self.sentinel, count: count + 2 * Self.guardCount)
        if let contents { for i in 0..<count { values[Self.guardCount + i] = Float(contents[i]) } }
        whole = try backend.tensor(values, shape: [values.count])
        tensor = whole.view(offset: Self.guardCount, shape: shape)
    }

    func checkGuards(_ backend: OpenCLBackend, _ what: String, file: StaticString = #filePath, line: UInt = #line)
        throws
    {
        let all = try backend.context.download(whole)
        let head = all[..<Self.guardCount]
        let tail = all[(all.count - Self.guardCount)...]
        XCTAssertTrue(
            head.allSatisfy { $0 == Self.sentinel } && tail.allSatisfy { $0 == Self.sentinel },
            "\(what): a kernel wrote into a guard region", file: file, line: line)
    }
}

/// The `hrtrain` executable built next to the test bundle.
func hrtrainExecutable() -> URL {
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    while !FileManager.default.fileExists(atPath: dir.appendingPathComponent("hrtrain").path), dir.path != "/" {
        dir = dir.deletingLastPathComponent()
    }
    return dir.appendingPathComponent("hrtrain")
}

/// Runs `hrtrain` with `arguments`; returns (exit status, stdout, stderr).
func runHRTrain(_ arguments: [String], environment: [String: String] = [:]) throws -> (
    status: Int32, out: String, err: String
) {
    let process = Process()
    process.executableURL = hrtrainExecutable()
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    process.environment = env
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (
        process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self)
    )
}

/// A fresh temporary folder, removed at the end of the test.
func temporaryDirectory(_ test: XCTestCase) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("hrtrain-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
    return url
}
