import Foundation

/// The element types hrtrain reads and writes in safetensors files.
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    case f32 = "F32"
    case f64 = "F64"
    case i64 = "I64"

    /// Bytes per element.
    public var byteSize: Int { self == .f32 ? 4 : 8 }
}

/// One tensor of a safetensors file: element type, shape and the little-endian element bytes.
public struct SafeTensor: Equatable, Sendable {
    /// The element type.
    public let dtype: SafeTensorsDType
    /// The dimensions (empty for a scalar).
    public let shape: [Int]
    /// The elements, little-endian, row-major; `elementCount × dtype.byteSize` bytes.
    public let bytes: [UInt8]

    /// Creates a tensor from raw bytes; the caller guarantees the count matches shape and dtype.
    init(dtype: SafeTensorsDType, shape: [Int], bytes: [UInt8]) {
        precondition(
            bytes.count == shape.reduce(1, *) * dtype.byteSize, "SafeTensor: byte count does not match the shape")
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
    }

    /// Creates an F32 tensor; `values.count` must equal the product of `shape`.
    public init(shape: [Int], floats values: [Float]) {
        self.init(dtype: .f32, shape: shape, bytes: littleEndianBytes(of: values.map(\.bitPattern)))
    }

    /// Creates an F64 tensor; `values.count` must equal the product of `shape`.
    public init(shape: [Int], doubles values: [Double]) {
        self.init(dtype: .f64, shape: shape, bytes: littleEndianBytes(of: values.map(\.bitPattern)))
    }

    /// Creates an I64 tensor; `values.count` must equal the product of `shape`.
    public init(shape: [Int], int64s values: [Int64]) {
        self.init(dtype: .i64, shape: shape, bytes: littleEndianBytes(of: values.map { UInt64(bitPattern: $0) }))
    }

    /// The number of elements.
    public var elementCount: Int { shape.reduce(1, *) }

    /// The elements as Float32 (F64 rounded); nil for I64.
    public var floats: [Float]? {
        switch dtype {
        case .f32: return (0..<elementCount).map { Float(bitPattern: load($0, as: UInt32.self)) }
        case .f64: return (0..<elementCount).map { Float(Double(bitPattern: load($0, as: UInt64.self))) }
        case .i64: return nil
        }
    }

    /// The elements as Float64; nil for I64.
    public var doubles: [Double]? {
        switch dtype {
        case .f32: return (0..<elementCount).map { Double(Float(bitPattern: load($0, as: UInt32.self))) }
        case .f64: return (0..<elementCount).map { Double(bitPattern: load($0, as: UInt64.self)) }
        case .i64: return nil
        }
    }

    /// The elements as Int64; nil unless the dtype is I64.
    public var int64s: [Int64]? {
        dtype == .i64 ? (0..<elementCount).map { Int64(bitPattern: load($0, as: UInt64.self)) } : nil
    }

    /// Element `index` as a little-endian unsigned integer of the element's width.
    private func load<T: FixedWidthInteger>(_ index: Int, as type: T.Type) -> T {
        bytes.withUnsafeBytes {
            T(littleEndian: $0.loadUnaligned(fromByteOffset: index * MemoryLayout<T>.size, as: T.self))
        }
    }
}

/// The little-endian bytes of an array of integers.
private func littleEndianBytes<T: FixedWidthInteger>(of values: [T]) -> [UInt8] {
    #if _endian(big)
        return values.map(\.littleEndian).withUnsafeBytes(Array.init)
    #else
        return values.withUnsafeBytes(Array.init)
    #endif
}

/// The little-endian bytes of an integer.
private func littleEndianBytes<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.littleEndian, Array.init)
}

/// A safetensors file: named tensors plus string metadata.
///
/// Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
/// `{"__metadata__": {...}, "name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}`
/// (padded with spaces), then the tensor bytes; offsets are relative to the end of the header.
/// The writer sorts tensors by name and stores them back to back in that order, header padded to a
/// multiple of 8 bytes. The reader checks every field and the exact, gap-free tiling of the data and
/// throws a DataError naming the file on any inconsistency.
public struct SafeTensorsFile: Equatable, Sendable {
    /// The tensors by name.
    public var tensors: [String: SafeTensor]
    /// The `__metadata__` string map.
    public var metadata: [String: String]

    /// The largest header accepted (100 MB, the safetensors format's own limit), against hostile length fields.
    public static let maximumHeaderLength = 100_000_000
    /// The most JSON values a header may hold (a tensor takes about ten): parsed, each costs tens of bytes, so a
    /// 100 MB header of tiny values would otherwise take gigabytes.
    public static let maximumHeaderValues = 1_000_000

    /// Creates a file's contents.
    public init(tensors: [String: SafeTensor] = [:], metadata: [String: String] = [:]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    /// Reads and validates a safetensors file.
    public static func read(from url: URL) throws -> SafeTensorsFile {
        try SafeTensorsFile(decoding: InputFile.readAll(url), file: url.path)
    }

    /// Writes the file atomically.
    public func write(to url: URL) throws {
        let bytes = encoded()
        try AtomicFile.write(to: url) { try $0.write(bytes) }
    }

    /// The file's bytes: header sorted by name, tensors back to back in the same order.
    public func encoded() -> [UInt8] {
        var json = "{"
        var entries: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            entries.append("\"__metadata__\":{\(pairs.joined(separator: ","))}")
        }
        var offset = 0
        let names = tensors.keys.sorted()
        for name in names {
            let tensor = tensors[name]!
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            let end = offset + tensor.bytes.count
            entries.append(
                "\(jsonString(name)):{\"dtype\":\"\(tensor.dtype.rawValue)\",\"shape\":[\(shape)],"
                    + "\"data_offsets\":[\(offset),\(end)]}")
            offset += tensor.bytes.count
        }
        json += entries.joined(separator: ",") + "}"
        var header = Array(json.utf8)
        header += [UInt8](repeating: 0x20, count: (8 - header.count % 8) % 8)
        var bytes = littleEndianBytes(UInt64(header.count)) + header
        bytes.reserveCapacity(bytes.count + offset)
        for name in names { bytes += tensors[name]!.bytes }
        return bytes
    }

    /// Decodes and validates the bytes of a safetensors file; `file` names it in errors. A header of more than
    /// `maximumValues` JSON values is refused.
    public init(decoding bytes: [UInt8], file: String, maximumValues: Int = maximumHeaderValues) throws {
        func failure(_ message: String) -> DataError { DataError(message, file: file) }
        guard bytes.count >= 8 else {
            throw failure("not a safetensors file: \(bytes.count) bytes, shorter than the 8-byte header length")
        }
        let announced = bytes[0..<8].enumerated().reduce(UInt64(0)) {
            $0 | UInt64($1.element) << (8 * UInt64($1.offset))
        }
        guard announced <= UInt64(Self.maximumHeaderLength) else {
            throw failure(
                "header length \(announced) is larger than the \(Self.maximumHeaderLength)-byte limit (corrupt file?)")
        }
        let headerLength = Int(announced)
        guard headerLength <= bytes.count - 8 else {
            throw failure(
                "header length \(headerLength) exceeds the \(bytes.count - 8) bytes after the length field (truncated "
                    + "file?)"
            )
        }
        let header = Array(bytes[8..<8 + headerLength])
        guard Array(String(decoding: header, as: UTF8.self).utf8) == header else {
            throw failure("the header is not valid UTF-8")
        }
        guard header.first == UInt8(ascii: "{") else { throw failure("the header does not start with '{'") }
        var parser = JSONParser(text: header, maximumValues: maximumValues)
        let root: JSONValue
        do {
            root = try parser.parseDocument()
        } catch let error as JSONParser.Failure {
            throw failure("invalid JSON header at byte \(error.offset): \(error.message)")
        }
        guard case .object(let entries) = root else { throw failure("the header is not a JSON object") }

        let dataLength = bytes.count - 8 - headerLength
        var layout: [(name: String, begin: Int, end: Int)] = []
        var tensors: [String: (dtype: SafeTensorsDType, shape: [Int])] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in entries {
            if name == "__metadata__" {
                guard case .object(let pairs) = value else { throw failure("\"__metadata__\" is not an object") }
                for (key, item) in pairs {
                    guard case .string(let text) = item else {
                        throw failure("metadata value for \"\(key)\" is not a string")
                    }
                    metadata[key] = text
                }
                continue
            }
            let info = try Self.tensorInfo(name, value, failure)
            guard info.end <= dataLength else {
                throw failure(
                    "tensor \"\(name)\": data_offsets [\(info.begin), \(info.end)] extend past the \(dataLength) bytes "
                        + "of data"
                )
            }
            tensors[name] = (info.dtype, info.shape)
            layout.append((name, info.begin, info.end))
        }
        // The tensors must tile the data region exactly: sorted by offset, each starts where the last ended.
        layout.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
        var position = 0
        var previous: String?
        for item in layout {
            if item.begin < position {
                throw failure(
                    "tensors \"\(previous!)\" and \"\(item.name)\" overlap (\"\(item.name)\" starts at byte "
                        + "\(item.begin), before \(position))"
                )
            }
            if item.begin > position {
                throw failure(
                    "bytes \(position)..<\(item.begin) of the data belong to no tensor (before \"\(item.name)\")")
            }
            position = item.end
            previous = item.name
        }
        guard position == dataLength else {
            throw failure("bytes \(position)..<\(dataLength) at the end of the data belong to no tensor")
        }
        let data = 8 + headerLength
        self.tensors = Dictionary(
            uniqueKeysWithValues: layout.map { item in
                let info = tensors[item.name]!
                return (
                    item.name,
                    SafeTensor(
                        dtype: info.dtype, shape: info.shape, bytes: Array(bytes[data + item.begin..<data + item.end]))
                )
            })
        self.metadata = metadata
    }

    /// Validates one tensor entry: exactly the keys dtype, shape and data_offsets, sizes consistent.
    private static func tensorInfo(_ name: String, _ value: JSONValue, _ failure: (String) -> DataError) throws -> (
        dtype: SafeTensorsDType, shape: [Int], begin: Int, end: Int
    ) {
        guard case .object(let fields) = value else { throw failure("tensor \"\(name)\": entry is not an object") }
        let byName = Dictionary(fields, uniquingKeysWith: { first, _ in first })
        let expected: Set = ["dtype", "shape", "data_offsets"]
        if let extra = fields.first(where: { !expected.contains($0.0) }) {
            throw failure("tensor \"\(name)\": unexpected key \"\(extra.0)\"")
        }
        guard case .string(let dtypeName)? = byName["dtype"] else {
            throw failure("tensor \"\(name)\": missing or non-string \"dtype\"")
        }
        guard let dtype = SafeTensorsDType(rawValue: dtypeName) else {
            let supported = SafeTensorsDType.allCases.map(\.rawValue).joined(separator: ", ")
            throw failure("tensor \"\(name)\": unsupported dtype \"\(dtypeName)\" (supported: \(supported))")
        }
        func integers(_ key: String) throws -> [Int] {
            guard case .array(let items)? = byName[key] else {
                throw failure("tensor \"\(name)\": missing or non-array \"\(key)\"")
            }
            return try items.map { item in
                guard case .number(let text) = item, let value = Int(text), value >= 0 else {
                    throw failure("tensor \"\(name)\": \"\(key)\" holds \(item), not a non-negative integer")
                }
                return value
            }
        }
        let shape = try integers("shape")
        var size = dtype.byteSize
        for dimension in shape {
            let (product, overflow) = size.multipliedReportingOverflow(by: dimension)
            guard !overflow else { throw failure("tensor \"\(name)\": shape \(shape) is too large") }
            size = product
        }
        let offsets = try integers("data_offsets")
        guard offsets.count == 2, offsets[0] <= offsets[1] else {
            throw failure("tensor \"\(name)\": data_offsets \(offsets) is not [begin, end] with begin ≤ end")
        }
        guard offsets[1] - offsets[0] == size else {
            throw failure(
                "tensor \"\(name)\": data_offsets [\(offsets[0]), \(offsets[1])] span \(offsets[1] - offsets[0]) "
                    + "bytes, but \(dtype.rawValue) \(shape) needs \(size)"
            )
        }
        return (dtype, shape, offsets[0], offsets[1])
    }
}

/// `text` as a JSON string literal.
private func jsonString(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        case _ where scalar.value < 0x20: result += String(format: "\\u%04x", scalar.value)
        default: result.unicodeScalars.append(scalar)
        }
    }
    return result + "\""
}

/// A parsed JSON value; numbers keep their text, objects their key order.
private enum JSONValue: CustomStringConvertible {
    case object([(String, JSONValue)])
    case array([JSONValue])
    case string(String)
    case number(String)
    case bool(Bool)
    case null

    /// A short rendering for error messages.
    var description: String {
        switch self {
        case .object: return "an object"
        case .array: return "an array"
        case .string(let text): return jsonString(text)
        case .number(let text): return text
        case .bool(let value): return String(value)
        case .null: return "null"
        }
    }
}

/// A strict RFC 8259 parser that also rejects duplicate keys, nesting deeper than 64 and more than
/// `maximumValues` values.
private struct JSONParser {
    /// A syntax error at a byte offset of the header.
    struct Failure: Error {
        var offset: Int
        var message: String
    }

    let text: [UInt8]
    let maximumValues: Int
    var position = 0
    var depth = 0
    var values = 0

    init(text: [UInt8], maximumValues: Int) {
        self.text = text
        self.maximumValues = maximumValues
    }

    /// Parses one value followed only by whitespace.
    mutating func parseDocument() throws -> JSONValue {
        let value = try parseValue()
        skipSpace()
        guard position == text.count else { throw fail("unexpected text after the JSON value") }
        return value
    }

    func fail(_ message: String) -> Failure { Failure(offset: position, message: message) }

    mutating func skipSpace() {
        while position < text.count, [0x20, 0x09, 0x0A, 0x0D].contains(text[position]) { position += 1 }
    }

    /// Consumes `literal` if it comes next.
    mutating func take(_ literal: String) -> Bool {
        guard text[position...].starts(with: literal.utf8) else { return false }
        position += literal.utf8.count
        return true
    }

    mutating func parseValue() throws -> JSONValue {
        skipSpace()
        guard position < text.count else { throw fail("unexpected end of the header") }
        values += 1
        guard values <= maximumValues else { throw fail("more than \(maximumValues) JSON values") }
        switch text[position] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default:
            if take("true") { return .bool(true) }
            if take("false") { return .bool(false) }
            if take("null") { return .null }
            throw fail("unexpected character")
        }
    }

    /// Enters a nested object or array.
    mutating func descend() throws {
        depth += 1
        guard depth <= 64 else { throw fail("nesting deeper than 64 levels") }
        position += 1
    }

    mutating func parseObject() throws -> JSONValue {
        try descend()
        defer { depth -= 1 }
        var members: [(String, JSONValue)] = []
        var keys: Set<String> = []
        skipSpace()
        if take("}") { return .object(members) }
        while true {
            skipSpace()
            guard position < text.count, text[position] == UInt8(ascii: "\"") else {
                throw fail("expected a string key")
            }
            let keyOffset = position
            let key = try parseString()
            guard keys.insert(key).inserted else {
                throw Failure(offset: keyOffset, message: "duplicate key \(jsonString(key))")
            }
            skipSpace()
            guard take(":") else { throw fail("expected ':'") }
            members.append((key, try parseValue()))
            skipSpace()
            if take("}") { return .object(members) }
            guard take(",") else { throw fail("expected ',' or '}'") }
        }
    }

    mutating func parseArray() throws -> JSONValue {
        try descend()
        defer { depth -= 1 }
        var items: [JSONValue] = []
        skipSpace()
        if take("]") { return .array(items) }
        while true {
            items.append(try parseValue())
            skipSpace()
            if take("]") { return .array(items) }
            guard take(",") else { throw fail("expected ',' or ']'") }
        }
    }

    /// Parses a number per the JSON grammar and returns its text.
    mutating func parseNumber() throws -> String {
        let start = position
        func digits() -> Int {
            let first = position
            while position < text.count, text[position] >= UInt8(ascii: "0"), text[position] <= UInt8(ascii: "9") {
                position += 1
            }
            return position - first
        }
        _ = take("-")
        let integerStart = position
        let integerDigits = digits()
        guard integerDigits > 0 else { throw fail("expected a digit") }
        guard integerDigits == 1 || text[integerStart] != UInt8(ascii: "0") else {
            throw fail("leading zero in a number")
        }
        if take(".") {
            guard digits() > 0 else { throw fail("expected a digit after '.'") }
        }
        if take("e") || take("E") {
            _ = take("+") || take("-")
            guard digits() > 0 else { throw fail("expected a digit in the exponent") }
        }
        return String(decoding: text[start..<position], as: UTF8.self)
    }

    /// Parses a string literal (the text is already known to be valid UTF-8).
    mutating func parseString() throws -> String {
        position += 1
        var bytes: [UInt8] = []
        while true {
            guard position < text.count else { throw fail("unterminated string") }
            let byte = text[position]
            position += 1
            switch byte {
            case UInt8(ascii: "\""):
                return String(decoding: bytes, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard position < text.count else { throw fail("unterminated string") }
                let escape = text[position]
                position += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): bytes.append(escape)
                case UInt8(ascii: "b"): bytes.append(0x08)
                case UInt8(ascii: "f"): bytes.append(0x0C)
                case UInt8(ascii: "n"): bytes.append(0x0A)
                case UInt8(ascii: "r"): bytes.append(0x0D)
                case UInt8(ascii: "t"): bytes.append(0x09)
                case UInt8(ascii: "u"): bytes += Array(String(try parseUnicodeEscape()).utf8)
                default: throw fail("invalid escape sequence")
                }
            case 0..<0x20:
                throw fail("control character in a string")
            default:
                bytes.append(byte)
            }
        }
    }

    /// Parses the hex digits after `\u` (and a following low surrogate when needed).
    mutating func parseUnicodeEscape() throws -> Character {
        func hex4() throws -> UInt32 {
            let digits = text[position..<min(position + 4, text.count)]
            guard digits.count == 4, digits.allSatisfy({ Character(Unicode.Scalar($0)).isHexDigit }),
                let value = UInt32(String(decoding: digits, as: UTF8.self), radix: 16)
            else { throw fail("invalid \\u escape") }
            position += 4
            return value
        }
        let first = try hex4()
        var scalar = first
        if (0xD800..<0xDC00).contains(first) {
            guard take("\\u") else { throw fail("unpaired surrogate in a \\u escape") }
            let second = try hex4()
            guard (0xDC00..<0xE000).contains(second) else { throw fail("unpaired surrogate in a \\u escape") }
            scalar = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        }
        guard let value = Unicode.Scalar(scalar) else { throw fail("unpaired surrogate in a \\u escape") }
        return Character(value)
    }
}
