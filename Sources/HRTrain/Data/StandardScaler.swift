/// scikit-learn's `StandardScaler`: `z = (x − u) / s` per column, with `u` the mean and `s` the population
/// standard deviation (`ddof = 0`) of the rows it was fitted on. A constant column (s = 0) gets s = 1, as in
/// scikit-learn, and is reported in `constantColumns` so the caller can warn.
///
/// lwtnn writes the same transform as `(x + offset) * scale` with `offset = −u`, `scale = 1/s`.
public struct StandardScaler: Codable, Sendable, Equatable {
    /// Column means `u`.
    public var mean: [Double]
    /// Column scales `s` (population standard deviations, 1 for constant columns).
    public var scale: [Double]
    /// Indices of the columns that were constant in the fitted rows.
    public var constantColumns: [Int]

    /// Creates a scaler from known means and scales.
    public init(mean: [Double], scale: [Double], constantColumns: [Int] = []) {
        self.mean = mean
        self.scale = scale
        self.constantColumns = constantColumns
    }

    /// Fits on rows `rows` of a row-major matrix with `columns` columns. Accumulates in Double with a
    /// two-pass (mean, then squared deviations) computation.
    public static func fit(_ values: [Float], columns: Int, rows: Range<Int>) -> StandardScaler {
        precondition(!rows.isEmpty, "StandardScaler.fit needs at least one row")
        var sum = [Double](repeating: 0, count: columns)
        values.withUnsafeBufferPointer { v in
            for r in rows { for c in 0..<columns { sum[c] += Double(v[r * columns + c]) } }
        }
        let n = Double(rows.count)
        let mean = sum.map { $0 / n }
        var squares = [Double](repeating: 0, count: columns)
        values.withUnsafeBufferPointer { v in
            for r in rows {
                for c in 0..<columns {
                    let d = Double(v[r * columns + c]) - mean[c]
                    squares[c] += d * d
                }
            }
        }
        var scale = squares.map { ($0 / n).squareRoot() }
        var constant: [Int] = []
        for c in 0..<columns where scale[c] == 0 || !scale[c].isFinite {
            scale[c] = 1
            constant.append(c)
        }
        return StandardScaler(mean: mean, scale: scale, constantColumns: constant)
    }

    /// Applies the transform on the host: `(x − u) / s`.
    public func transform(_ values: [Float], columns: Int) -> [Float] {
        var out = values
        for i in out.indices {
            let c = i % columns
            out[i] = Float((Double(values[i]) - mean[c]) / scale[c])
        }
        return out
    }

    /// Inverts the transform: `x = z·s + u`.
    public func inverse(_ values: [Float], columns: Int) -> [Float] {
        var out = values
        for i in out.indices {
            let c = i % columns
            out[i] = Float(Double(values[i]) * scale[c] + mean[c])
        }
        return out
    }
}
