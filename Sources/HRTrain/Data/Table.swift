/// A rectangular sample of named Float32 columns, stored row-major.
///
/// This is the one in-memory form every reader produces and every writer consumes:
/// `values[row * columnCount + column]`.
public struct Table: Sendable, Equatable {
    /// Column names, in file order.
    public var columnNames: [String]
    /// Number of rows (events).
    public var rowCount: Int
    /// Row-major values, `rowCount × columnNames.count`.
    public var values: [Float]

    /// Creates a table; `values.count` must equal `rowCount * columnNames.count`.
    public init(columnNames: [String], rowCount: Int, values: [Float]) {
        precondition(values.count == rowCount * columnNames.count, "Table: values.count does not match the shape")
        self.columnNames = columnNames
        self.rowCount = rowCount
        self.values = values
    }

    /// Number of columns.
    public var columnCount: Int { columnNames.count }

    /// The index of the column called `name`, if any.
    public func columnIndex(_ name: String) -> Int? { columnNames.firstIndex(of: name) }

    /// One column as a contiguous array.
    public func column(_ index: Int) -> [Float] {
        let stride = columnCount
        return (0..<rowCount).map { values[$0 * stride + index] }
    }

    /// A new table holding the named columns, in the order given (row-major).
    public func selecting(_ indices: [Int]) -> Table {
        let stride = columnCount
        var out = [Float](repeating: 0, count: rowCount * indices.count)
        out.withUnsafeMutableBufferPointer { dst in
            values.withUnsafeBufferPointer { src in
                for r in 0..<rowCount {
                    for (j, c) in indices.enumerated() { dst[r * indices.count + j] = src[r * stride + c] }
                }
            }
        }
        return Table(columnNames: indices.map { columnNames[$0] }, rowCount: rowCount, values: out)
    }
}
