import Dispatch
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Comma-separated text: one header row of column names, then one row of numbers per line.
///
/// Reading: fields may have spaces or tabs around them, lines end in `\n` or `\r\n`, the last newline is
/// optional, blank lines are skipped (as pandas does), a UTF-8 byte-order mark and double quotes around
/// header names are removed. Every other line must hold exactly one number per column. Numbers are what
/// `strtof` accepts ("1", "-2.5e-3", "nan", "inf", "0x1p-3"), rounded correctly to Float32. The file is
/// memory-mapped and parsed in parallel, in chunks split at newlines; the result does not depend on the
/// number of threads.
///
/// Writing: the header, then every value in Swift's shortest form that reads back to the same Float32
/// ("0.1", "1e-05", "nan"), rows formatted in parallel blocks, written atomically.
public enum CSVFormat {
    /// Reads a CSV file; with `dropNonFinite`, rows holding NaN or ±Inf are dropped and counted
    /// instead of rejected.
    public static func read(from url: URL, dropNonFinite: Bool = false) throws -> (table: Table, droppedRowCount: Int) {
        let file = try MappedFile(url)
        guard let bytes = file.bytes, file.count > 0 else {
            throw DataError("the file is empty (expected a header row of column names)", url: url)
        }
        let header = try readHeader(bytes, count: file.count, url: url)
        guard header.bodyStart < file.count else { throw DataError("no data rows after the header", url: url) }

        let chunks = splitAtNewlines(bytes, from: header.bodyStart, to: file.count)
        var lineCounts = [Int](repeating: 0, count: chunks.count)
        lineCounts.withUnsafeMutableBufferPointer { counts in
            DispatchQueue.concurrentPerform(iterations: chunks.count) { k in
                counts[k] = countLines(bytes, chunks[k])
            }
        }
        // Chunk k starts at line firstLine[k] (1-based, the header is line 1) and may fill up to
        // lineCounts[k] rows from row firstLine[k] - 2.
        var firstLine = [Int](repeating: 2, count: chunks.count)
        for k in 1..<max(chunks.count, 1) { firstLine[k] = firstLine[k - 1] + lineCounts[k - 1] }
        let columns = header.names.count
        let capacity = (firstLine.last! - 2 + lineCounts.last!) * columns

        var results = [ChunkResult](repeating: ChunkResult(), count: chunks.count)
        let values = [Float](unsafeUninitializedCapacity: capacity) { buffer, initialized in
            results.withUnsafeMutableBufferPointer { results in
                DispatchQueue.concurrentPerform(iterations: chunks.count) { k in
                    let output = buffer.baseAddress! + (firstLine[k] - 2) * columns
                    results[k] = parseChunk(
                        bytes, chunks[k], columns: columns, into: output, dropNonFinite: dropNonFinite)
                }
            }
            // Close the gaps left by blank lines and dropped rows (moving rows towards the start only).
            var filled = 0
            for k in 0..<chunks.count where results[k].failure == nil {
                let source = (firstLine[k] - 2) * columns
                let count = results[k].rows * columns
                if source != filled {
                    UnsafeMutableRawPointer(buffer.baseAddress! + filled).copyMemory(  // memmove: may overlap
                        from: buffer.baseAddress! + source, byteCount: count * MemoryLayout<Float>.stride)
                }
                filled += count
            }
            initialized = results.allSatisfy { $0.failure == nil } ? filled : 0
        }
        if let k = results.firstIndex(where: { $0.failure != nil }), let failure = results[k].failure {
            let column = failure.column
            throw DataError(
                failure.message, url: url, line: firstLine[k] + failure.lineOffset, column: column.map { $0 + 1 },
                columnName: column.map { header.names[$0] })
        }
        let rows = values.count / columns
        let dropped = results.reduce(0) { $0 + $1.dropped }
        guard rows > 0 else {
            let reason =
                dropped > 0 ? "all \(dropped) data rows hold NaN or infinite values" : "no data rows after the header"
            throw DataError(reason, url: url)
        }
        return (Table(columnNames: header.names, rowCount: rows, values: values), dropped)
    }

    /// Writes `table` as CSV, atomically.
    public static func write(_ table: Table, to url: URL) throws {
        guard table.columnCount > 0 else { throw DataError("cannot write a table with no columns", url: url) }
        for (index, name) in table.columnNames.enumerated() {
            let trimmed = name.trimmingCharacters(in: .whitespaces)
            if name.isEmpty || trimmed != name
                || name.unicodeScalars.contains(where: { ",\"\r\n".unicodeScalars.contains($0) })
            {
                throw DataError(
                    "this column name cannot be written to CSV (it is empty, has surrounding spaces, or holds a comma, "
                        + "quote or newline)",
                    url: url, column: index + 1, columnName: name)
            }
        }
        let blockRows = 16_384
        let blockCount = (table.rowCount + blockRows - 1) / blockRows
        let batch = 4 * ProcessInfo.processInfo.activeProcessorCount
        try AtomicFile.write(to: url) { writer in
            try writer.write(table.columnNames.joined(separator: ",") + "\n")
            // While one batch of blocks is formatted on all cores, the previous one is written and synced
            // to disk on `output`, so the final fsync finds little left to do.
            let output = DispatchQueue(label: "hrtrain.csv.write")
            let failure = OutputFailure()
            try table.values.withUnsafeBufferPointer { values in
                for firstBlock in stride(from: 0, to: blockCount, by: batch) {
                    let count = min(batch, blockCount - firstBlock)
                    var formatted = [[UInt8]](repeating: [], count: count)
                    formatted.withUnsafeMutableBufferPointer { texts in
                        DispatchQueue.concurrentPerform(iterations: count) { k in
                            let start = (firstBlock + k) * blockRows
                            texts[k] = formatRows(
                                values, rows: start..<min(start + blockRows, table.rowCount), columns: table.columnCount
                            )
                        }
                    }
                    try output.sync { if let error = failure.error { throw error } }
                    let texts = formatted
                    output.async {
                        do {
                            for text in texts { try writer.write(text) }
                            try writer.flush(toDisk: true)
                        } catch {
                            failure.error = error
                        }
                    }
                }
            }
            try output.sync { if let error = failure.error { throw error } }
        }
    }

    /// The first error of the background writes; read and written only on the output queue, which is what
    /// makes the unchecked Sendable conformance safe.
    private final class OutputFailure: @unchecked Sendable {
        var error: Error?
    }

    // MARK: - Header

    /// The column names and the offset of the first body byte.
    private static func readHeader(_ bytes: UnsafePointer<UInt8>, count: Int, url: URL) throws -> (
        names: [String], bodyStart: Int
    ) {
        var start = 0
        if count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { start = 3 }
        var end = start
        while end < count, bytes[end] != UInt8(ascii: "\n") { end += 1 }
        let text = String(decoding: UnsafeBufferPointer(start: bytes + start, count: end - start), as: UTF8.self)
        var names = text.split(separator: ",", omittingEmptySubsequences: false).map { field -> String in
            let name = field.trimmingCharacters(in: .whitespacesAndNewlines)
            if name.count >= 2, name.hasPrefix("\""), name.hasSuffix("\"") {
                return String(name.dropFirst().dropLast())
            }
            return name
        }
        if names == [""] { names = [] }
        guard !names.isEmpty else { throw DataError("the header row (line 1) is empty", url: url, line: 1) }
        var seen: [String: Int] = [:]
        for (index, name) in names.enumerated() {
            if name.isEmpty { throw DataError("empty column name in the header", url: url, line: 1, column: index + 1) }
            if let first = seen[name] {
                throw DataError(
                    "duplicate column name (also column \(first + 1))", url: url, line: 1, column: index + 1,
                    columnName: name)
            }
            seen[name] = index
        }
        return (names, min(end + 1, count))
    }

    // MARK: - Parallel body parsing

    /// Splits `from..<to` into about 8 ranges per processor (at least 1 MiB each), each ending after a newline.
    private static func splitAtNewlines(_ bytes: UnsafePointer<UInt8>, from start: Int, to end: Int) -> [Range<Int>] {
        let pieces = max(1, min((end - start) >> 20, 8 * ProcessInfo.processInfo.activeProcessorCount))
        var ranges: [Range<Int>] = []
        var lower = start
        for piece in 1...pieces {
            var upper = piece == pieces ? end : max(lower, start + (end - start) / pieces * piece)
            if upper < end, let newline = memchr(bytes + upper, Int32(UInt8(ascii: "\n")), end - upper) {
                upper = bytes.distance(to: newline.assumingMemoryBound(to: UInt8.self)) + 1
            } else {
                upper = end
            }
            if upper > lower { ranges.append(lower..<upper) }
            lower = upper
        }
        return ranges
    }

    /// The number of lines in a range (the last one may lack its newline).
    private static func countLines(_ bytes: UnsafePointer<UInt8>, _ range: Range<Int>) -> Int {
        var lines = 0
        var position = range.lowerBound
        while position < range.upperBound,
            let newline = memchr(bytes + position, Int32(UInt8(ascii: "\n")), range.upperBound - position)
        {
            lines += 1
            position = bytes.distance(to: newline.assumingMemoryBound(to: UInt8.self)) + 1
        }
        return position < range.upperBound ? lines + 1 : lines
    }

    /// What one chunk produced: its rows, dropped rows and the first failure.
    private struct ChunkResult {
        var rows = 0
        var dropped = 0
        var failure: ChunkFailure?
    }

    /// A parse failure: the line within the chunk (0-based), the 0-based column if any, the message.
    private struct ChunkFailure {
        var lineOffset: Int
        var column: Int?
        var message: String
    }

    private static let comma = UInt8(ascii: ",")
    private static let newline = UInt8(ascii: "\n")

    /// True for a space, tab or carriage return.
    @inline(__always) private static func isBlank(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\r")
    }

    /// Parses the lines of `range` into consecutive rows at `output`; stops at the first error.
    private static func parseChunk(
        _ bytes: UnsafePointer<UInt8>, _ range: Range<Int>, columns: Int, into output: UnsafeMutablePointer<Float>,
        dropNonFinite: Bool
    ) -> ChunkResult {
        var result = ChunkResult()
        var position = range.lowerBound
        let end = range.upperBound
        var lineOffset = -1
        while position < end {
            lineOffset += 1
            let lineStart = position
            while position < end, isBlank(bytes[position]) { position += 1 }
            if position == end || bytes[position] == newline {
                position += 1
                continue
            }
            let row = output + result.rows * columns
            var finite = true
            for column in 0..<columns {
                while position < end, isBlank(bytes[position]) { position += 1 }
                let fieldStart = position
                let value = parseNumber(bytes, &position, end)
                while position < end, isBlank(bytes[position]) { position += 1 }
                let terminator = position < end ? bytes[position] : newline
                let expected = column == columns - 1 ? newline : comma
                guard let value, terminator == expected else {
                    let message = lineError(
                        bytes, lineStart: lineStart, end: end, columns: columns, fieldStart: fieldStart)
                    let wrongCount = message.hasPrefix("expected")
                    result.failure = ChunkFailure(
                        lineOffset: lineOffset, column: wrongCount ? nil : column, message: message)
                    return result
                }
                position += 1
                if !value.isFinite {
                    guard dropNonFinite else {
                        let text = fieldText(bytes, from: fieldStart, end: end)
                        let message =
                            "value \"\(text)\" is not finite (NaN or infinite; use the option to drop such rows)"
                        result.failure = ChunkFailure(lineOffset: lineOffset, column: column, message: message)
                        return result
                    }
                    finite = false
                }
                row[column] = value
            }
            if finite { result.rows += 1 } else { result.dropped += 1 }
        }
        return result
    }

    /// The message for a line that failed at the field starting at `fieldStart`.
    private static func lineError(
        _ bytes: UnsafePointer<UInt8>, lineStart: Int, end: Int, columns: Int, fieldStart: Int
    ) -> String {
        var fields = 1
        var position = lineStart
        while position < end, bytes[position] != newline {
            if bytes[position] == comma { fields += 1 }
            position += 1
        }
        if fields != columns { return "expected \(columns) fields (as in the header), found \(fields)" }
        let text = fieldText(bytes, from: fieldStart, end: end)
        return text.isEmpty ? "empty field (expected a number)" : "cannot parse \"\(text)\" as a number"
    }

    /// The trimmed text of the field starting at `start` (at most 60 characters).
    private static func fieldText(_ bytes: UnsafePointer<UInt8>, from start: Int, end: Int) -> String {
        var stop = start
        while stop < end, bytes[stop] != comma, bytes[stop] != newline { stop += 1 }
        while stop > start, isBlank(bytes[stop - 1]) { stop -= 1 }
        let text = String(decoding: UnsafeBufferPointer(start: bytes + start, count: stop - start), as: UTF8.self)
        return text.count > 60 ? String(text.prefix(57)) + "..." : text
    }

    // MARK: - Numbers

    /// Exact powers of ten representable in a Double.
    private static let powersOfTen: [Double] = (0...22).map { Double("1e\($0)")! }

    /// Parses one number at `position` and advances past it; nil if the text is not a number.
    ///
    /// Fast path (Clinger): at most 19 significant digits with a decimal exponent within ±22 is computed
    /// exactly rounded in Double, then rounded to Float; that double rounding is exact unless the Double
    /// lands exactly on a midpoint between two Floats, which goes to `strtof` like every other form.
    @inline(__always)
    static func parseNumber(_ bytes: UnsafePointer<UInt8>, _ position: inout Int, _ end: Int) -> Float? {
        let start = position
        var index = position
        var negative = false
        if index < end, bytes[index] == UInt8(ascii: "-") || bytes[index] == UInt8(ascii: "+") {
            negative = bytes[index] == UInt8(ascii: "-")
            index += 1
        }
        var mantissa: UInt64 = 0
        var significant = 0
        var exponent = 0
        var digits = 0
        var exact = true
        while index < end, case let digit = bytes[index] &- UInt8(ascii: "0"), digit < 10 {
            if significant < 19 {
                mantissa = mantissa &* 10 &+ UInt64(digit)
                if mantissa != 0 { significant += 1 }
            } else {
                exponent += 1
                exact = exact && digit == 0
            }
            digits += 1
            index += 1
        }
        if index < end, bytes[index] == UInt8(ascii: ".") {
            index += 1
            while index < end, case let digit = bytes[index] &- UInt8(ascii: "0"), digit < 10 {
                if significant < 19 {
                    mantissa = mantissa &* 10 &+ UInt64(digit)
                    if mantissa != 0 { significant += 1 }
                    exponent -= 1
                } else {
                    exact = exact && digit == 0
                }
                digits += 1
                index += 1
            }
        }
        if digits > 0, index < end, bytes[index] | 0x20 == UInt8(ascii: "e") {
            var cursor = index + 1
            var negativeExponent = false
            if cursor < end, bytes[cursor] == UInt8(ascii: "-") || bytes[cursor] == UInt8(ascii: "+") {
                negativeExponent = bytes[cursor] == UInt8(ascii: "-")
                cursor += 1
            }
            var value = 0
            let first = cursor
            while cursor < end, case let digit = bytes[cursor] &- UInt8(ascii: "0"), digit < 10 {
                if value < 100_000 { value = value * 10 + Int(digit) }
                cursor += 1
            }
            if cursor > first {
                exponent += negativeExponent ? -value : value
                index = cursor
            }
        }
        let delimited = index == end || bytes[index] == comma || bytes[index] == newline || isBlank(bytes[index])
        if digits > 0, delimited, exact {
            if mantissa == 0 {
                position = index
                return negative ? -0.0 : 0.0
            }
            if mantissa <= 1 << 53, exponent >= -22, exponent <= 22 {
                var double = Double(mantissa)
                double = exponent < 0 ? double / powersOfTen[-exponent] : double * powersOfTen[exponent]
                let magnitude = double.bitPattern >> 52
                let normalFloat = magnitude >= 1023 - 126 && magnitude <= 1023 + 127
                if normalFloat, double.bitPattern & 0x1FFF_FFFF != 0x1000_0000 {
                    position = index
                    return negative ? -Float(double) : Float(double)
                }
            }
        }
        return parseSlow(bytes, &position, from: start, end: end)
    }

    /// `strtof` on the field at `start` (up to the next delimiter or blank); nil unless it takes all of it.
    private static func parseSlow(_ bytes: UnsafePointer<UInt8>, _ position: inout Int, from start: Int, end: Int)
        -> Float?
    {
        var stop = start
        while stop < end, bytes[stop] != comma, bytes[stop] != newline, !isBlank(bytes[stop]) { stop += 1 }
        let length = stop - start
        guard length > 0, length < 64 else { return nil }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { text -> Float? in
            UnsafeMutableRawPointer(text.baseAddress!).copyMemory(from: bytes + start, byteCount: length)
            text[length] = 0
            var parsed: UnsafeMutablePointer<CChar>?
            let value = strtof(text.baseAddress!, &parsed)
            guard parsed == text.baseAddress! + length else { return nil }
            position = stop
            return value
        }
    }

    // MARK: - Writing

    /// Formats rows `rows` of a row-major matrix as CSV lines.
    private static func formatRows(_ values: UnsafeBufferPointer<Float>, rows: Range<Int>, columns: Int) -> [UInt8] {
        var text: [UInt8] = []
        text.reserveCapacity(rows.count * columns * 12)
        for row in rows {
            for column in 0..<columns {
                if column > 0 { text.append(comma) }
                text.append(contentsOf: values[row * columns + column].description.utf8)
            }
            text.append(newline)
        }
        return text
    }
}

/// A read-only memory map of a whole regular file.
final class MappedFile {
    /// The first byte, or nil for an empty file.
    let bytes: UnsafePointer<UInt8>?
    /// The file size in bytes.
    let count: Int

    /// Maps `url`; throws a DataError naming the file if it cannot be opened or mapped.
    init(_ url: URL) throws {
        let descriptor = open(url.path, O_RDONLY)
        guard descriptor >= 0 else { throw AtomicFile.systemError("cannot open", url) }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw AtomicFile.systemError("cannot stat", url) }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw DataError("not a regular file", url: url) }
        count = Int(info.st_size)
        if count == 0 {
            bytes = nil
            return
        }
        let address = mmap(nil, count, PROT_READ, MAP_PRIVATE, descriptor, 0)
        guard let address, address != MAP_FAILED else { throw AtomicFile.systemError("cannot map", url) }
        madvise(address, count, MADV_SEQUENTIAL)
        bytes = UnsafePointer(address.assumingMemoryBound(to: UInt8.self))
    }

    deinit {
        if let bytes { munmap(UnsafeMutableRawPointer(mutating: bytes), count) }
    }
}
