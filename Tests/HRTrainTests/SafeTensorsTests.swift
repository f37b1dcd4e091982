import Foundation
import XCTest

@testable import HRTrain

/// Round trips, hostile headers and Python interoperability of the safetensors reader and writer.
final class SafeTensorsTests: XCTestCase {
    /// A file with tensors of every dtype, an empty one and a scalar, plus metadata needing escapes.
    private let sample = SafeTensorsFile(
        tensors: [
            "dense_1/kernel": SafeTensor(shape: [2, 3], floats: [1, -2, 0.1, .pi, -0.0, .leastNonzeroMagnitude]),
            "dense_1/bias": SafeTensor(shape: [3], doubles: [1e300, -1, 0.1]),
            "step": SafeTensor(shape: [], int64s: [-42]),
            "empty": SafeTensor(shape: [0, 4], floats: []),
        ],
        metadata: ["format": "hrtrain", "note": "quote \" backslash \\ tab \t ünïcode ☃ \u{1}"])

    /// A file made of a header length, a header and data bytes.
    private func fixture(_ header: String, data: [UInt8] = [], length: UInt64? = nil) -> [UInt8] {
        let bytes = Array(header.utf8)
        return withUnsafeBytes(of: (length ?? UInt64(bytes.count)).littleEndian, Array.init) + bytes + data
    }

    /// The message of the DataError thrown when decoding `bytes`.
    private func failure(_ bytes: [UInt8], line: UInt = #line) -> String {
        do {
            _ = try SafeTensorsFile(decoding: bytes, file: "model.safetensors")
            XCTFail("decoding succeeded", line: line)
        } catch let error as DataError {
            XCTAssertEqual(error.file, "model.safetensors", line: line)
            return error.message
        } catch {
            XCTFail("unexpected error \(error)", line: line)
        }
        return ""
    }

    func testRoundTripIsExactAndDeterministic() throws {
        let bytes = sample.encoded()
        XCTAssertEqual(bytes, sample.encoded())
        let headerLength = Int(bytes[0]) | Int(bytes[1]) << 8
        XCTAssertEqual(headerLength % 8, 0)
        let header = String(decoding: bytes[8..<8 + headerLength], as: UTF8.self)
        XCTAssertTrue(header.hasPrefix("{\"__metadata__\":{\"format\":\"hrtrain\",\"note\":"), header)
        let order = ["\"dense_1/bias\"", "\"dense_1/kernel\"", "\"empty\"", "\"step\""].map {
            header.range(of: $0)!.lowerBound
        }
        XCTAssertEqual(order, order.sorted())

        let decoded = try SafeTensorsFile(decoding: bytes, file: "memory")
        XCTAssertEqual(decoded, sample)
        XCTAssertEqual(
            decoded.tensors["dense_1/kernel"]?.floats?.map(\.bitPattern),
            ([1, -2, 0.1, .pi, -0.0, .leastNonzeroMagnitude] as [Float]).map(\.bitPattern))
        XCTAssertEqual(decoded.tensors["dense_1/bias"]?.doubles, [1e300, -1, 0.1])
        XCTAssertEqual(decoded.tensors["step"]?.int64s, [-42])
        XCTAssertNil(decoded.tensors["step"]?.floats)
        XCTAssertEqual(decoded.tensors["empty"]?.shape, [0, 4])

        let url = FileManager.default.temporaryDirectory.appendingPathComponent(
            "hrtrain-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try sample.write(to: url)
        XCTAssertEqual(try SafeTensorsFile.read(from: url), sample)
    }

    func testHostileAndCorruptFilesAreRejectedWithClearMessages() {
        let tensor = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        let eight = [UInt8](repeating: 0, count: 8)
        let cases: [([UInt8], String)] = [
            ([1, 2, 3], "3 bytes, shorter than the 8-byte header length"),
            (
                fixture(tensor, data: eight, length: 1000),
                "header length 1000 exceeds the 62 bytes after the length field"
            ),
            (fixture(tensor, length: UInt64.max), "is larger than the 100000000-byte limit"),
            (fixture("{\"a\":\"\u{FF}\"}").enumerated().map { $0.offset == 14 ? 0xFF : $0.element }, "not valid UTF-8"),
            (fixture(#"[1,2]"#), "does not start with '{'"),
            (fixture(#"{"a":{"dtype":"F32""#), "invalid JSON header at byte 19: expected ',' or '}'"),
            (fixture(#"{} x"#), "unexpected text after the JSON value"),
            (fixture(#"{"a":[1]}"#), "tensor \"a\": entry is not an object"),
            (
                fixture(#"{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]),
                "unsupported dtype \"F16\" (supported: F32, F64, I64)"
            ),
            (
                fixture(#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, data: eight),
                "\"shape\" holds -2, not a non-negative integer"
            ),
            (
                fixture(#"{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}"#, data: eight),
                "holds 2.0, not a non-negative integer"
            ),
            (
                fixture(#"{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#, data: eight),
                "is too large"
            ),
            (
                fixture(#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: eight),
                "span 8 bytes, but F32 [3] needs 12"
            ),
            (
                fixture(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, data: eight),
                "is not [begin, end] with begin ≤ end"
            ),
            (
                fixture(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, data: eight),
                "extend past the 8 bytes of data"
            ),
            (
                fixture(
                    #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"#
                        + #""b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                    data: eight), "tensors \"a\" and \"b\" overlap"
            ),
            (
                fixture(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: eight),
                "bytes 0..<4 of the data belong to no tensor"
            ),
            (fixture(tensor, data: eight + [1]), "bytes 8..<9 at the end of the data belong to no tensor"),
            (
                fixture(
                    #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"#
                        + #""a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                    data: eight), "duplicate key \"a\""
            ),
            (fixture(#"{"__metadata__":{"epoch":3}}"#), "metadata value for \"epoch\" is not a string"),
            (fixture(#"{"__metadata__":[]}"#), "\"__metadata__\" is not an object"),
            (
                fixture(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}}"#, data: eight),
                "unexpected key \"extra\""
            ),
            (fixture(#"{"a":{"dtype":"F32","data_offsets":[0,8]}}"#, data: eight), "missing or non-array \"shape\""),
            (
                fixture(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}}"#, data: eight),
                "data_offsets [0] is not [begin, end]"
            ),
            (fixture("{\"a\":" + String(repeating: "[", count: 10_000)), "nesting deeper than 64 levels"),
            (fixture(#"{"a\ud800":1}"#), "unpaired surrogate"),
            (fixture(#"{"a":{"dtype":"F32","shape":[01],"data_offsets":[0,4]}}"#), "leading zero in a number"),
        ]
        for (bytes, expected) in cases {
            let message = failure(bytes)
            XCTAssertTrue(message.contains(expected), "\"\(message)\" lacks \"\(expected)\"")
        }
    }

    /// A header of more values than the limit is refused before it is held in memory; one at the limit is read.
    func testHeadersOfTooManyValuesAreRefused() throws {
        func file(values: Int) -> [UInt8] {
            // `{`, the "__metadata__" object and its values: 1 + 1 + (values - 2).
            let pairs = (0..<(values - 2)).map { "\"k\($0)\":\"\"" }.joined(separator: ",")
            return fixture("{\"__metadata__\":{\(pairs)}}")
        }
        let atTheLimit = try SafeTensorsFile(decoding: file(values: 500), file: "m", maximumValues: 500)
        XCTAssertEqual(atTheLimit.metadata.count, 498)
        do {
            _ = try SafeTensorsFile(decoding: file(values: 501), file: "model.safetensors", maximumValues: 500)
            XCTFail("a header of 501 values was read under a limit of 500")
        } catch let error as DataError {
            XCTAssertEqual(error.file, "model.safetensors")
            XCTAssertTrue(error.message.contains("more than 500 JSON values"), error.message)
        }
        XCTAssertEqual(SafeTensorsFile.maximumHeaderValues, 1_000_000)
    }

    /// Every truncation and many single-byte corruptions of a valid file decode or throw; none traps.
    func testCorruptedBytesNeverCrash() {
        let bytes = sample.encoded()
        for length in 0..<bytes.count { _ = try? SafeTensorsFile(decoding: Array(bytes.prefix(length)), file: "t") }
        var state: UInt64 = 7
        for _ in 0..<3000 {
            state = state &* 6_364_136_223_846_793_005 &+ 1
            var corrupted = bytes
            corrupted[Int(state >> 33) % bytes.count] = UInt8(truncatingIfNeeded: state >> 17)
            _ = try? SafeTensorsFile(decoding: corrupted, file: "t")
        }
    }

    func testPaddedHeaderAndUnicodeEscapesAreAccepted() throws {
        let bytes = fixture(
            #"{"\u00e9t\u00e9":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}    "#, data: [5, 0, 0, 0, 0, 0, 0, 0])
        let file = try SafeTensorsFile(decoding: bytes, file: "t")
        XCTAssertEqual(file.tensors["été"]?.int64s, [5])
    }

    // MARK: - Python

    /// Runs `python -c script` with the interpreter in HRTRAIN_PYTHON (default `python3`); nil if it fails.
    private func python(_ script: String, _ arguments: [String] = []) -> (status: Int32, output: String)? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments =
            [ProcessInfo.processInfo.environment["HRTRAIN_PYTHON"] ?? "python3", "-c", script] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        guard (try? process.run()) != nil else { return nil }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    /// Checks both directions against `safetensors.numpy`; skipped (with the reason) without it.
    func testInteroperatesWithPythonSafetensors() throws {
        guard let probe = python("import safetensors.numpy, numpy"), probe.status == 0 else {
            throw XCTSkip("python3 with the safetensors and numpy packages is not available (set HRTRAIN_PYTHON)")
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("hrtrain-py-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let ours = directory.appendingPathComponent("ours.safetensors")
        let theirs = directory.appendingPathComponent("theirs.safetensors")
        try sample.write(to: ours)
        let script = """
            import sys, numpy as np
            from safetensors.numpy import load_file, save_file
            from safetensors import safe_open
            t = load_file(sys.argv[1])
            assert t["dense_1/kernel"].dtype == np.float32 and t["dense_1/kernel"].shape == (2, 3)
            assert t["dense_1/kernel"][0, 2] == np.float32(0.1) and t["dense_1/bias"][0] == 1e300
            assert t["step"].dtype == np.int64 and t["step"].shape == () and t["step"] == -42
            assert t["empty"].shape == (0, 4)
            with safe_open(sys.argv[1], "np") as f: assert f.metadata()["format"] == "hrtrain"
            save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3) / 7, "d": np.array([0.1, 2.0]),
                       "n": np.array([[-1]], dtype=np.int64)}, sys.argv[2], metadata={"by": "python"})
            """
        let run = python(script, [ours.path, theirs.path])
        XCTAssertEqual(run?.status, 0, run?.output ?? "")
        let read = try SafeTensorsFile.read(from: theirs)
        XCTAssertEqual(read.metadata, ["by": "python"])
        XCTAssertEqual(read.tensors["w"]?.shape, [2, 3])
        XCTAssertEqual(read.tensors["w"]?.floats, (0..<6).map { Float($0) / 7 })
        XCTAssertEqual(read.tensors["d"]?.doubles, [0.1, 2.0])
        XCTAssertEqual(read.tensors["n"]?.int64s, [-1])
    }
}
