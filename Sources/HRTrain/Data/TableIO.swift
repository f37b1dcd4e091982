import Foundation

/// The file formats a table can be read from and written to.
public enum TableFormat: String, Sendable, CaseIterable {
    case csv, npy, hdf5

    /// The format named by the file's extension (`.csv`, `.npy`, `.h5` or `.hdf5`, any case).
    public init(url: URL, field: DataField? = nil) throws {
        switch url.pathExtension.lowercased() {
        case "csv": self = .csv
        case "npy": self = .npy
        case "h5", "hdf5": self = .hdf5
        case let other:
            let found = other.isEmpty ? "no extension" : "extension \".\(other)\""
            throw DataError(
                "unknown table format (\(found)); use .csv, .npy, .h5 or .hdf5", file: url.path, field: field)
        }
    }
}

extension TableFormat {
    /// Whether a range of rows can be read without reading the others: HDF5 (hyperslab selections) and `.npy`
    /// (rows at fixed offsets), not CSV (a row's place is known only after reading the rows before it).
    public var readsRowRanges: Bool { self != .csv }
}

/// Reads only the rows `rows` (half-open ranges of 0-based rows, concatenated in the order given) of a `.npy`
/// or HDF5 file, and returns them with the file's total row count; `rows: []` reads only the shape and the
/// column names. A non-finite value is an error naming its row in the file (rows cannot be dropped here: which
/// rows remain would depend on the rows not read). CSV is refused (`TableFormat.readsRowRanges`).
public func readTableRows(_ url: URL, rows: [Range<Int>], options: ReadOptions = ReadOptions()) throws
    -> (table: Table, totalRows: Int)
{
    do {
        let format = try TableFormat(url: url)
        let read: (table: Table, totalRows: Int)
        switch format {
        case .csv:
            throw DataError("a CSV file cannot be read by row ranges; read it whole", url: url)
        case .npy: read = try NPYFormat.read(from: url, rows: rows)
        case .hdf5: read = try HDF5Format.readRows(from: url, dataset: options.dataset, rows: rows)
        }
        guard read.totalRows > 0 else { throw DataError("the table has no rows", url: url) }
        let table = read.table
        if let first = table.values.firstIndex(where: { !$0.isFinite }) {
            let column = first % table.columnCount
            var local = first / table.columnCount
            var row = local
            for range in rows {
                if local < range.count {
                    row = range.lowerBound + local
                    break
                }
                local -= range.count
            }
            throw DataError(
                "row \(row + 1) holds \(table.values[first]) (as Float32), which is not finite (use the option to drop "
                    + "such rows)", url: url, column: column + 1, columnName: table.columnNames[column])
        }
        return read
    } catch var error as DataError {
        error.field = error.field ?? options.field
        throw error
    } catch let error as SizeLimitError {
        throw DataError(error.description, file: url.path, field: options.field)
    }
}

extension Table {
    /// The rows `ranges` (concatenated in the order given) as a new table.
    public func rows(_ ranges: [Range<Int>]) -> Table {
        var values: [Float] = []
        values.reserveCapacity(ranges.reduce(0) { $0 + $1.count } * columnCount)
        for range in ranges { values += self.values[range.lowerBound * columnCount..<range.upperBound * columnCount] }
        return Table(columnNames: columnNames, rowCount: values.count / max(columnCount, 1), values: values)
    }
}

/// How readTable reads a file.
public struct ReadOptions: Sendable {
    /// Drop rows holding NaN or ±Inf in any column (and count them) instead of failing.
    public var dropNonFinite: Bool
    /// HDF5 only: the 2-D dataset or the group of column datasets to read (default `data`).
    public var dataset: String?
    /// The columns to keep, in this order; all when nil.
    public var columns: [String]?
    /// The field that named the file, given in error messages.
    public var field: DataField?

    /// Creates options; the defaults read every column and reject non-finite values.
    public init(dropNonFinite: Bool = false, dataset: String? = nil, columns: [String]? = nil, field: DataField? = nil)
    {
        self.dropNonFinite = dropNonFinite
        self.dataset = dataset
        self.columns = columns
        self.field = field
    }
}

/// A table read from a file and the number of rows dropped for holding NaN or ±Inf.
public struct TableReadResult: Sendable {
    /// The rows kept.
    public var table: Table
    /// Rows dropped under `ReadOptions.dropNonFinite`.
    public var droppedRowCount: Int
}

/// Reads a table in the format named by the file's extension (dropped rows are not reported).
public func readTable(_ url: URL, options: ReadOptions = ReadOptions()) throws -> Table {
    try readTableWithReport(url, options: options).table
}

/// Reads a table in the format named by the file's extension and reports how many rows were dropped.
public func readTableWithReport(_ url: URL, options: ReadOptions = ReadOptions()) throws -> TableReadResult {
    do {
        var result: TableReadResult
        switch try TableFormat(url: url) {
        case .csv:
            let read = try CSVFormat.read(from: url, dropNonFinite: options.dropNonFinite)
            result = TableReadResult(table: read.table, droppedRowCount: read.droppedRowCount)
        case .npy:
            result = try checkFinite(NPYFormat.read(from: url), url: url, drop: options.dropNonFinite)
        case .hdf5:
            result = try checkFinite(
                HDF5Format.read(from: url, dataset: options.dataset), url: url, drop: options.dropNonFinite)
        }
        guard result.table.rowCount > 0 else { throw DataError("the table has no rows", url: url) }
        if let names = options.columns {
            result.table = result.table.selecting(try result.table.indices(of: names, file: url.path))
        }
        return result
    } catch var error as DataError {
        error.field = error.field ?? options.field
        throw error
    } catch let error as SizeLimitError {
        throw DataError(error.description, file: url.path, field: options.field)
    }
}

/// Writes `table` in the format named by the file's extension, atomically (HDF5: dataset `/data`).
public func writeTable(_ table: Table, to url: URL) throws {
    switch try TableFormat(url: url) {
    case .csv: try CSVFormat.write(table, to: url)
    case .npy: try NPYFormat.write(table, to: url)
    case .hdf5: try HDF5Format.write(table, to: url)
    }
}

extension Table {
    /// The indices of the named columns; an unknown name fails listing the available ones.
    public func indices(of names: [String], file: String, field: DataField? = nil) throws -> [Int] {
        try names.map { name in
            guard let index = columnIndex(name) else {
                throw DataError.unknownColumn(name, available: columnNames, file: file, field: field)
            }
            return index
        }
    }
}

/// Refuses a list of column names holding one name twice (both would read the first column, and the
/// second would be lost); `source` says where the names come from (`attribute "columns" of "data"`).
func requireUniqueColumnNames(_ names: [String], source: String, url: URL) throws {
    var seen: [String: Int] = [:]
    for (index, name) in names.enumerated() {
        if let first = seen[name] {
            throw DataError(
                "\(source) names two columns \"\(name)\" (columns \(first + 1) and \(index + 1)); "
                    + "column names must be unique",
                url: url, column: index + 1, columnName: name)
        }
        seen[name] = index
    }
}

/// Rejects (or, with `drop`, removes and counts) rows holding NaN or ±Inf; errors give 1-based row and column.
private func checkFinite(_ table: Table, url: URL, drop: Bool) throws -> TableReadResult {
    guard let first = table.values.firstIndex(where: { !$0.isFinite }) else {
        return TableReadResult(table: table, droppedRowCount: 0)
    }
    let columns = table.columnCount
    guard drop else {
        let column = first % columns
        throw DataError(
            "row \(first / columns + 1) holds \(table.values[first]) (as Float32), which is not finite (use the option "
                + "to drop such rows)",
            url: url, column: column + 1, columnName: table.columnNames[column])
    }
    var kept: [Float] = []
    kept.reserveCapacity(table.values.count)
    for row in 0..<table.rowCount {
        let values = table.values[row * columns..<(row + 1) * columns]
        if values.allSatisfy(\.isFinite) { kept.append(contentsOf: values) }
    }
    let rows = kept.count / columns
    guard rows > 0 else { throw DataError("all \(table.rowCount) rows hold NaN or infinite values", url: url) }
    return TableReadResult(
        table: Table(columnNames: table.columnNames, rowCount: rows, values: kept),
        droppedRowCount: table.rowCount - rows)
}
