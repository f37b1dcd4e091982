import Foundation

/// Feature and target rows of one part of a sample (training, validation or test), raw (unscaled).
public struct SampleRows: Sendable {
    public var features: [Float]
    public var targets: [Float]
    public var rows: Int
    /// One loss weight per row (a weight column and/or |target| flattening); nil: unweighted.
    public var weights: [Float]? = nil
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
    /// The feature columns whose raw values are subtracted from the targets (residual learning), if any.
    public var baseline: [String]?
    /// The |target| flattening the weights come from, if any.
    public var flattening: TargetMagnitudeFlattening?
    /// Things the user should know that did not stop the run (constant features).
    public var warnings: [String]
    /// In a data-parallel job (`prepareShard`): which of the sample's training and validation rows `train` and
    /// `validation` hold. Nil: all of them.
    public var shard: RowShard? = nil

    /// The training rows of the whole sample (on all ranks together).
    public var totalTrainingRows: Int { shard?.trainingRows ?? train.rows }
    /// The validation rows of the whole sample (on all ranks together).
    public var totalValidationRows: Int { shard?.validationRows ?? validation.rows }

    /// Selects the named columns of `table` (read from `file`) and splits it.
    ///
    /// - The test rows are `testTable` when given, else the last `testFraction` of the rows.
    /// - Of the remaining rows, the last `validationSplit` are the validation rows (Keras' `validation_split`:
    ///   taken before any shuffling); the rest are the training rows.
    /// - The scaler is fitted on training + validation rows, i.e. on everything but the test rows — what the
    ///   thesis' workflow did (`StandardScaler().fit_transform(X_train)`, then `fit(validation_split=0.2)`) —
    ///   unless `scalers` are given (a resumed run keeps its checkpoint's): then nothing is fitted.
    /// - `weightColumn` names a column of per-event loss weights (finite, > 0; never a feature); `flattening`
    ///   multiplies them by `TargetMagnitudeFlattening` weights fitted on the training rows' |target|.
    /// - `baseline` names one feature column per target: the training and validation targets become
    ///   `target − baseline` (the target scaler, if any, is fitted on those); the test targets stay raw.
    public static func prepare(
        table: Table, file: String, features: [String]?, targets: [String], testTable: Table? = nil,
        testFile: String? = nil, testFraction: Double = 0, validationSplit: Double, scaleTargets: Bool,
        scalers: (feature: StandardScaler, target: StandardScaler?)? = nil, weightColumn: String? = nil,
        flattening: FlatteningRequest? = nil, baseline: [String]? = nil
    ) throws -> PreparedData {
        let split = try SampleSplit(
            rows: table.rowCount, file: file, testFraction: testFraction, separateTest: testTable != nil,
            validationSplit: validationSplit)
        return try assemble(
            table: table, file: file, layout: (split.trainingRows, split.validationRows), globalRow: { $0 },
            reduce: nil, features: features, targets: targets, testTable: testTable, testFile: testFile,
            scaleTargets: scaleTargets, scalers: scalers, weightColumn: weightColumn, flattening: flattening,
            baseline: baseline)
    }

    /// The preparation of one rank of a data-parallel job of `ranks` ranks, from only the rows it holds.
    ///
    /// The split is that of `prepare` over the file's `totalRows` rows (test, then validation rows at the end);
    /// this rank holds its contiguous part of the training rows and of the validation rows
    /// (`Sharding.range`), and rank 0 also the test rows. `readRows` is asked once for those row ranges (of the
    /// file; a HDF5 hyperslab or `.npy` offsets read only them) and returns them concatenated. Everything
    /// fitted is fitted on all ranks' rows through `reduce` (a sum over the ranks, `Communicator.allReduceSum`):
    /// the scalers from (n, Σx) and Σ(x − μ)² in Double (`StandardScaler.fit(_:columns:rows:reduce:)`), the
    /// |target| flattening from the summed histogram. `testTable` (a separate test file) is given to rank 0;
    /// `separateTest` tells every rank that there is one. The result's `shard` records the layout.
    public static func prepareShard(
        totalRows: Int, file: String, rank: Int, ranks: Int, reduce: @escaping SynchronizedBatchNorm.Reduction,
        readRows: ([Range<Int>]) throws -> Table, features: [String]?, targets: [String], testTable: Table? = nil,
        separateTest: Bool = false, testFile: String? = nil, testFraction: Double = 0, validationSplit: Double,
        scaleTargets: Bool, scalers: (feature: StandardScaler, target: StandardScaler?)? = nil,
        weightColumn: String? = nil, flattening: FlatteningRequest? = nil, baseline: [String]? = nil
    ) throws -> PreparedData {
        let split = try SampleSplit(
            rows: totalRows, file: file, testFraction: testFraction, separateTest: separateTest || testTable != nil,
            validationSplit: validationSplit)
        let shard = RowShard(split: split, rank: rank, ranks: ranks)
        let offset = split.trainingRows
        let validation = offset + shard.validation.lowerBound..<offset + shard.validation.upperBound
        var ranges = [shard.training, validation]
        if rank == 0 && split.usableRows < totalRows { ranges.append(split.usableRows..<totalRows) }
        let table = try readRows(ranges)
        guard table.rowCount == ranges.reduce(0, { $0 + $1.count }) else {
            throw DataError(
                "read \(table.rowCount) rows where \(ranges.reduce(0) { $0 + $1.count }) were asked for", file: file)
        }
        let global = { (local: Int) -> Int in
            var rest = local
            for range in ranges {
                if rest < range.count { return range.lowerBound + rest }
                rest -= range.count
            }
            return local
        }
        var prepared = try assemble(
            table: table, file: file, layout: (shard.training.count, shard.validation.count), globalRow: global,
            reduce: reduce, features: features, targets: targets, testTable: rank == 0 ? testTable : nil,
            testFile: testFile, scaleTargets: scaleTargets, scalers: scalers, weightColumn: weightColumn,
            flattening: flattening, baseline: baseline)
        prepared.shard = shard
        return prepared
    }

    /// The body of `prepare` and `prepareShard` over a table holding `layout.training` training rows, then
    /// `layout.validation` validation rows, then (without `testTable`) the test rows; `globalRow` maps a row of
    /// `table` to the file's row (for messages); `reduce` sums the fits' statistics over ranks (nil: one
    /// process, fitted exactly as before).
    private static func assemble(
        table: Table, file: String, layout: (training: Int, validation: Int), globalRow: (Int) -> Int,
        reduce: SynchronizedBatchNorm.Reduction?, features: [String]?, targets: [String], testTable: Table?,
        testFile: String?, scaleTargets: Bool, scalers: (feature: StandardScaler, target: StandardScaler?)?,
        weightColumn: String?, flattening: FlatteningRequest?, baseline: [String]?
    ) throws -> PreparedData {
        let targetIndices = try table.indices(of: targets, file: file, field: .targets)
        let featureNames =
            features ?? table.columnNames.filter { !targets.contains($0) && $0 != weightColumn }
        guard !featureNames.isEmpty else {
            throw DataError(
                "no feature columns left after taking the targets \(targets.joined(separator: ","))", file: file,
                field: .features)
        }
        if let clash = featureNames.first(where: { targets.contains($0) }) {
            throw DataError("column \"\(clash)\" is both a feature and a target", file: file, field: .features)
        }
        if let weightColumn, featureNames.contains(weightColumn) {
            throw DataError(
                "the weight column \"\(weightColumn)\" cannot also be a feature", file: file, field: .weights)
        }
        if let baseline {
            guard baseline.count == targets.count else {
                throw DataError(
                    "names \(baseline.count) column\(baseline.count == 1 ? "" : "s"); give one per target "
                        + "(\(targets.joined(separator: ",")))", file: file, field: .baseline)
            }
            for name in baseline where !featureNames.contains(name) {
                throw DataError(
                    table.columnIndex(name) == nil
                        ? DataError.unknownColumn(name, available: table.columnNames, file: file).message
                        : "the baseline column \"\(name)\" must be one of the features (the model adds it back "
                            + "from its inputs)", file: file, field: .baseline)
            }
        }
        let featureIndices = try table.indices(of: featureNames, file: file, field: .features)

        let x = table.selecting(featureIndices)
        var y = table.selecting(targetIndices)
        let weightIndex = try weightColumn.map { try table.indices(of: [$0], file: file, field: .weights)[0] }
        var test: SampleRows?
        let (trainRows, validationRows) = layout
        let usable = trainRows + validationRows
        if let testTable {
            let testFile = testFile ?? "test file"
            let tx = try testTable.indices(of: featureNames, file: testFile, field: .testFile)
            let ty = try testTable.indices(of: targets, file: testFile, field: .testFile)
            test = SampleRows(
                features: testTable.selecting(tx).values, targets: testTable.selecting(ty).values,
                rows: testTable.rowCount)
        } else if usable < table.rowCount {
            test = slice(x, y, usable..<table.rowCount)
        }
        var warnings: [String] = []
        func fit(_ values: [Float], columns: Int) throws -> StandardScaler {
            guard let reduce else { return StandardScaler.fit(values, columns: columns, rows: 0..<usable) }
            return try StandardScaler.fit(values, columns: columns, rows: 0..<usable, reduce: reduce)
        }
        let featureScaler = try scalers?.feature ?? fit(x.values, columns: featureNames.count)
        if scalers == nil {
            for c in featureScaler.constantColumns {
                warnings.append(
                    "feature \"\(featureNames[c])\" is constant in the training rows (\(x.values[c])): its scale "
                        + "is set to 1, as scikit-learn does; it carries no information")
            }
        }
        // Weights: the column's, times the flattening's (fitted on the training rows' raw |target|).
        var weights: [Float]?
        if let weightIndex {
            var column = [Float](repeating: 0, count: usable)
            for r in 0..<usable {
                let w = table.values[r * table.columnCount + weightIndex]
                guard w.isFinite, w > 0 else {
                    throw DataError(
                        "the weight \(w) of row \(globalRow(r) + 1) is not a finite number > 0", file: file,
                        line: globalRow(r) + 1,
                        column: weightIndex + 1, columnName: weightColumn, field: .weights)
                }
                column[r] = w
            }
            weights = column
        }
        var fittedFlattening: TargetMagnitudeFlattening?
        if let flattening {
            let magnitudes = rowMagnitudes(Array(y.values[0..<usable * targets.count]), columns: targets.count)
            let fitted: TargetMagnitudeFlattening
            if let reduce {
                // The histogram of every rank's training rows (exact: integer counts in Double).
                var counts = TargetMagnitudeFlattening.counts(
                    magnitudes: Array(magnitudes[0..<trainRows]), edges: flattening.edges
                ).map(Double.init)
                try reduce(&counts)
                fitted = try TargetMagnitudeFlattening.fit(
                    counts: counts.map { Int($0) }, edges: flattening.edges, power: flattening.power,
                    maximumWeight: flattening.maximumWeight, file: file)
            } else {
                fitted = try TargetMagnitudeFlattening.fit(
                    magnitudes: Array(magnitudes[0..<trainRows]), edges: flattening.edges, power: flattening.power,
                    maximumWeight: flattening.maximumWeight, file: file)
            }
            var w = weights ?? [Float](repeating: 1, count: usable)
            for r in 0..<usable { w[r] = Float(Double(w[r]) * fitted.weight(magnitude: magnitudes[r])) }
            weights = w
            fittedFlattening = fitted
        }
        // Residual learning: the targets of the non-test rows become target − baseline.
        if let baseline {
            let baselineIndices = baseline.map { featureNames.firstIndex(of: $0)! }
            let (f, t) = (featureNames.count, targets.count)
            for r in 0..<usable {
                for (c, b) in baselineIndices.enumerated() { y.values[r * t + c] -= x.values[r * f + b] }
            }
        }
        let targetScaler =
            try scalers.map { $0.target } ?? (scaleTargets ? fit(y.values, columns: targets.count) : nil)
        var train = slice(x, y, 0..<trainRows)
        var validation = slice(x, y, trainRows..<usable)
        if let weights {
            train.weights = Array(weights[0..<trainRows])
            validation.weights = Array(weights[trainRows..<usable])
        }
        return PreparedData(
            featureNames: featureNames, targetNames: targets, train: train, validation: validation,
            test: test, featureScaler: featureScaler, targetScaler: targetScaler, baseline: baseline,
            flattening: fittedFlattening, warnings: warnings)
    }

    /// The rows `round(rows × fraction)` held out as the test set, computed from the fraction's shortest
    /// decimal form (`0.3721885`) in exact decimal arithmetic, halves rounded up: no binary rounding error can
    /// move the count by one (`25 × 0.58` is 14.5, not 14.499999999999998). `1349234.0 / 3625136` (the
    /// thesis' test share) gives exactly 1,349,234 test rows of the thesis' 3,625,136.
    public static func testRowCount(rows: Int, fraction: Double) -> Int {
        guard var exact = Decimal(string: "\(fraction)", locale: Locale(identifier: "en_US_POSIX")) else {
            return Int((Double(rows) * fraction).rounded())
        }
        exact *= Decimal(rows)
        var rounded = Decimal()
        NSDecimalRound(&rounded, &exact, 0, .plain)
        return NSDecimalNumber(decimal: rounded).intValue
    }

    private static func slice(_ x: Table, _ y: Table, _ rows: Range<Int>) -> SampleRows {
        SampleRows(
            features: Array(x.values[rows.lowerBound * x.columnCount..<rows.upperBound * x.columnCount]),
            targets: Array(y.values[rows.lowerBound * y.columnCount..<rows.upperBound * y.columnCount]),
            rows: rows.count)
    }
}

/// How the rows of a sample are split (the rules of `PreparedData.prepare`): the last `testFraction` of the rows
/// are the test rows (none with a separate test file), the last `validationSplit` of the rest the validation
/// rows, the others the training rows.
public struct SampleSplit: Sendable, Equatable {
    /// All rows of the file.
    public var totalRows: Int
    /// The rows before the test rows (training + validation).
    public var usableRows: Int
    /// The training rows (the first ones).
    public var trainingRows: Int
    /// The validation rows (after the training rows).
    public var validationRows: Int

    /// The split of `rows` rows; errors (naming `file`) for fractions outside [0, 1) and splits that leave
    /// fewer than two training rows, no validation row or no test row.
    public init(rows: Int, file: String, testFraction: Double, separateTest: Bool, validationSplit: Double) throws {
        guard (0..<1).contains(testFraction) else {
            throw DataError("must be in [0, 1), got \(testFraction)", file: file, field: .testFraction)
        }
        guard (0..<1).contains(validationSplit) else {
            throw DataError("must be in [0, 1), got \(validationSplit)", file: file, field: .validationSplit)
        }
        totalRows = rows
        usableRows = rows
        if !separateTest && testFraction > 0 {
            let testRows = PreparedData.testRowCount(rows: rows, fraction: testFraction)
            guard testRows >= 1, testRows < rows else {
                throw DataError(
                    "\(rows) rows cannot be split with a test fraction of \(testFraction)", file: file,
                    field: .testFraction)
            }
            usableRows = rows - testRows
        }
        // Keras' train_validation_split: split_at = floor(n · (1 − validation_split)), the same Double operations.
        trainingRows = Int((Double(usableRows) * (1.0 - validationSplit)).rounded(.down))
        validationRows = usableRows - trainingRows
        guard trainingRows >= 2 else {
            throw DataError(
                "only \(trainingRows) training row\(trainingRows == 1 ? "" : "s") left after the test and validation "
                    + "splits (\(rows) rows in all); training needs at least 2",
                file: file, field: .validationSplit)
        }
        if validationSplit > 0 && validationRows == 0 {
            throw DataError(
                "\(usableRows) rows are too few for a validation split of \(validationSplit): no validation row",
                file: file, field: .validationSplit)
        }
    }
}

/// Flattening of the |target| spectrum by event weights (see `TargetMagnitudeFlattening`).
public struct FlatteningRequest: Codable, Sendable, Equatable {
    /// Bin edges of |target|.
    public var edges: [Double]
    /// The power α of `(N/K/N_k)^α`.
    public var power: Double
    /// The cap on the raw bin weight.
    public var maximumWeight: Double
    /// Creates the request.
    public init(
        edges: [Double], power: Double = 1, maximumWeight: Double = TargetMagnitudeFlattening.defaultMaximumWeight
    ) {
        self.edges = edges
        self.power = power
        self.maximumWeight = maximumWeight
    }
}
