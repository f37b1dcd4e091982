import Foundation

/// xoshiro256** 1.0 (Blackman & Vigna, ACM TOMS 47 (2021) 36) with the samplers the event generator needs.
///
/// One instance per stream `(seed, stream)`; the stream is the generator's block index, so every block of
/// events has its own independent sequence and the output does not depend on the number of threads.
struct Xoshiro256StarStar {
    private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64
    /// The second normal deviate of the last polar-method pair, if not yet used.
    private var spareNormal = 0.0
    private var hasSpareNormal = false

    /// Seeds the state with SplitMix64 started at `SplitMix64(seed) ⊕ stream`.
    init(seed: UInt64, stream: UInt64) {
        var seeder = seed
        var mixer = Self.splitMix64(&seeder) ^ stream
        s0 = Self.splitMix64(&mixer)
        s1 = Self.splitMix64(&mixer)
        s2 = Self.splitMix64(&mixer)
        s3 = Self.splitMix64(&mixer)
    }

    /// One SplitMix64 step (Steele, Lea & Flood, OOPSLA 2014), the seeding recommended for xoshiro.
    private static func splitMix64(_ state: inout UInt64) -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    @inline(__always) private static func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// The next 64-bit output.
    @inline(__always) mutating func next() -> UInt64 {
        let result = Self.rotl(s1 &* 5, 7) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = Self.rotl(s3, 45)
        return result
    }

    /// Uniform on [0, 1) with 53 random bits.
    @inline(__always) mutating func uniform() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// Uniform on (0, 1], safe to take the logarithm of.
    @inline(__always) mutating func uniformPositive() -> Double { Double((next() >> 11) + 1) * 0x1.0p-53 }

    /// Uniform on [a, b).
    @inline(__always) mutating func uniform(_ a: Double, _ b: Double) -> Double { a + (b - a) * uniform() }

    /// Exponential deviate with the given mean: `−mean · ln U`.
    @inline(__always) mutating func exponential(mean: Double) -> Double { -mean * FastMath.log(uniformPositive()) }

    /// Standard normal deviate (Marsaglia polar method; the pair's second value is kept for the next call).
    @inline(__always) mutating func normal() -> Double {
        if hasSpareNormal {
            hasSpareNormal = false
            return spareNormal
        }
        let (u, v, s) = pointInUnitDisc()
        let f = (-2 * FastMath.log(s) / s).squareRoot()
        spareNormal = v * f
        hasSpareNormal = true
        return u * f
    }

    /// A uniformly distributed unit vector in the plane, without trigonometry (von Neumann's rejection):
    /// for (u, v) uniform in the unit disc, `(cos φ, sin φ) = ((u² − v²)/s, 2uv/s)`, `s = u² + v²`.
    @inline(__always) mutating func unitVector() -> (x: Double, y: Double) {
        let (u, v, s) = pointInUnitDisc()
        return ((u * u - v * v) / s, 2 * u * v / s)
    }

    /// A point (u, v) uniform in the unit disc without its centre, by rejection from the square; s = u² + v².
    @inline(__always) private mutating func pointInUnitDisc() -> (u: Double, v: Double, s: Double) {
        var u = 0.0
        var v = 0.0
        var s = 0.0
        repeat {
            u = 2 * uniform() - 1
            v = 2 * uniform() - 1
            s = u * u + v * v
        } while s >= 1 || s == 0
        return (u, v, s)
    }

    /// Poisson deviate with mean `lambda`: multiplication of uniforms (Knuth) below 10, otherwise the
    /// transformed rejection PTRS (Hörmann, Insurance Math. Econom. 12 (1993) 39), both exact.
    mutating func poisson(_ lambda: Double) -> Int {
        if lambda <= 0 { return 0 }
        if lambda < 10 {
            let limit = FastMath.exp(-lambda)
            var k = 0
            var product = uniform()
            while product > limit {
                k += 1
                product *= uniform()
            }
            return k
        }
        let slam = lambda.squareRoot()
        let logLambda = FastMath.log(lambda)
        let b = 0.931 + 2.53 * slam
        let a = -0.059 + 0.02483 * b
        let invAlpha = 1.1239 + 1.1328 / (b - 3.4)
        let vr = 0.9277 - 3.6224 / (b - 2)
        while true {
            let u = uniform() - 0.5
            let v = uniform()
            let us = 0.5 - abs(u)
            let k = ((2 * a / us + b) * u + lambda + 0.43).rounded(.down)
            if us >= 0.07 && v <= vr { return Int(k) }
            if k < 0 || (us < 0.013 && v > us) { continue }
            if FastMath.log(v) + FastMath.log(invAlpha) - FastMath.log(a / (us * us) + b) <= -lambda + k * logLambda
                - lgamma(k + 1)
            {
                return Int(k)
            }
        }
    }

    /// Binomial deviate: the number of `n` trials with success probability `p` (n is small here).
    mutating func binomial(_ n: Int, _ p: Double) -> Int {
        var k = 0
        for _ in 0..<n where uniform() < p { k += 1 }
        return k
    }
}
