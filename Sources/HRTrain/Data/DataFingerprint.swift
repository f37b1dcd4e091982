/// What identifies a training sample, stored in checkpoints so that `--resume` on other data is refused:
/// the column names, the row count and a 64-bit hash of every value (Float32 bit patterns, row-major).
public struct DataFingerprint: Codable, Sendable, Equatable {
    /// Column names, in file order.
    public var columnNames: [String]
    /// Rows.
    public var rowCount: Int
    /// FNV-1a (per 32-bit word) over the values' bit patterns, as 16 hex digits.
    public var valueHash: String

    /// The fingerprint of `table`.
    public init(_ table: Table) {
        self.init(columnNames: table.columnNames, rowCount: table.rowCount, hash: Self.hash(of: table.values))
    }

    /// The fingerprint of a table of `rowCount` rows read in parts (the ranks of a data-parallel job, each
    /// reading its rows): `partHashes` are the parts' `hash(of:)`, in rank order, hashed once more (FNV-1a
    /// over the 64-bit words). It identifies the data for a resume on as many ranks (which the checkpoint
    /// requires); it differs from the one-process fingerprint of the same file.
    public init(columnNames: [String], rowCount: Int, partHashes: [UInt64]) {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for part in partHashes {
            hash ^= part
            hash = hash &* 0x0000_0100_0000_01b3
        }
        self.init(columnNames: columnNames, rowCount: rowCount, hash: hash)
    }

    private init(columnNames: [String], rowCount: Int, hash: UInt64) {
        self.columnNames = columnNames
        self.rowCount = rowCount
        let hex = String(hash, radix: 16)
        valueHash = String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// FNV-1a (per 32-bit word) over the values' bit patterns.
    public static func hash(of values: [Float]) -> UInt64 {
        values.withUnsafeBufferPointer { values in
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for value in values {
                hash ^= UInt64(value.bitPattern)
                hash = hash &* 0x0000_0100_0000_01b3
            }
            return hash
        }
    }

    /// What differs between `self` (the data now) and `recorded` (the checkpoint's), in words; nil if nothing.
    public func difference(from recorded: DataFingerprint) -> String? {
        if columnNames != recorded.columnNames {
            let added = columnNames.filter { !recorded.columnNames.contains($0) }
            let missing = recorded.columnNames.filter { !columnNames.contains($0) }
            var parts: [String] = []
            if !missing.isEmpty { parts.append("lacks the columns " + missing.joined(separator: ", ")) }
            if !added.isEmpty { parts.append("has the extra columns " + added.joined(separator: ", ")) }
            if parts.isEmpty { parts.append("has the same columns in another order") }
            return "the data " + parts.joined(separator: " and ")
        }
        if rowCount != recorded.rowCount {
            return "the data has \(rowCount) rows, the checkpoint's had \(recorded.rowCount)"
        }
        if valueHash != recorded.valueHash {
            return
                "the data has the same columns and \(rowCount) rows but other values (hash \(valueHash), the "
                + "checkpoint's \(recorded.valueHash))"
        }
        return nil
    }
}

/// Training stopped because the loss stopped being a finite number: the checkpoint of the last complete
/// epoch (and any model file) are left as they were.
public struct TrainingDivergence: Error, CustomStringConvertible, Equatable, Sendable {
    /// The 1-based epoch.
    public var epoch: Int
    /// The 1-based step within the epoch (nil: the validation loss).
    public var step: Int?
    /// The loss value (NaN or ±Inf).
    public var loss: Double

    /// Creates the error.
    public init(epoch: Int, step: Int?, loss: Double) {
        self.epoch = epoch
        self.step = step
        self.loss = loss
    }

    /// `the loss became non-finite (nan) at epoch 3, step 17; …`.
    public var description: String {
        let place =
            step.map { "the loss became non-finite (\(loss)) at epoch \(epoch), step \($0)" }
            ?? "the validation loss became non-finite (\(loss)) at epoch \(epoch)"
        return place
            + "; training stopped: the checkpoint of the last complete epoch and any existing model are unchanged "
            + "(try a lower learning rate, or --scale-targets)"
    }
}
