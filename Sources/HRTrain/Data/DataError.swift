import Foundation

/// Which input of the caller a `DataError` is about. The library names fields, never command-line flags;
/// a front end (the CLI) maps each field to its own vocabulary (`features` → `--features`).
public enum DataField: String, Codable, Sendable, CaseIterable {
    /// The training or evaluation sample.
    case data
    /// The feature columns.
    case features
    /// The target columns.
    case targets
    /// A separate test sample.
    case testFile = "test file"
    /// The fraction of the rows held out as the test set.
    case testFraction = "test fraction"
    /// The fraction of the training rows used for validation.
    case validationSplit = "validation split"
    /// A training checkpoint.
    case checkpoint
    /// A model file.
    case model
    /// The model file training starts from (its initial weights).
    case initialModel = "initial model"
    /// A metrics file (one JSON line per epoch).
    case metrics
    /// An output file.
    case output
    /// A second output file (the test part of a split sample).
    case testOutput = "test output"
    /// Columns of a raw estimate compared with the network.
    case compare
    /// The sample a scaler is fitted on.
    case scalerData = "scaler data"
    /// The column of per-event loss weights.
    case weights
    /// The bin edges, power or cap of the |target| flattening.
    case flattening = "target-magnitude flattening"
    /// The baseline columns of residual learning.
    case baseline
}

/// A problem with a data file or a data field, described for the person who has to fix it.
///
/// The description starts with the field (if any) and the file, then the 1-based line and the 1-based
/// column with its name where they are known:
/// `data: events.csv:1207: column 5 ("hr_all_x"): cannot parse "1.2.3" as a number`.
public struct DataError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The input of the caller that named the file or column, if any.
    public var field: DataField?
    /// The file, as the user named it.
    public var file: String
    /// The 1-based line (text formats) or row (binary formats), if relevant.
    public var line: Int?
    /// The 1-based column index, if relevant.
    public var column: Int?
    /// The name of that column, if known.
    public var columnName: String?
    /// What is wrong, without the location.
    public var message: String

    /// Creates an error located at `file` and optionally a line and a column.
    public init(
        _ message: String, file: String, line: Int? = nil, column: Int? = nil, columnName: String? = nil,
        field: DataField? = nil
    ) {
        self.field = field
        self.file = file
        self.line = line
        self.column = column
        self.columnName = columnName
        self.message = message
    }

    /// Creates an error located at the file `url`.
    public init(_ message: String, url: URL, line: Int? = nil, column: Int? = nil, columnName: String? = nil) {
        self.init(message, file: url.path, line: line, column: column, columnName: columnName)
    }

    /// `field: file:line: column N ("name"): message`, leaving out the parts that are unknown.
    public var description: String { described(as: field.map { "\($0.rawValue):" }) }

    /// `label file:line: column N ("name"): message`: the description with the field replaced by `label`
    /// (a front end's name for it, e.g. a command-line flag), or without one when `label` is nil.
    public func described(as label: String?) -> String {
        var text = label.map { "\($0) " } ?? ""
        text += file
        if let line { text += ":\(line)" }
        text += ": "
        if let column {
            text += "column \(column)"
            if let columnName { text += " (\"\(columnName)\")" }
            text += ": "
        }
        return text + message
    }

    /// The error for a column name that `available` lacks: lists the names and suggests the closest.
    public static func unknownColumn(_ name: String, available: [String], file: String, field: DataField? = nil)
        -> DataError
    {
        var message = "no column named \"\(name)\""
        if let guess = closestName(to: name, in: available) { message += "; did you mean \"\(guess)\"?" }
        message += " Available columns: " + available.joined(separator: ", ")
        return DataError(message, file: file, field: field)
    }

    /// The candidate nearest to `name` by edit distance (case-insensitive), if it is plausibly a typo.
    static func closestName(to name: String, in candidates: [String]) -> String? {
        let target = Array(name.lowercased().utf8)
        var best: (name: String, distance: Int)?
        for candidate in candidates {
            let distance = editDistance(target, Array(candidate.lowercased().utf8))
            if distance < (best?.distance ?? Int.max) { best = (candidate, distance) }
        }
        guard let best, best.distance <= max(2, target.count / 3) else { return nil }
        return best.name
    }

    /// Levenshtein distance between two byte strings.
    static func editDistance(_ a: [UInt8], _ b: [UInt8]) -> Int {
        if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + [Int](repeating: 0, count: b.count)
            for j in 1...b.count {
                let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                current[j] = min(substitution, previous[j] + 1, current[j - 1] + 1)
            }
            previous = current
        }
        return previous[b.count]
    }
}
