import CHDF5
import Foundation

/// HDF5 tables, through the small C API in CHDF5 (serial HDF5; every call here holds one lock).
///
/// Reading accepts two layouts:
/// - a 2-D numeric dataset (rows × columns; default name `data`, or any path given), its column names
///   taken from its string-array attribute `columns`, else from a 1-D string dataset `<name>_columns`
///   or `columns` next to it, else `c0`, `c1`, …;
/// - a table: a group (or the file root) whose 1-D numeric datasets of equal length are the columns,
///   in creation order when the file tracks it, else in name order (h5py's default). Name the group,
///   or `/` for the root; when no name is given and there is no `data`, the root is read this way.
///
/// Values of any integer or float type are converted to Float32 by HDF5.
/// Writing produces one 2-D little-endian float32 dataset (default `/data`) with a variable-length
/// UTF-8 string-array attribute `columns` holding the names (h5py reads it as a list of `str`).
public enum HDF5Format {
    /// The dataset read and written when none is named.
    public static let defaultDataset = "data"

    /// Serialises all HDF5 calls: the serial library is not thread-safe.
    private static let lock = NSLock()

    /// Runs `body` holding the HDF5 lock.
    static func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    /// Reads a table from `url`: the 2-D dataset or table group `dataset` (default `data`).
    ///
    /// libhdf5 runs in a child process (IsolatedReader): a damaged file that crashes it gives an error, not a
    /// crash of hrtrain.
    public static func read(from url: URL, dataset: String? = nil) throws -> Table {
        try InputFile.requireRegularFile(url)
        let bytes = try IsolatedReader.run(url: url, library: "HDF5", lock: lock) {
            try readInThisProcess(from: url, dataset: dataset).table.serialized()
        }
        guard let table = Table(serialized: bytes) else {
            throw DataError("the HDF5 reader process sent an inconsistent table", url: url)
        }
        return table
    }

    /// Reads only the rows `rows` (half-open ranges of 0-based rows, concatenated in the order given) of the
    /// table `dataset` through hyperslab selections: the other rows are never read from the file (what each
    /// rank of a data-parallel job does). Returns them and the table's total row count; `rows: []` reads only
    /// the shape and the column names. Runs in a child process, as `read` does.
    public static func readRows(from url: URL, dataset: String? = nil, rows: [Range<Int>]) throws
        -> (table: Table, totalRows: Int)
    {
        try InputFile.requireRegularFile(url)
        let bytes = try IsolatedReader.run(url: url, library: "HDF5", lock: lock) {
            let read = try readInThisProcess(from: url, dataset: dataset, rows: rows)
            return withUnsafeBytes(of: UInt64(read.totalRows)) { Array($0) } + read.table.serialized()
        }
        guard bytes.count >= 8, let table = Table(serialized: Array(bytes[8...])) else {
            throw DataError("the HDF5 reader process sent an inconsistent table", url: url)
        }
        let total = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        return (table, Int(total))
    }

    /// Reads a table in this process (the caller holds the lock, or is the isolated child): the rows `rows`
    /// (all when nil) and the total row count.
    static func readInThisProcess(from url: URL, dataset: String?, rows: [Range<Int>]? = nil) throws
        -> (table: Table, totalRows: Int)
    {
        do {
            switch chdf5_is_hdf5(url.path) {
            case 0: throw DataError("not an HDF5 file (no HDF5 signature found)", url: url)
            case 1: break
            default: throw DataError("cannot read the file", url: url)
            }
            let file = try HDF5File(opening: url)
            defer { try? file.close() }
            let name = dataset ?? defaultDataset
            switch try file.kind(name) {
            case CHDF5_KIND_DATASET: return try file.readMatrix(name, rows: rows)
            case CHDF5_KIND_GROUP:
                return try file.readColumns(group: name, file.columnLayout(group: name), rows: rows)
            case CHDF5_KIND_MISSING:
                if dataset == nil {
                    // No `data`: read the root as a table when it holds 1-D datasets, and say why it cannot be
                    // read as one rather than that `data` is missing.
                    let columns: [(name: String, length: Int)]
                    do { columns = try file.columnLayout(group: "/") } catch var error as DataError {
                        error.message =
                            "no dataset \"\(name)\", and the file root cannot be read as a table of 1-D columns: "
                            + error.message
                        throw error
                    }
                    if !columns.isEmpty { return try file.readColumns(group: "/", columns, rows: rows) }
                }
                let members = try file.strings { chdf5_list_members(file.handle, "/", $0, $1, $2, $3, $4) } ?? []
                let listing =
                    members.isEmpty ? "the file is empty" : "the file root holds: " + members.joined(separator: ", ")
                throw DataError(
                    "no dataset or group \"\(name)\" (name a 2-D dataset, or a group of 1-D column datasets, \"/\" for "
                        + "the root); \(listing)",
                    url: url)
            default:
                throw DataError("\"\(name)\" is neither a dataset nor a group", url: url)
            }
        }
    }

    /// Writes `table` as one 2-D float32 dataset with a `columns` attribute, atomically.
    public static func write(_ table: Table, to url: URL, dataset: String = defaultDataset) throws {
        guard table.columnCount > 0 else { throw DataError("cannot write a table with no columns", url: url) }
        if let index = table.columnNames.firstIndex(where: { $0.contains("\0") }) {
            throw DataError(
                "a column name holds a NUL character", url: url, column: index + 1, columnName: table.columnNames[index]
            )
        }
        // The file is built in memory and written by AtomicFile: libhdf5 never writes to the disk, so a full
        // disk is a plain write error naming the file, and a failed write leaves the old file in place.
        let image: [UInt8] = try locked {
            let file = try HDF5File(inMemoryReportingAs: url)
            do {
                try file.writeFloats(dataset, shape: [table.rowCount, table.columnCount], table.values)
                try file.writeStrings(table.columnNames, object: dataset, attribute: "columns")
                let image = try file.image()
                try file.close()
                return image
            } catch {
                try? file.close()
                throw error
            }
        }
        try AtomicFile.write(to: url) { try $0.write(image) }
    }
}

/// An open HDF5 file: the reading and writing steps, each turning a C failure into a DataError that names
/// the file. Callers hold HDF5Format's lock.
struct HDF5File {
    /// The file named in errors.
    let url: URL
    /// The HDF5 file handle.
    let handle: Int64

    /// Opens `url` read-only.
    init(opening url: URL) throws {
        self.url = url
        var error = [CChar](repeating: 0, count: 512)
        handle = chdf5_open(url.path, &error, error.count)
        guard handle >= 0 else { throw DataError(String(cString: error), url: url) }
    }

    /// Creates (truncating) the file at `path` on disk; errors name `url` (tests build hostile files with it).
    init(creating path: URL, reportingAs url: URL) throws {
        self.url = url
        var error = [CChar](repeating: 0, count: 512)
        handle = chdf5_create(path.path, &error, error.count)
        guard handle >= 0 else { throw DataError(String(cString: error), url: url) }
    }

    /// Creates a file in memory; errors name `url`, where it will be written.
    init(inMemoryReportingAs url: URL) throws {
        self.url = url
        var error = [CChar](repeating: 0, count: 512)
        handle = chdf5_create_in_memory(&error, error.count)
        guard handle >= 0 else { throw DataError(String(cString: error), url: url) }
    }

    /// The bytes of an in-memory file.
    func image() throws -> [UInt8] {
        var buffer: UnsafeMutableRawPointer?
        var length = 0
        _ = try check { chdf5_file_image(handle, &buffer, &length, $0, $1) }
        defer { chdf5_free(buffer) }
        guard let buffer else { return [] }
        return Array(UnsafeRawBufferPointer(start: buffer, count: length))
    }

    /// Closes the file, flushing what was written.
    func close() throws {
        _ = try check { chdf5_close(handle, $0, $1) }
    }

    /// Writes a float32 dataset of the given shape from C-order `values`.
    func writeFloats(_ name: String, shape: [Int], _ values: [Float]) throws {
        let dims = shape.map { UInt64($0) }
        _ = try check { error, length in
            values.withUnsafeBufferPointer {
                chdf5_write_floats(handle, name, Int32(dims.count), dims, $0.baseAddress, error, length)
            }
        }
    }

    /// Writes a 1-D UTF-8 string array: attribute `attribute` of `object`, or the dataset `object` when nil.
    func writeStrings(_ strings: [String], object: String, attribute: String?) throws {
        let copies = strings.map { strdup($0) }
        defer { for copy in copies { free(copy) } }
        let pointers = copies.map { UnsafePointer($0) }
        _ = try check { chdf5_write_strings(handle, object, attribute, pointers, UInt64(pointers.count), $0, $1) }
    }

    /// Runs a C call taking an error buffer; throws its message if it returns a negative status.
    func check(_ call: (UnsafeMutablePointer<CChar>, Int) -> Int32) throws -> Int32 {
        var error = [CChar](repeating: 0, count: 512)
        let status = error.withUnsafeMutableBufferPointer { call($0.baseAddress!, $0.count) }
        guard status >= 0 else { throw DataError(String(cString: error), url: url) }
        return status
    }

    /// What `name` refers to.
    func kind(_ name: String) throws -> chdf5_kind {
        chdf5_kind(UInt32(try check { chdf5_object_kind(handle, name, $0, $1) }))
    }

    /// Shape and element class of the dataset `name`.
    func describe(_ name: String) throws -> chdf5_dataset_info {
        var info = chdf5_dataset_info()
        _ = try check { chdf5_describe_dataset(handle, name, &info, $0, $1) }
        return info
    }

    /// The dimensions in `info`.
    func dimensions(_ info: chdf5_dataset_info) -> [Int] {
        withUnsafeBytes(of: info.dims) { Array($0.bindMemory(to: UInt64.self).prefix(Int(info.rank))).map { Int($0) } }
    }

    /// True for integer and floating-point datasets.
    func isNumeric(_ info: chdf5_dataset_info) -> Bool {
        info.type_class == Int32(CHDF5_CLASS_FLOAT.rawValue) || info.type_class == Int32(CHDF5_CLASS_INTEGER.rawValue)
    }

    /// Reads the whole numeric dataset `name` as `count` floats.
    func readFloats(_ name: String, count: Int) throws -> [Float] {
        try [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            _ = try check { chdf5_read_floats(handle, name, buffer.baseAddress, $0, $1) }
            initialized = count
        }
    }

    /// Reads the rows `range` of the 1-D or 2-D dataset `name` (`columns` floats per row) through a hyperslab.
    func readFloatRows(_ name: String, _ range: Range<Int>, columns: Int) throws -> [Float] {
        let count = range.count * columns
        return try [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            _ = try check {
                chdf5_read_float_rows(
                    handle, name, UInt64(range.lowerBound), UInt64(range.count), buffer.baseAddress, $0, $1)
            }
            initialized = count
        }
    }

    /// The number of rows `rows` selects (all `total` when nil), checked to lie within the table.
    func selectedRows(_ rows: [Range<Int>]?, of total: Int, in name: String) throws -> Int {
        guard let rows else { return total }
        for range in rows where range.lowerBound < 0 || range.upperBound > total {
            throw DataError(
                "rows \(range.lowerBound + 1)–\(range.upperBound) asked for, but \"\(name)\" holds \(total) rows",
                url: url)
        }
        return rows.reduce(0) { $0 + $1.count }
    }

    /// Collects the strings from a chdf5 call using the string-list convention; nil when it answers 1 (absent).
    func strings(
        _ call: (
            UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>, UnsafeMutablePointer<Int>, UnsafeMutablePointer<Int>,
            UnsafeMutablePointer<CChar>, Int
        ) -> Int32
    ) throws -> [String]? {
        var buffer: UnsafeMutablePointer<CChar>?
        var length = 0
        var count = 0
        guard try check({ call(&buffer, &length, &count, $0, $1) }) == 0 else { return nil }
        defer { chdf5_free(buffer) }
        guard let buffer else { return [] }
        let bytes = UnsafeRawBufferPointer(start: buffer, count: length)
        return bytes.split(separator: 0, omittingEmptySubsequences: false).prefix(count).map {
            String(decoding: $0, as: UTF8.self)
        }
    }

    /// Reads a 2-D dataset's rows `rows` (all when nil) and its column names; also returns its row count.
    func readMatrix(_ name: String, rows: [Range<Int>]? = nil) throws -> (table: Table, totalRows: Int) {
        let info = try describe(name)
        guard isNumeric(info) else { throw DataError("dataset \"\(name)\" does not hold numbers", url: url) }
        let shape = dimensions(info)
        guard shape.count == 2 else {
            let hint =
                shape.count == 1 ? "; to read 1-D datasets as columns, name their group (\"/\" for the file root)" : ""
            throw DataError(
                "dataset \"\(name)\" has rank \(shape.count) (shape \(shape)); expected 2 (rows × columns)\(hint)",
                url: url)
        }
        let selected = try selectedRows(rows, of: shape[0], in: name)
        let count = try bounded {
            try SizeLimits.requireHostArray(
                shape: [selected, shape[1]], elementSize: 4,
                what: "dataset \"\(name)\" of shape (\(shape[0]), \(shape[1]))"
                    + (rows == nil ? "" : ", \(selected) rows of it,") + " as Float32")
        }
        var values: [Float]
        if let rows {
            values = []
            values.reserveCapacity(count)
            for range in rows { values += try readFloatRows(name, range, columns: shape[1]) }
        } else {
            values = try readFloats(name, count: count)
        }
        let names = try columnNames(forMatrix: name, columns: shape[1])
        return (Table(columnNames: names, rowCount: selected, values: values), shape[0])
    }

    /// Names for the 2-D dataset `name`: its `columns` attribute, `<name>_columns`, a sibling `columns`, or `c0…`.
    func columnNames(forMatrix name: String, columns: Int) throws -> [String] {
        let parent = name.contains("/") ? String(name[..<name.lastIndex(of: "/")!]) + "/" : ""
        let sources: [(String, String?)] = [(name, "columns"), (name + "_columns", nil), (parent + "columns", nil)]
        for (object, attribute) in sources {
            guard let names = try strings({ chdf5_read_strings(handle, object, attribute, $0, $1, $2, $3, $4) }) else {
                continue
            }
            let source = attribute.map { "attribute \"\($0)\" of \"\(object)\"" } ?? "dataset \"\(object)\""
            guard names.count == columns else {
                throw DataError(
                    "\(source) holds \(names.count) column names but \"\(name)\" has \(columns) columns", url: url)
            }
            try requireUniqueColumnNames(names, source: source, url: url)
            return names
        }
        return (0..<columns).map { "c\($0)" }
    }

    /// The 1-D numeric datasets of `group` (name within the group, length), checked to be of equal length.
    func columnLayout(group: String) throws -> [(name: String, length: Int)] {
        let members = try strings { chdf5_list_members(handle, group, $0, $1, $2, $3, $4) } ?? []
        let prefix = group.hasSuffix("/") ? group : group + "/"
        var columns: [(name: String, length: Int)] = []
        for member in members where try kind(prefix + member) == CHDF5_KIND_DATASET {
            let info = try describe(prefix + member)
            guard isNumeric(info) else { continue }
            let shape = dimensions(info)
            guard shape.count == 1 else {
                throw DataError(
                    "dataset \"\(prefix + member)\" in table group \"\(group)\" has rank \(shape.count) (shape "
                        + "\(shape)); columns must be 1-D",
                    url: url)
            }
            if let first = columns.first, first.length != shape[0] {
                throw DataError(
                    "columns of different lengths in group \"\(group)\": \"\(first.name)\" has \(first.length) rows, "
                        + "\"\(member)\" has \(shape[0])",
                    url: url)
            }
            columns.append((member, shape[0]))
        }
        return columns
    }

    /// Runs `body`, turning a SizeLimitError into a DataError naming the file.
    func bounded<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as SizeLimitError { throw DataError(error.description, url: url) }
    }

    /// Reads the columns found by columnLayout(group:) into a row-major table: the rows `selection` (all when
    /// nil, hyperslabs of each column otherwise), and the table's row count.
    func readColumns(group: String, _ columns: [(name: String, length: Int)], rows selection: [Range<Int>]? = nil)
        throws -> (table: Table, totalRows: Int)
    {
        guard let total = columns.first?.length else {
            throw DataError("group \"\(group)\" holds no 1-D numeric datasets (columns)", url: url)
        }
        let prefix = group.hasSuffix("/") ? group : group + "/"
        let rows = try selectedRows(selection, of: total, in: group)
        let count = try bounded {
            try SizeLimits.requireHostArray(
                shape: [rows, columns.count], elementSize: 4,
                what: "the table in group \"\(group)\" (\(columns.count) columns of \(total) rows"
                    + (selection == nil ? "" : ", \(rows) of them") + ") as Float32")
        }
        var values = [Float](repeating: 0, count: count)
        for (index, column) in columns.enumerated() {
            var data: [Float]
            if let selection {
                data = []
                for range in selection { data += try readFloatRows(prefix + column.name, range, columns: 1) }
            } else {
                data = try readFloats(prefix + column.name, count: rows)
            }
            for row in 0..<rows { values[row * columns.count + index] = data[row] }
        }
        return (Table(columnNames: columns.map(\.name), rowCount: rows, values: values), total)
    }
}
