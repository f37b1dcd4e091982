import Foundation
import XCTest

@testable import HRTrain

#if canImport(Glibc)
    import Glibc
#endif

/// Round trips and bad-input messages of the CSV, .npy and HDF5 table formats, and atomic writes.
final class DataFormatTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("hrtrain-data-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try FileManager.default.removeItem(at: directory)
    }

    /// A path in the test directory.
    private func file(_ name: String) -> URL { directory.appendingPathComponent(name) }

    /// Writes `text` to `name` and returns its URL.
    private func write(_ text: String, to name: String) throws -> URL {
        let url = file(name)
        try Data(text.utf8).write(to: url)
        return url
    }

    /// The DataError thrown by `body`, failing the test if it throws nothing else.
    private func dataError<T>(_ body: () throws -> T, line: UInt = #line) -> DataError? {
        do {
            _ = try body()
            XCTFail("expected a DataError", line: line)
        } catch let error as DataError {
            return error
        } catch {
            XCTFail("expected a DataError, got \(error)", line: line)
        }
        return nil
    }

    /// Floats that are hard to print and parse: signed zeros, subnormals, extremes, ties, random bits.
    private func awkwardTable(rows: Int = 64) -> Table {
        var values: [Float] = [
            0, -0.0, 1, -1, 0.1, 1.0 / 3, .pi, .leastNonzeroMagnitude, -.leastNormalMagnitude,
            Float.leastNormalMagnitude.nextDown, .greatestFiniteMagnitude, -.greatestFiniteMagnitude, 16_777_218,
            3.4e38, 1e10, 123_456.79, 9.999999e-5, 0.000_123_4,
        ]
        var state: UInt32 = 12345
        while values.count < rows * 3 {
            state = state &* 1_664_525 &+ 1_013_904_223
            let candidate = Float(bitPattern: state)
            if candidate.isFinite { values.append(candidate) }
        }
        return Table(
            columnNames: ["hr_all_x", "hr_all_y", "truth pt"], rowCount: rows, values: Array(values.prefix(rows * 3)))
    }

    /// Asserts two tables have the same names, shape and bit-identical values.
    private func assertBitExact(_ read: Table, _ written: Table, line: UInt = #line) {
        XCTAssertEqual(read.columnNames, written.columnNames, line: line)
        XCTAssertEqual(read.rowCount, written.rowCount, line: line)
        XCTAssertEqual(read.values.map(\.bitPattern), written.values.map(\.bitPattern), line: line)
    }

    // MARK: - Splits

    /// The validation rows are Keras' `validation_split`: training = floor(n · (1 − v)) (its
    /// `train_validation_split`), the rest validation; values from Python's `int(math.floor(n * (1.0 - 0.2)))`.
    func testValidationSplitIsKerasTrainValidationSplit() throws {
        for (rows, training) in [(1001, 800), (2_275_902, 1_820_721), (1000, 800), (183, 146), (5, 4)] {
            let split = try SampleSplit(
                rows: rows, file: "f", testFraction: 0, separateTest: true, validationSplit: 0.2)
            XCTAssertEqual(split.trainingRows, training, "\(rows) rows")
            XCTAssertEqual(split.validationRows, rows - training, "\(rows) rows")
        }
        let none = try SampleSplit(rows: 7, file: "f", testFraction: 0, separateTest: true, validationSplit: 0)
        XCTAssertEqual([none.trainingRows, none.validationRows], [7, 0])
    }

    // MARK: - Round trips

    func testAllFormatsRoundTripBitExact() throws {
        let table = awkwardTable()
        for name in ["t.csv", "t.npy", "t.h5", "t.HDF5"] {
            try writeTable(table, to: file(name))
            assertBitExact(try readTable(file(name)), table)
        }
        XCTAssertEqual(try String(contentsOf: file("t.npy.columns"), encoding: .utf8), "hr_all_x\nhr_all_y\ntruth pt\n")
    }

    func testCSVParsesWhitespaceCRLFBlankLinesBOMAndQuotedHeader() throws {
        let url = try write("\u{FEFF} \"a\" ,\tb \r\n 1 , 2.5e1 \r\n\r\n  \n-3,+4E-1\n.5,7.", to: "w.csv")
        let table = try readTable(url)
        XCTAssertEqual(table.columnNames, ["a", "b"])
        XCTAssertEqual(table.values, [1, 25, -3, 0.4, 0.5, 7])
    }

    func testCSVLoneRowWithoutNewlineAndSpecialForms() throws {
        let url = try write("a,b,c,d\n0x1p-2,1e-50,-0,12345678901234567890123", to: "s.csv")
        let table = try readTable(url)
        XCTAssertEqual(table.values.map(\.bitPattern), ([0.25, 0, -0.0, 1.2345679e22] as [Float]).map(\.bitPattern))
    }

    /// The fast path agrees bit for bit with glibc's correctly rounded strtof, midpoints included.
    func testNumberParsingMatchesStrtof() {
        var cases = [
            "1.00000005960464478", "1.0000000596046448", "0.1", "3.4028235e38", "3.4028236e38", "1.1754942e-38",
            "7.038531e-26", "9007199254740993", "1e22", "1e23", "4.9e-324", "0.000000000000000000001",
            "16777217", "16777219", "-2.5", "1234567.8125", "0.30000001192092896",
        ]
        var state: UInt64 = 42
        func next() -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return state >> 33
        }
        for _ in 0..<20_000 {
            let digits = String(next() % 10_000_000_000_000_000_000).prefix(Int(next() % 19) + 1)
            let point = Int(next()) % (digits.count + 1)
            let text = digits.prefix(point) + "." + digits.dropFirst(point) + "e" + String(Int(next() % 50) - 25)
            cases.append(String(text))
            cases.append(Float(bitPattern: UInt32(truncatingIfNeeded: next() << 1 | next() & 1)).description)
        }
        for text in cases {
            let bytes = Array(text.utf8)
            let expected = strtof(text, nil)
            let parsed = bytes.withUnsafeBufferPointer { buffer -> Float? in
                var position = 0
                return CSVFormat.parseNumber(buffer.baseAddress!, &position, buffer.count)
            }
            if expected.isNaN {
                XCTAssertTrue(parsed?.isNaN ?? false, text)
            } else {
                XCTAssertEqual(parsed?.bitPattern, expected.bitPattern, text)
            }
        }
    }

    func testCSVLineNumbersAcrossParallelChunks() throws {
        // About 3 MB, so the body is parsed in several chunks; blank lines must not shift the count.
        var text = "a,b\n"
        for row in 0..<150_000 { text += row % 1000 == 999 ? "\n" : "\(row),0.5\n" }
        text += "1,oops\n"
        let url = try write(text, to: "long.csv")
        let error = dataError { try readTable(url) }
        XCTAssertEqual(error?.description, "\(url.path):150002: column 2 (\"b\"): cannot parse \"oops\" as a number")

        let good = try write(String(text.dropLast(7)), to: "long-good.csv")
        let table = try readTable(good)
        XCTAssertEqual(table.rowCount, 150_000 - 150)
        XCTAssertEqual(table.values[2 * 998], 998)
        XCTAssertEqual(table.values[2 * 999], 1000)
        XCTAssertEqual(table.values.last, 0.5)
    }

    // MARK: - CSV errors

    func testCSVErrorsNameFileLineAndColumn() throws {
        let cases: [(String, String)] = [
            ("", "the file is empty (expected a header row of column names)"),
            ("a,b\n", "no data rows after the header"),
            ("a,b", "no data rows after the header"),
            ("a,b\n\n\n", "no data rows after the header"),
            ("a,,b\n1,2,3\n", ":1: column 2: empty column name in the header"),
            ("a,b,a\n1,2,3\n", ":1: column 3 (\"a\"): duplicate column name (also column 1)"),
            ("a,b\n1,2\n3\n", ":3: expected 2 fields (as in the header), found 1"),
            ("a,b\n1,2\n3,4,5\n", ":3: expected 2 fields (as in the header), found 3"),
            ("x,hr_all_x\n1,2\n1,1.2.3\n", ":3: column 2 (\"hr_all_x\"): cannot parse \"1.2.3\" as a number"),
            ("a,b\n1, \n", ":2: column 2 (\"b\"): empty field (expected a number)"),
            ("a,b\n1,2 3\n", ":2: column 2 (\"b\"): cannot parse \"2 3\" as a number"),
            ("a,b\n\"1\",2\n", ":2: column 1 (\"a\"): cannot parse \"\"1\"\" as a number"),
            ("a,b\n1,nan\n", ":2: column 2 (\"b\"): value \"nan\" is not finite"),
            ("a,b\n1,2\n-inf,2\n", ":3: column 1 (\"a\"): value \"-inf\" is not finite"),
            ("a,b\n1e39,2\n", ":2: column 1 (\"a\"): value \"1e39\" is not finite"),
        ]
        for (index, (text, expected)) in cases.enumerated() {
            let url = try write(text, to: "bad\(index).csv")
            let description = dataError { try readTable(url) }?.description ?? ""
            XCTAssertTrue(description.hasPrefix(url.path), description)
            XCTAssertTrue(description.contains(expected), "\(description) lacks \(expected)")
        }
    }

    func testCSVDropNonFiniteCountsRows() throws {
        let url = try write("a,b\n1,2\nnan,3\n4,inf\n5,6\n", to: "nan.csv")
        let result = try readTableWithReport(url, options: ReadOptions(dropNonFinite: true))
        XCTAssertEqual(result.droppedRowCount, 2)
        XCTAssertEqual(result.table.values, [1, 2, 5, 6])
        let allBad = try write("a\nnan\ninf\n", to: "allnan.csv")
        let error = dataError { try readTable(allBad, options: ReadOptions(dropNonFinite: true)) }
        XCTAssertEqual(error?.description, "\(allBad.path): all 2 data rows hold NaN or infinite values")
        // Dropping never hides a malformed row.
        let ragged = try write("a,b\nnan\n", to: "raggednan.csv")
        XCTAssertEqual(
            dataError { try readTable(ragged, options: ReadOptions(dropNonFinite: true)) }?.message,
            "expected 2 fields (as in the header), found 1")
    }

    func testCSVWriterRejectsNamesItCannotRepresent() {
        for name in ["a,b", "", " a", "q\"", "x\ny"] {
            let table = Table(columnNames: [name], rowCount: 1, values: [1])
            XCTAssertEqual(dataError { try writeTable(table, to: file("n.csv")) }?.column, 1, name)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: file("n.csv").path))
    }

    // MARK: - Formats, options and column names

    func testFormatFromExtensionAndOptionInMessages() throws {
        XCTAssertEqual(try TableFormat(url: URL(fileURLWithPath: "a/b.CSV")), .csv)
        XCTAssertEqual(try TableFormat(url: URL(fileURLWithPath: "b.hdf5")), .hdf5)
        let error = dataError {
            try readTable(URL(fileURLWithPath: "/data/events.parquet"), options: ReadOptions(field: .data))
        }
        XCTAssertEqual(
            error?.description,
            "data: /data/events.parquet: unknown table format (extension \".parquet\"); use .csv, .npy, .h5 or .hdf5")
        XCTAssertEqual(
            dataError { try writeTable(awkwardTable(rows: 1), to: file("noext")) }?.message,
            "unknown table format (no extension); use .csv, .npy, .h5 or .hdf5")
    }

    func testColumnSelectionAndUnknownColumnSuggestion() throws {
        let url = file("sel.csv")
        try writeTable(awkwardTable(rows: 4), to: url)
        let table = try readTable(url, options: ReadOptions(columns: ["truth pt", "hr_all_x"]))
        XCTAssertEqual(table.columnNames, ["truth pt", "hr_all_x"])
        XCTAssertEqual(table.values[0], awkwardTable(rows: 4).values[2])
        let error = dataError { try readTable(url, options: ReadOptions(columns: ["hr_all_z"], field: .features)) }
        XCTAssertEqual(
            error?.description,
            "features: \(url.path): no column named \"hr_all_z\"; did you mean \"hr_all_x\"? Available columns: "
                + "hr_all_x, hr_all_y, truth pt"
        )
        XCTAssertNil(DataError.closestName(to: "energy", in: ["hr_all_x", "truth pt"]))
    }

    // MARK: - NPY

    /// A hand-made .npy file: magic, version, header length, header, data.
    private func npy(_ header: String, version: UInt8 = 1, data: [UInt8]) -> Data {
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [version, 0]
        let length = header.utf8.count
        bytes +=
            version == 1
            ? [UInt8(length & 0xFF), UInt8(length >> 8)] : (0..<4).map { UInt8((length >> (8 * $0)) & 0xFF) }
        return Data(bytes + Array(header.utf8) + data)
    }

    func testNPYHeaderIsNumpyCompatible() throws {
        try writeTable(awkwardTable(rows: 5), to: file("h.npy"))
        let bytes = [UInt8](try Data(contentsOf: file("h.npy")))
        let headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
        XCTAssertEqual((10 + headerLength) % 64, 0)
        XCTAssertEqual(bytes[6...7], [1, 0])
        let header = String(decoding: bytes[10..<10 + headerLength], as: UTF8.self)
        XCTAssertTrue(header.hasPrefix("{'descr': '<f4', 'fortran_order': False, 'shape': (5, 3), }"), header)
        XCTAssertTrue(header.hasSuffix(" \n"))
        XCTAssertEqual(bytes.count, 10 + headerLength + 5 * 3 * 4)
    }

    func testNPYReadsFloat64Version2AndDefaultNames() throws {
        let values: [Double] = [1.5, -2, 0.1, 1e300]
        let data = values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
        try npy("{\"descr\":\"<f8\",\"fortran_order\":False,\"shape\":(2,2)}\n", version: 2, data: data).write(
            to: file("d.npy"))
        XCTAssertThrowsError(try readTable(file("d.npy")))  // 1e300 is not finite as Float32
        let result = try readTableWithReport(file("d.npy"), options: ReadOptions(dropNonFinite: true))
        XCTAssertEqual(result.table.columnNames, ["c0", "c1"])
        XCTAssertEqual(result.table.values, [1.5, -2])
        XCTAssertEqual(result.droppedRowCount, 1)
    }

    func testNPYErrors() throws {
        let four = [UInt8](repeating: 0, count: 16)
        let cases: [(Data, String)] = [
            (Data("PK\u{3}\u{4}zipfile".utf8), "not a NumPy .npy file"),
            (
                npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", data: four),
                "Fortran (column-major) order"
            ),
            (npy("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 1), }", data: four), "unsupported dtype '<i8'"),
            (npy("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }", data: four), "unsupported dtype '>f4'"),
            (npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", data: four), "structured dtype"),
            (
                npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", data: four),
                "expected a 2-D array (rows, columns), found shape (4,)"
            ),
            (
                npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", data: four),
                "truncated data: shape (3, 2) needs 24 bytes, the file holds 16"
            ),
            (
                npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }", data: four),
                "8 unexpected bytes after the data"
            ),
            (npy("{'descr': '<f4', 'shape': (2, 2), }", data: four), "the .npy header has no 'fortran_order'"),
            (
                npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2)", data: four),
                "cannot parse the .npy header"
            ),
            (
                npy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999, 2), }", data: four),
                "cannot parse"
            ),
            (
                npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }", data: four),
                "too large"
            ),
            (Data([0x93] + Array("NUMPY".utf8) + [1, 0, 200, 0]), "truncated .npy header"),
            (Data([0x93] + Array("NUMPY".utf8) + [9, 0, 0, 0]), "unsupported .npy version 9.0"),
        ]
        for (index, (bytes, expected)) in cases.enumerated() {
            let url = file("bad\(index).npy")
            try bytes.write(to: url)
            let description = dataError { try readTable(url) }?.description ?? ""
            XCTAssertTrue(description.hasPrefix(url.path + ": "), description)
            XCTAssertTrue(description.contains(expected), "\(description) lacks \(expected)")
        }
    }

    func testNPYSidecarMustMatchColumnCount() throws {
        try writeTable(awkwardTable(rows: 2), to: file("s.npy"))
        try Data("only\none\n".utf8).write(to: file("s.npy.columns"))
        XCTAssertEqual(
            dataError { try readTable(file("s.npy")) }?.description,
            "\(file("s.npy.columns").path): holds 2 column names but the array has 3 columns")
    }

    // MARK: - HDF5

    /// Builds an HDF5 file with HDF5File's writing steps.
    private func hdf5(_ name: String, _ build: (HDF5File) throws -> Void) throws -> URL {
        let url = file(name)
        try HDF5Format.locked {
            let file = try HDF5File(creating: url, reportingAs: url)
            try build(file)
            try file.close()
        }
        return url
    }

    func testHDF5ReadsColumnGroupsAndCompanionNames() throws {
        let url = try hdf5("cols.h5") { file in
            try file.writeFloats("/events/pt", shape: [3], [1, 2, 3])
            try file.writeFloats("/events/eta", shape: [3], [-1, 0, 1])
            try file.writeStrings(["ignored"], object: "/events/label", attribute: nil)
            try file.writeFloats("/matrix", shape: [2, 2], [1, 2, 3, 4])
            try file.writeStrings(["u", "v"], object: "/matrix_columns", attribute: nil)
            try file.writeFloats("/nested/m", shape: [1, 2], [5, 6])
            try file.writeStrings(["p", "q"], object: "/nested/columns", attribute: nil)
        }
        let group = try readTable(url, options: ReadOptions(dataset: "events"))
        XCTAssertEqual(group.columnNames, ["eta", "pt"])  // name order: h5py does not track creation order
        XCTAssertEqual(group.values, [-1, 1, 0, 2, 1, 3])
        let matrix = try readTable(url, options: ReadOptions(dataset: "matrix"))
        XCTAssertEqual(matrix.columnNames, ["u", "v"])
        XCTAssertEqual(try readTable(url, options: ReadOptions(dataset: "/nested/m")).columnNames, ["p", "q"])

        let root = try hdf5("root.h5") { file in
            try file.writeFloats("x", shape: [2], [1, 2])
            try file.writeFloats("y", shape: [2], [3, 4])
        }
        let table = try readTable(root)  // no "data": the root's 1-D datasets are the columns
        XCTAssertEqual(table.columnNames, ["x", "y"])
        XCTAssertEqual(table.values, [1, 3, 2, 4])
    }

    func testHDF5Errors() throws {
        let notHDF5 = try write("a,b\n1,2\n", to: "text.h5")
        let ragged = try hdf5("ragged.h5") { file in
            try file.writeFloats("g/a", shape: [3], [1, 2, 3])
            try file.writeFloats("g/b", shape: [2], [1, 2])
        }
        let ranks = try hdf5("ranks.h5") { file in
            try file.writeFloats("data", shape: [2, 2, 2], [Float](repeating: 0, count: 8))
            try file.writeFloats("vector", shape: [3], [1, 2, 3])
            try file.writeFloats("m", shape: [2, 3], [Float](repeating: 0, count: 6))
            try file.writeStrings(["one"], object: "m", attribute: "columns")
            try file.writeStrings(["s"], object: "strings", attribute: nil)
        }
        let cases: [(URL, String?, String)] = [
            (file("missing.h5"), nil, "no such file"),
            (notHDF5, nil, "not an HDF5 file"),
            (ragged, "g", "columns of different lengths in group \"g\": \"a\" has 3 rows, \"b\" has 2"),
            (ragged, "nope", "no dataset or group \"nope\""),
            (ragged, nil, "the file root holds: g"),
            (ranks, nil, "dataset \"data\" has rank 3 (shape [2, 2, 2]); expected 2"),
            (ranks, "vector", "has rank 1 (shape [3]); expected 2 (rows × columns); to read 1-D datasets as columns"),
            (ranks, "m", "attribute \"columns\" of \"m\" holds 1 column names but \"m\" has 3 columns"),
            (ranks, "strings", "dataset \"strings\" does not hold numbers"),
            (ranks, "/", "dataset \"/data\" in table group \"/\" has rank 3"),
        ]
        for (url, dataset, expected) in cases {
            let description =
                dataError { try readTable(url, options: ReadOptions(dataset: dataset)) }?.description ?? ""
            XCTAssertTrue(description.hasPrefix(url.path + ": "), description)
            XCTAssertTrue(description.contains(expected), "\(description) lacks \(expected)")
        }
    }

    // MARK: - Atomic writes

    /// The names in the test directory.
    private func listing() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
    }

    func testFailedWriteLeavesTargetUntouchedAndNoTemporaryFile() throws {
        struct Interrupted: Error {}
        let target = try write("old content\n", to: "model.csv")
        let sidecar = try write("old names\n", to: "second.txt")
        XCTAssertThrowsError(
            try AtomicFile.write(to: target) { writer in
                try writer.write([UInt8](repeating: 65, count: 3 << 20))
                throw Interrupted()
            })
        XCTAssertThrowsError(
            try AtomicFile.write([
                (target, { try $0.write("new content\n") }),
                (sidecar, { _ in throw Interrupted() }),
            ]))
        XCTAssertThrowsError(try AtomicFile.write(to: file("x.h5"), viaPath: { _ in throw Interrupted() }))
        XCTAssertEqual(try String(contentsOf: target, encoding: .utf8), "old content\n")
        XCTAssertEqual(try String(contentsOf: sidecar, encoding: .utf8), "old names\n")
        XCTAssertEqual(try listing(), ["model.csv", "second.txt"])

        // A write into a missing directory fails cleanly, and a good write replaces the file.
        XCTAssertNotNil(dataError { try writeTable(awkwardTable(rows: 1), to: file("nowhere/t.csv")) })
        try writeTable(awkwardTable(rows: 2), to: target)
        XCTAssertEqual(try readTable(target).rowCount, 2)
        XCTAssertEqual(try listing(), ["model.csv", "second.txt"])
    }
}
