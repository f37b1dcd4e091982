import Foundation

/// The one JSON encoder of everything hrtrain writes (model and checkpoint metadata, metrics, tuning results,
/// evaluations, `--json` outputs): keys sorted, so the same value always gives the same bytes.
public enum JSON {
    /// An encoder with sorted keys, pretty printed when asked.
    public static func encoder(pretty: Bool = false) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys]
        return encoder
    }

    /// `value` as JSON text (see `encoder(pretty:)`).
    public static func string<T: Encodable>(_ value: T, pretty: Bool = false) throws -> String {
        String(decoding: try encoder(pretty: pretty).encode(value), as: UTF8.self)
    }
}

/// Rewrites the metrics file atomically: one JSON object per line and epoch (what `readMetrics` reads).
public func writeMetrics(_ history: [EpochRecord], to url: URL) throws {
    let encoder = JSON.encoder()
    let text =
        try history.map { String(decoding: try encoder.encode($0), as: UTF8.self) }.joined(separator: "\n") + "\n"
    try AtomicFile.write(to: url) { try $0.write(text) }
}
