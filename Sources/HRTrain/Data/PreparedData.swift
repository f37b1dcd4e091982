/// Feature and target rows of one part of a sample (training, validation or test), raw (unscaled).
public struct SampleRows: Sendable {
    public var features: [Float]
    public var targets: [Float]
    public var rows: Int
}

/// A sample split and ready for training: column selection, test / validation split (Keras semantics), and
/// the StandardScaler fitted on the training rows.
public struct PreparedData: Sendable {
    public var featureNames: [String]
    public var targetNames: [String]
    public var train: SampleRows
    public var validation: SampleRows
    public var test: SampleRows?
    public var featureScaler: StandardScaler
    public var targetScaler: StandardScaler?
    /// Things the user should know that did not stop the run (constant features).
    public var warnings: [String]

    /// Selects the named columns of `table` (read from `file`) and splits it.
    ///
    /// - The test rows are `testTable` when given, else the last `testFraction` of the rows.
    /// - Of the remaining rows, the last `validationSplit` are the validation rows (Keras' `validation_split`:
    ///   taken before any shuffling); the rest are the training rows.
    /// - The scaler is fitted on training + validation rows, i.e. on everything but the test rows — what the
    ///   thesis' workflow did (`StandardScaler().fit_transform(X_train)`, then `fit(validation_split=0.2)`) —
    ///   unless `scalers` are given (a resumed run keeps its checkpoint's): then nothing is fitted.
    public static func prepare(
        table: Table, file: String, features: [String]?, targets: [String], testTable: Table? = nil,
        testFile: String? = nil, testFraction: Double = 0, validationSplit: Double, scaleTargets: Bool,
        scalers: (feature: StandardScaler, target: StandardScaler?)? = nil
    ) throws -> PreparedData {
        let targetIndices = try table.indices(of: targets, file: file, field: .targets)
        let featureNames = features ?? table.columnNames.filter { !targets.contains($0) }
        guard !featureNames.isEmpty else {
            throw DataError(
                "no feature columns left after taking the targets \(targets.joined(separator: ","))", file: file,
                field: .features)
        }
        if let clash = featureNames.first(where: { targets.contains($0) }) {
            throw DataError("column \"\(clash)\" is both a feature and a target", file: file, field: .features)
        }
        let featureIndices = try table.indices(of: featureNames, file: file, field: .features)
        guard (0..<1).contains(testFraction) else {
            throw DataError("must be in [0, 1), got \(testFraction)", file: file, field: .testFraction)
        }
        guard (0..<1).contains(validationSplit) else {
            throw DataError("must be in [0, 1), got \(validationSplit)", file: file, field: .validationSplit)
        }

        let x = table.selecting(featureIndices)
        let y = table.selecting(targetIndices)
        var test: SampleRows?
        var usable = table.rowCount
        if let testTable {
            let testFile = testFile ?? "test file"
            let tx = try testTable.indices(of: featureNames, file: testFile, field: .testFile)
            let ty = try testTable.indices(of: targets, file: testFile, field: .testFile)
            test = SampleRows(
                features: testTable.selecting(tx).values, targets: testTable.selecting(ty).values,
                rows: testTable.rowCount)
        } else if testFraction > 0 {
            let testRows = Int((Double(table.rowCount) * testFraction).rounded())
            guard testRows >= 1, testRows < table.rowCount else {
                throw DataError(
                    "\(table.rowCount) rows cannot be split with a test fraction of \(testFraction)", file: file,
                    field: .testFraction)
            }
            usable = table.rowCount - testRows
            test = slice(x, y, usable..<table.rowCount)
        }
        let validationRows = Int((Double(usable) * validationSplit).rounded(.down))
        let trainRows = usable - validationRows
        guard trainRows >= 2 else {
            throw DataError(
                "only \(trainRows) training row\(trainRows == 1 ? "" : "s") left after the test and validation "
                    + "splits (\(table.rowCount) rows in all); training needs at least 2",
                file: file, field: .validationSplit)
        }
        if validationSplit > 0 && validationRows == 0 {
            throw DataError(
                "\(usable) rows are too few for a validation split of \(validationSplit): no validation row",
                file: file, field: .validationSplit)
        }
        var warnings: [String] = []
        let featureScaler =
            scalers?.feature ?? StandardScaler.fit(x.values, columns: featureNames.count, rows: 0..<usable)
        if scalers == nil {
            for c in featureScaler.constantColumns {
                warnings.append(
                    "feature \"\(featureNames[c])\" is constant in the training rows (\(x.values[c])): its scale "
                        + "is set to 1, as scikit-learn does; it carries no information")
            }
        }
        let targetScaler =
            scalers.map { $0.target }
            ?? (scaleTargets ? StandardScaler.fit(y.values, columns: targets.count, rows: 0..<usable) : nil)
        return PreparedData(
            featureNames: featureNames, targetNames: targets, train: slice(x, y, 0..<trainRows),
            validation: slice(x, y, trainRows..<usable),
            test: test, featureScaler: featureScaler, targetScaler: targetScaler, warnings: warnings)
    }

    private static func slice(_ x: Table, _ y: Table, _ rows: Range<Int>) -> SampleRows {
        SampleRows(
            features: Array(x.values[rows.lowerBound * x.columnCount..<rows.upperBound * x.columnCount]),
            targets: Array(y.values[rows.lowerBound * y.columnCount..<rows.upperBound * y.columnCount]),
            rows: rows.count)
    }
}
