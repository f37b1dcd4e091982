import Foundation

/// Which framework's defaults hrtrain reproduces (see `shared/reference/semantics.md` and the README).
///
/// | | `keras` (default) | `pytorch` |
/// |---|---|---|
/// | batch-norm ε | 1e-3 | 1e-5 |
/// | running update `m ← (1−f) m + f μ` | f = 0.01 (momentum 0.99) | f = 0.1 (momentum 0.1) |
/// | running variance | biased σ² | unbiased σ²·N/(N−1) |
/// | Adam ε | ε̂ = 1e-7, "epsilon hat" form | ε = 1e-8, Kingma & Ba Algorithm 1 |
/// | weight init | glorot_uniform W, zero bias | U(±1/√fan_in) for W and b |
public enum NumericsProfile: String, Codable, CaseIterable, Sendable {
    case keras
    case pytorch

    /// The batch-normalisation constants.
    public var batchNorm: BatchNormSettings {
        switch self {
        case .keras: BatchNormSettings(epsilon: 1e-3, runningUpdateFactor: 0.01, unbiasedRunningVariance: false)
        case .pytorch: BatchNormSettings(epsilon: 1e-5, runningUpdateFactor: 0.1, unbiasedRunningVariance: true)
        }
    }

    /// The weight initialiser, in words (recorded in model files).
    public var initializerDescription: String {
        switch self {
        case .keras: "glorot_uniform weights U(±sqrt(6/(fan_in + fan_out))), zero biases; gamma 1, beta 0"
        case .pytorch: "U(±1/sqrt(fan_in)) weights and biases; gamma 1, beta 0"
        }
    }

    /// Adam's ε for this profile.
    public var adamEpsilon: Double { self == .keras ? 1e-7 : 1e-8 }

    /// The Adam scalars for update number `step` (1-based):
    /// ```
    /// keras:   a = lr √(1−β2^t)/(1−β1^t),  c = 1,              θ ← θ − a m/(√v + ε̂)
    /// pytorch: a = lr/(1−β1^t),            c = 1/√(1−β2^t),    θ ← θ − a m/(√v/√(1−β2^t) + ε)
    /// ```
    public func adamCoefficients(learningRate: Double, step: Int, beta1: Double = 0.9, beta2: Double = 0.999)
        -> AdamCoefficients
    {
        precondition(step >= 1, "Adam steps count from 1")
        let bias1 = 1 - pow(beta1, Double(step))
        let bias2 = 1 - pow(beta2, Double(step))
        switch self {
        case .keras:
            return AdamCoefficients(
                beta1: beta1, beta2: beta2, stepSize: learningRate * bias2.squareRoot() / bias1, rootScale: 1,
                epsilon: adamEpsilon)
        case .pytorch:
            return AdamCoefficients(
                beta1: beta1, beta2: beta2, stepSize: learningRate / bias1, rootScale: 1 / bias2.squareRoot(),
                epsilon: adamEpsilon)
        }
    }

    /// Initial weights `[fanIn, fanOut]` and bias `[fanOut]` of a dense layer.
    /// ```
    /// keras:   W ~ U(±√(6/(fan_in + fan_out))),  b = 0
    /// pytorch: W, b ~ U(±1/√fan_in)
    /// ```
    public func initialDense(fanIn: Int, fanOut: Int, using rng: inout SplitMix64) -> (
        weights: [Double], bias: [Double]
    ) {
        switch self {
        case .keras:
            let limit = (6.0 / Double(fanIn + fanOut)).squareRoot()
            let w = (0..<fanIn * fanOut).map { _ in rng.uniform(-limit, limit) }
            return (w, [Double](repeating: 0, count: fanOut))
        case .pytorch:
            let limit = 1 / Double(fanIn).squareRoot()
            let w = (0..<fanIn * fanOut).map { _ in rng.uniform(-limit, limit) }
            let b = (0..<fanOut).map { _ in rng.uniform(-limit, limit) }
            return (w, b)
        }
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014): a small, fast, seedable generator for weights, batches and
/// permutations. Its whole state is one `UInt64`, which checkpoints store.
public struct SplitMix64: RandomNumberGenerator, Codable, Sendable, Equatable {
    /// The generator state.
    public var state: UInt64
    /// Seeds the generator.
    public init(seed: UInt64) { state = seed }
    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// A uniform Double in [low, high), from the top 53 bits.
    public mutating func uniform(_ low: Double, _ high: Double) -> Double {
        low + (high - low) * Double(next() >> 11) * 0x1.0p-53
    }
    /// A standard normal deviate (Box–Muller).
    public mutating func normal() -> Double {
        let u1 = max(uniform(0, 1), 1e-300)
        let u2 = uniform(0, 1)
        return (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2)
    }
}
