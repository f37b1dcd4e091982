import Foundation
import XCTest

/// `Benchmarks/gpu/run-on-gpu.sh --find-gpu`: with no GPU registered, it finds a vendor OpenCL library in a
/// folder the ICD loader does not search, registers it and sees the GPU; with none there, it says what it
/// searched. The "vendor library" is Oclgrind's ICD (a simulated device of type GPU) under NVIDIA's file name.
final class GPUBundleTests: XCTestCase {
    static let oclgrind = "/usr/lib/oclgrind/liboclgrind-rt-icd.so"
    static let pocl = "/etc/OpenCL/vendors/pocl.icd"

    /// Runs the script's `--find-gpu` with PoCL as the only registered platform and `dirs` searched.
    func findGPU(searching dirs: [URL], in folder: URL) throws -> (status: Int32, output: String, out: URL) {
        let vendors = folder.appendingPathComponent("registered")
        try FileManager.default.createDirectory(at: vendors, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Self.pocl, toPath: vendors.appendingPathComponent("pocl.icd").path)
        let out = folder.appendingPathComponent("out")
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Benchmarks/gpu/run-on-gpu.sh")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script.path, "--find-gpu"]
        var environment = ProcessInfo.processInfo.environment
        environment["HRTRAIN"] = hrtrainExecutable().path
        environment["OUT"] = out.path
        environment["OCL_ICD_VENDORS"] = vendors.path
        environment["GPU_LIBRARY_DIRS"] = dirs.map(\.path).joined(separator: " ")
        environment["GPU_SEARCH_LDCONFIG"] = "0"
        process.environment = environment
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self), out)
    }

    func requirements() throws {
        for path in [Self.oclgrind, Self.pocl] where !FileManager.default.fileExists(atPath: path) {
            throw XCTSkip("needs \(path) (Debian packages oclgrind and pocl-opencl-icd)")
        }
    }

    func testFindsAndRegistersAnUnregisteredVendorLibrary() throws {
        try requirements()
        let folder = try temporaryDirectory(self)
        let driver = folder.appendingPathComponent("usr-local-nvidia-lib64")
        try FileManager.default.createDirectory(at: driver, withIntermediateDirectories: true)
        let library = driver.appendingPathComponent("libnvidia-opencl.so.1")
        try FileManager.default.createSymbolicLink(atPath: library.path, withDestinationPath: Self.oclgrind)
        let empty = folder.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)

        let (status, output, out) = try findGPU(searching: [empty, driver], in: folder)
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("GPU: none among the OpenCL devices"), output)
        XCTAssertTrue(output.contains("found \(library.path)"), output)
        XCTAssertTrue(output.contains("Oclgrind Simulator"), output)
        XCTAssertTrue(output.contains("GPU: listed after registering"), output)
        let registered = try String(
            contentsOf: out.appendingPathComponent("icd-vendors/found-1-libnvidia-opencl.so.1.icd"), encoding: .utf8)
        XCTAssertEqual(registered, library.path + "\n")
        XCTAssertTrue(
            FileManager.default.fileExists(atPath: out.appendingPathComponent("icd-vendors/pocl.icd").path),
            "the platforms registered before are kept")
    }

    func testSaysWhatItSearchedWhenThereIsNoLibrary() throws {
        try requirements()
        let folder = try temporaryDirectory(self)
        let empty = folder.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let (status, output, _) = try findGPU(searching: [empty], in: folder)
        XCTAssertEqual(status, 3, output)
        XCTAssertTrue(output.contains("searching for libnvidia-opencl.so.1"), output)
        XCTAssertTrue(output.contains("in: \(empty.path)"), output)
        XCTAssertTrue(output.contains("found no vendor OpenCL library"), output)
    }
}
