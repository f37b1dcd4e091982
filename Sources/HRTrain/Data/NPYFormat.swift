import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// NumPy's `.npy` format for one 2-D array, with column names in a sidecar file.
///
/// Reading accepts versions 1.0, 2.0 and 3.0, a C-order 2-D array of little-endian float32 (`<f4`) or
/// float64 (`<f8`, rounded to Float32). Writing produces version 1.0 `<f4` with the header padded to a
/// multiple of 64 bytes, as `numpy.save` does.
///
/// `.npy` holds no column names, so they live next to the array in `<path>.columns` (for `events.npy`:
/// `events.npy.columns`), one UTF-8 name per line. The writer always writes it (atomically, together with
/// the array); the reader uses it when present and otherwise names the columns `c0`, `c1`, ….
public enum NPYFormat {
    private static let magic: [UInt8] = [0x93] + Array("NUMPY".utf8)

    /// The sidecar file holding the column names of the array at `url`.
    public static func columnsURL(for url: URL) -> URL {
        url.deletingLastPathComponent().appendingPathComponent(url.lastPathComponent + ".columns")
    }

    /// Reads a 2-D `<f4` or `<f8` array and its column names.
    public static func read(from url: URL) throws -> Table { try read(from: url, rows: nil).table }

    /// Reads only the rows `rows` (half-open ranges of 0-based rows, concatenated in the order given; all rows
    /// when nil) and returns them with the array's total row count: the file is mapped and only the bytes at
    /// the rows' offsets (`header + row × columns × itemsize`) are read (what each rank of a data-parallel job
    /// does); `rows: []` reads only the header and the column names.
    public static func read(from url: URL, rows selection: [Range<Int>]?) throws -> (table: Table, totalRows: Int) {
        let file = try MappedFile(url)
        let bytes = UnsafeBufferPointer(start: file.bytes, count: file.count)
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else {
            throw DataError("not a NumPy .npy file (the file does not start with \"\\x93NUMPY\")", url: url)
        }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw DataError("truncated .npy header", url: url) }
            headerLength = (0..<4).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
            headerStart = 12
        default:
            throw DataError("unsupported .npy version \(major).\(bytes[7]) (expected 1.0, 2.0 or 3.0)", url: url)
        }
        guard headerStart + headerLength <= bytes.count else {
            throw DataError(
                "truncated .npy header (\(headerLength) bytes announced, \(bytes.count - headerStart) present)",
                url: url)
        }
        let headerText = String(decoding: bytes[headerStart..<headerStart + headerLength], as: UTF8.self)
        let header = try parseHeader(headerText, url: url)
        let itemSize = header.isDouble ? 8 : 4
        let dataStart = headerStart + headerLength
        let (elements, overflow1) = header.rows.multipliedReportingOverflow(by: header.columns)
        let (byteCount, overflow2) = elements.multipliedReportingOverflow(by: itemSize)
        guard !overflow1, !overflow2 else {
            throw DataError("the shape (\(header.rows), \(header.columns)) in the .npy header is too large", url: url)
        }
        guard byteCount <= bytes.count - dataStart else {
            throw DataError(
                "truncated data: shape (\(header.rows), \(header.columns)) needs \(byteCount) bytes, the file holds "
                    + "\(bytes.count - dataStart)",
                url: url)
        }
        guard byteCount == bytes.count - dataStart else {
            throw DataError(
                "\(bytes.count - dataStart - byteCount) unexpected bytes after the data of shape (\(header.rows), "
                    + "\(header.columns))",
                url: url)
        }
        let ranges = selection ?? [0..<header.rows]
        for range in ranges where range.lowerBound < 0 || range.upperBound > header.rows {
            throw DataError(
                "rows \(range.lowerBound + 1)–\(range.upperBound) asked for, but the array holds \(header.rows) rows",
                url: url)
        }
        let selected = ranges.reduce(0) { $0 + $1.count }
        do {
            try SizeLimits.requireHostArray(
                shape: [selected, header.columns], elementSize: 4,
                what: "the array of shape (\(header.rows), \(header.columns))"
                    + (selected == header.rows ? "" : ", \(selected) rows of it,") + " as Float32")
        } catch let error as SizeLimitError {
            throw DataError(error.description, url: url)
        }
        let raw = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[dataStart...])
        let count = selected * header.columns
        let values = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            var out = 0
            for range in ranges {
                for index in range.lowerBound * header.columns..<range.upperBound * header.columns {
                    if header.isDouble {
                        buffer[out] = Float(
                            Double(
                                bitPattern: UInt64(
                                    littleEndian: raw.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self))))
                    } else {
                        buffer[out] = Float(
                            bitPattern: UInt32(
                                littleEndian: raw.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self)))
                    }
                    out += 1
                }
            }
            initialized = count
        }
        let names = try readColumnNames(for: url, count: header.columns)
        return (Table(columnNames: names, rowCount: selected, values: values), header.rows)
    }

    /// Writes `table` as a version 1.0 `<f4` array plus the `.columns` sidecar, both atomically.
    public static func write(_ table: Table, to url: URL) throws {
        guard table.columnCount > 0 else { throw DataError("cannot write a table with no columns", url: url) }
        if let index = table.columnNames.firstIndex(where: { $0.isEmpty || $0.contains(where: \.isNewline) }) {
            throw DataError(
                "a column name for the .columns sidecar must be non-empty and on one line", url: url, column: index + 1,
                columnName: table.columnNames[index])
        }
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(table.rowCount), \(table.columnCount)), }"
        let unpadded = magic.count + 4 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        let length = UInt16(header.utf8.count)
        let names = table.columnNames.joined(separator: "\n") + "\n"
        try AtomicFile.write([
            (
                url,
                { writer in
                    try writer.write(magic + [1, 0, UInt8(length & 0xFF), UInt8(length >> 8)])
                    try writer.write(header)
                    #if _endian(big)
                        try writer.write(
                            table.values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) })
                    #else
                        try table.values.withUnsafeBytes { try writer.write($0) }
                    #endif
                }
            ),
            (columnsURL(for: url), { writer in try writer.write(names) }),
        ])
    }

    /// The names from the sidecar, or `c0`, `c1`, … when there is none.
    private static func readColumnNames(for url: URL, count: Int) throws -> [String] {
        let sidecar = columnsURL(for: url)
        var info = stat()
        guard stat(sidecar.path, &info) == 0 else { return (0..<count).map { "c\($0)" } }
        let text = try InputFile.readText(sidecar)
        // One name per line; lines may end in LF, CRLF or CR.
        var names = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).map(String.init)
        if names.last == "" { names.removeLast() }
        guard names.count == count else {
            throw DataError("holds \(names.count) column names but the array has \(count) columns", url: sidecar)
        }
        try requireUniqueColumnNames(names, source: "the column names file", url: sidecar)
        return names
    }

    /// The fields of an .npy header that matter here.
    private struct Header {
        var isDouble: Bool
        var rows: Int
        var columns: Int
    }

    /// Parses the header dictionary, e.g. `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }`.
    private static func parseHeader(_ text: String, url: URL) throws -> Header {
        var parser = PythonLiteralParser(text: Array(text.utf8))
        guard case .dictionary(let entries)? = try? parser.parseValue() else {
            throw DataError("cannot parse the .npy header \(text.debugDescription)", url: url)
        }
        func entry(_ key: String) throws -> PythonLiteral {
            guard let value = entries[key] else { throw DataError("the .npy header has no '\(key)'", url: url) }
            return value
        }
        let isDouble: Bool
        switch try entry("descr") {
        case .string("<f4"): isDouble = false
        case .string("<f8"): isDouble = true
        case .string(let other):
            throw DataError(
                "unsupported dtype '\(other)' (expected little-endian float32 '<f4' or float64 '<f8')", url: url)
        default:
            throw DataError("unsupported structured dtype (expected '<f4' or '<f8')", url: url)
        }
        guard case .bool(let fortran) = try entry("fortran_order") else {
            throw DataError("'fortran_order' in the .npy header is not True or False", url: url)
        }
        if fortran {
            throw DataError(
                "the array is in Fortran (column-major) order; save it in C order (numpy.ascontiguousarray)", url: url)
        }
        guard case .tuple(let shape) = try entry("shape") else {
            throw DataError("'shape' in the .npy header is not a tuple", url: url)
        }
        let dimensions = shape.compactMap { value -> Int? in
            if case .integer(let n) = value { return n }
            return nil
        }
        guard dimensions.count == 2 else {
            let shown =
                dimensions.count == 1
                ? "(\(dimensions[0]),)" : "(\(dimensions.map(String.init).joined(separator: ", ")))"
            throw DataError("expected a 2-D array (rows, columns), found shape \(shown)", url: url)
        }
        return Header(isDouble: isDouble, rows: dimensions[0], columns: dimensions[1])
    }
}

/// A value of the Python literal subset used by .npy headers.
private enum PythonLiteral {
    case string(String)
    case integer(Int)
    case bool(Bool)
    case tuple([PythonLiteral])
    case dictionary([String: PythonLiteral])
}

/// A recursive-descent parser for strings, non-negative integers, booleans, tuples/lists and dictionaries.
private struct PythonLiteralParser {
    /// A malformed header.
    struct Failure: Error {}

    let text: [UInt8]
    var position = 0
    var depth = 0

    init(text: [UInt8]) { self.text = text }

    /// Skips spaces and newlines.
    mutating func skipSpace() {
        while position < text.count, text[position] == 0x20 || text[position] == 0x0A || text[position] == 0x09 {
            position += 1
        }
    }

    /// Consumes `byte` if it comes next.
    mutating func take(_ byte: UInt8) -> Bool {
        skipSpace()
        guard position < text.count, text[position] == byte else { return false }
        position += 1
        return true
    }

    /// Parses one value.
    mutating func parseValue() throws -> PythonLiteral {
        skipSpace()
        guard position < text.count, depth < 16 else { throw Failure() }
        depth += 1
        defer { depth -= 1 }
        switch text[position] {
        case UInt8(ascii: "'"), UInt8(ascii: "\""):
            let quote = text[position]
            guard let close = text[(position + 1)...].firstIndex(of: quote) else { throw Failure() }
            defer { position = close + 1 }
            return .string(String(decoding: text[(position + 1)..<close], as: UTF8.self))
        case UInt8(ascii: "0")...UInt8(ascii: "9"):
            var value = 0
            while position < text.count, case let digit = text[position] &- UInt8(ascii: "0"), digit < 10 {
                let (shifted, overflow1) = value.multipliedReportingOverflow(by: 10)
                let (sum, overflow2) = shifted.addingReportingOverflow(Int(digit))
                guard !overflow1, !overflow2 else { throw Failure() }
                value = sum
                position += 1
            }
            if position < text.count, text[position] == UInt8(ascii: "L") { position += 1 }
            return .integer(value)
        case UInt8(ascii: "T"), UInt8(ascii: "F"):
            for (word, value) in [("True", true), ("False", false)] where text[position...].starts(with: word.utf8) {
                position += word.utf8.count
                return .bool(value)
            }
            throw Failure()
        case UInt8(ascii: "("), UInt8(ascii: "["):
            let close = text[position] == UInt8(ascii: "(") ? UInt8(ascii: ")") : UInt8(ascii: "]")
            position += 1
            var items: [PythonLiteral] = []
            while !take(close) {
                items.append(try parseValue())
                if !take(UInt8(ascii: ",")) {
                    guard take(close) else { throw Failure() }
                    break
                }
            }
            return .tuple(items)
        case UInt8(ascii: "{"):
            position += 1
            var entries: [String: PythonLiteral] = [:]
            while !take(UInt8(ascii: "}")) {
                guard case .string(let key) = try parseValue(), take(UInt8(ascii: ":")) else { throw Failure() }
                entries[key] = try parseValue()
                if !take(UInt8(ascii: ",")) {
                    guard take(UInt8(ascii: "}")) else { throw Failure() }
                    break
                }
            }
            return .dictionary(entries)
        default:
            throw Failure()
        }
    }
}
