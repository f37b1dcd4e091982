import Foundation
import HRTrain

// libFuzzer targets for hrtrain's readers, one binary chosen by $HRTRAIN_FUZZ_TARGET:
// `csv`, `npy`, `hdf5` (readTable on the input written as a file of that format) and `model` (the bytes as a
// safetensors file, decoded as a model and as a checkpoint). Every input must end in a value or a thrown
// error: a trap, a crash or a sanitizer report is a finding. Built by Fuzz/run.sh with -sanitize=fuzzer.

/// The target named in the environment.
private let target = ProcessInfo.processInfo.environment["HRTRAIN_FUZZ_TARGET"] ?? "csv"

/// A private folder for the files the readers open.
private let folder: URL = {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent(
        "hrtrain-fuzz-\(target)-\(ProcessInfo.processInfo.processIdentifier)")
    try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}()

/// Writes `bytes` to `name` in the private folder and returns its URL.
private func file(_ name: String, _ bytes: UnsafeRawBufferPointer) -> URL {
    let url = folder.appendingPathComponent(name)
    FileManager.default.createFile(atPath: url.path, contents: Data(bytes))
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
        try? FileManager.default.removeItem(at: sidecarURL)
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
