import Foundation
import HRTrain

#if canImport(Glibc)
    import Glibc
#endif

// libFuzzer targets for hrtrain's readers, one binary chosen by $HRTRAIN_FUZZ_TARGET:
// `csv`, `npy`, `hdf5` (readTable on the input written as a file of that format) and `model` (the bytes as a
// safetensors file, decoded as a model and as a checkpoint). Every input must end in a value or a thrown
// error: a trap, a crash or a sanitizer report is a finding. Built by Fuzz/run.sh with -sanitize=fuzzer.

/// The target named in the environment.
private let target = ProcessInfo.processInfo.environment["HRTRAIN_FUZZ_TARGET"] ?? "csv"

/// A private folder for the files the readers open (in /dev/shm when it exists: no disk traffic).
private let folder: URL = {
    let base =
        FileManager.default.fileExists(atPath: "/dev/shm")
        ? URL(fileURLWithPath: "/dev/shm") : FileManager.default.temporaryDirectory
    let url = base.appendingPathComponent("hrtrain-fuzz-\(target)-\(ProcessInfo.processInfo.processIdentifier)")
    try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}()

/// Writes `bytes` to `name` in the private folder (plain POSIX calls: fast) and returns its URL.
private func file(_ name: String, _ bytes: UnsafeRawBufferPointer) -> URL {
    let url = folder.appendingPathComponent(name)
    let descriptor = open(url.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    precondition(descriptor >= 0, "cannot write \(url.path)")
    var offset = 0
    while offset < bytes.count {
        let written = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
        precondition(written > 0, "cannot write \(url.path)")
        offset += written
    }
    close(descriptor)
    return url
}

/// One input: never throws out, never traps.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    switch target {
    case "csv":
        _ = try? readTable(file("input.csv", bytes))
    case "npy":
        // The first byte is the length of the `.columns` sidecar that follows it (0: none); the rest is the array.
        let sidecarURL = folder.appendingPathComponent("input.npy.columns")
        unlink(sidecarURL.path)
        var body = bytes
        if let length = bytes.first.map(Int.init), length > 0, length < bytes.count {
            _ = file("input.npy.columns", UnsafeRawBufferPointer(rebasing: bytes[1..<1 + length]))
            body = UnsafeRawBufferPointer(rebasing: bytes[(1 + length)...])
        } else if !bytes.isEmpty {
            body = UnsafeRawBufferPointer(rebasing: bytes[1...])
        }
        _ = try? readTable(file("input.npy", body))
    case "hdf5":
        _ = try? readTable(file("input.h5", bytes))
    case "model":
        let url = file("input.safetensors", bytes)
        if let decoded = try? SafeTensorsFile(decoding: Array(bytes), file: url.path) {
            _ = try? Model(file: decoded, path: url.path)
        }
        _ = try? Checkpoint.read(from: url)
    default:
        fatalError("unknown HRTRAIN_FUZZ_TARGET \(target): use csv, npy, hdf5 or model")
    }
    return 0
}

/// libFuzzer's driver, from its runtime.
@_silgen_name("LLVMFuzzerRunDriver")
private func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

/// The entry point SwiftPM gives an executable target (`main` is an alias of it): runs libFuzzer's driver.
@_cdecl("hrtrain_fuzz_main")
public func fuzzMain(
    _ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    var count = argc
    var arguments = argv
    return runFuzzerDriver(&count, &arguments) { fuzzOneInput($0, $1) }
}
