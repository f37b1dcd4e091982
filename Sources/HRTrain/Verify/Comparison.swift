/// How a device tensor compares with its Double reference.
///
/// The error measure is the relative L2 norm `‖dev − ref‖₂ / max(‖ref‖₂, floor)`. The floor (0 unless a
/// caller gives one) keeps a tensor that is zero up to cancellation — the gradient of a bias that feeds a
/// batch norm is exactly zero in exact arithmetic — from being judged on the relative error of rounding
/// noise; `verify` sets it to a fraction of the network's largest gradient norm. A tensor whose reference
/// is zero up to rounding (`‖ref‖₂ ≤ 1e-12 · √n`) with no floor is checked on the absolute error instead.
/// NaN or ±Inf anywhere fails.
public struct TensorComparison: Codable, Sendable, Equatable {
    public var name: String
    public var shape: [Int]
    /// `‖dev − ref‖₂ / ‖ref‖₂`, or the max absolute error for a zero reference (see `absolute`).
    public var error: Double
    /// `max |dev − ref|`.
    public var maxAbsoluteError: Double
    /// The limit `error` must not exceed.
    public var limit: Double
    /// True when the reference is zero and `error` is absolute.
    public var absolute: Bool
    /// Why this row is judged differently, if it is.
    public var note: String?
    /// Whether a NaN or Inf was found on either side.
    public var nonFinite: Bool
    /// `error ≤ limit` and everything finite.
    public var passed: Bool

    /// Compares `device` with `reference` under `limit`.
    public init(
        name: String, shape: [Int], device: [Double], reference: [Double], limit: Double, floor: Double = 0,
        absoluteLimit: Double = 1e-5, note: String? = nil
    ) {
        precondition(device.count == reference.count, "comparison of \(name): sizes differ")
        var diff2 = 0.0
        var ref2 = 0.0
        var maxAbs = 0.0
        var nonFinite = false
        for i in 0..<device.count {
            let d = device[i]
            let r = reference[i]
            if !d.isFinite || !r.isFinite {
                nonFinite = true
                continue
            }
            diff2 += (d - r) * (d - r)
            ref2 += r * r
            maxAbs = max(maxAbs, abs(d - r))
        }
        let refNorm = ref2.squareRoot()
        self.name = name
        self.shape = shape
        self.maxAbsoluteError = maxAbs
        self.nonFinite = nonFinite
        self.note = note
        self.absolute = floor == 0 && refNorm <= 1e-12 * Double(max(device.count, 1)).squareRoot()
        self.error = absolute ? maxAbs : diff2.squareRoot() / max(refNorm, floor)
        self.limit = absolute ? absoluteLimit : limit
        self.passed = !nonFinite && error <= self.limit && !error.isNaN
    }
}
