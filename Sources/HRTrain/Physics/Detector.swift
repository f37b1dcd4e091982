import Foundation

/// The leading objects of a collection by pT (at most 8), kept sorted by insertion.
struct LeadingObjects {
    /// How many objects are kept.
    let capacity: Int
    /// pT, px, py of the kept objects in decreasing pT; unused slots are zero.
    private(set) var pt = SIMD8<Double>(repeating: 0)
    private(set) var px = SIMD8<Double>(repeating: 0)
    private(set) var py = SIMD8<Double>(repeating: 0)

    /// An empty list keeping `capacity` objects.
    init(capacity: Int) {
        precondition(capacity >= 1 && capacity <= 8, "LeadingObjects: capacity must be 1...8")
        self.capacity = capacity
    }

    /// Empties the list.
    @inline(__always) mutating func reset() {
        pt = SIMD8(repeating: 0)
        px = SIMD8(repeating: 0)
        py = SIMD8(repeating: 0)
    }

    /// Inserts an object if it is among the `capacity` leading ones.
    @inline(__always) mutating func insert(pt value: Double, px x: Double, py y: Double) {
        var slot = capacity - 1
        if value <= pt[slot] { return }
        while slot > 0 && pt[slot - 1] < value {
            pt[slot] = pt[slot - 1]
            px[slot] = px[slot - 1]
            py[slot] = py[slot - 1]
            slot -= 1
        }
        pt[slot] = value
        px[slot] = x
        py[slot] = y
    }
}

/// One PFO collection's reconstructed quantities: vector sum, ΣET, count and leading objects.
struct PFOCollection {
    /// Vector sum of the PFOs' transverse momenta (the recoil from this collection).
    var sumX = 0.0
    /// y component of the vector sum.
    var sumY = 0.0
    /// Scalar sum of the PFOs' pT: ΣET for massless objects.
    var sumEt = 0.0
    /// Number of PFOs.
    var count = 0
    /// The five leading PFOs.
    var leading = LeadingObjects(capacity: 5)

    /// Empties the collection.
    @inline(__always) mutating func reset() {
        sumX = 0
        sumY = 0
        sumEt = 0
        count = 0
        leading.reset()
    }

    /// Adds one PFO.
    @inline(__always) mutating func add(px: Double, py: Double, pt: Double) {
        sumX += px
        sumY += py
        sumEt += pt
        count += 1
        leading.insert(pt: pt, px: px, py: py)
    }
}

// MARK: - Detector model

extension EventSimulation {
    /// Passes one hadron through the detector, records the PFO it makes, and returns the transverse
    /// momentum it contributes to a jet containing it (including calorimeter energy below the nPFO threshold,
    /// which a jet collects; zero for lost particles and for pile-up tracks removed by vertex association).
    ///
    /// - charged, |η| < 2.5, pT > 0.5 GeV, reconstructed with probability ε_trk: a track (cPFO); a pile-up
    ///   track survives vertex association with probability `pileUpTrackLeakage`, otherwise it is removed
    ///   together with its calorimeter energy (perfect PFlow subtraction);
    /// - otherwise (neutral, forward, soft or lost track), |η| < 4.9: a calorimeter deposit, an nPFO if its
    ///   measured pT exceeds the threshold.
    @inline(__always)
    mutating func measureHadron(px: Double, py: Double, pt: Double, eta: Double, charged: Bool, pileUp: Bool)
        -> (x: Double, y: Double)
    {
        let absEta = abs(eta)
        if absEta >= configuration.calorimeterEtaMax || pt <= 0 { return (0, 0) }
        if charged && absEta < configuration.trackerEtaMax && pt > configuration.cpfoMinPt
            && rng.uniform() < configuration.trackingEfficiency
        {
            if pileUp && rng.uniform() >= configuration.pileUpTrackLeakage { return (0, 0) }
            return addTrack(px: px, py: py, pt: pt)
        }
        let scale = calorimeterPt(pt: pt, eta: eta) / pt
        let x = px * scale
        let y = py * scale
        if pt * scale > configuration.npfoMinPt { neutral.add(px: x, py: y, pt: pt * scale) }
        return (x, y)
    }

    /// Records a reconstructed track as a cPFO with `σ(pT)/pT = s·pT ⊕ c`; returns its momentum.
    @inline(__always)
    mutating func addTrack(px: Double, py: Double, pt: Double) -> (x: Double, y: Double) {
        let relative = configuration.trackResolutionSlope * pt
        let sigma = (relative * relative + trackConstantSquared).squareRoot()
        let factor = max(0, 1 + sigma * rng.normal())
        charged.add(px: px * factor, py: py * factor, pt: pt * factor)
        return (px * factor, py * factor)
    }

    /// The measured (EM-scale) pT of a hadron's calorimeter deposit, with `E = pT cosh η`:
    /// ```
    /// R(E) = 1 − (1 − c)·(E/E0)^(k−1)            (Groom's non-compensation form)
    /// σ(E)/E = a/√E ⊕ b
    /// pT_meas = pT · R(E) · (1 + σ(E)/E · g),  g ~ N(0, 1), clipped at 0
    /// ```
    @inline(__always)
    mutating func calorimeterPt(pt: Double, eta: Double) -> Double {
        let energy = pt * FastMath.cosh(eta)
        let response = max(
            0, 1 - responseDeficit * FastMath.exp(responseExponent * FastMath.log(energy * inverseReferenceEnergy)))
        let sigma = (stochasticSquared / energy + constantSquared).squareRoot()
        return max(0, pt * response * (1 + sigma * rng.normal()))
    }

    /// Builds a calibrated jet from the summed constituent momenta `(x, y)` of a spray with axis `eta` and
    /// records it if it passes pT > 20 GeV and |η| < 4.5:
    /// ```
    /// p_jet = C(η)·p_constituents·(1 + b_J·g₀) + σ_PU·√N_int·(g₁, g₂)
    /// ```
    /// with the calibration C (central or forward), constant term b_J and the pile-up noise σ_PU.
    @inline(__always)
    mutating func reconstructJet(x: Double, y: Double, eta: Double, interactions: Int) {
        if abs(eta) >= configuration.jetEtaMax { return }
        let calibration =
            abs(eta) < configuration.trackerEtaMax
            ? configuration.jetCalibrationCentral : configuration.jetCalibrationForward
        let scale = calibration * (1 + configuration.jetConstantTerm * rng.normal())
        let noise = configuration.jetPileUpNoise * Double(interactions).squareRoot()
        let jx = x * scale + noise * rng.normal()
        let jy = y * scale + noise * rng.normal()
        let pt = (jx * jx + jy * jy).squareRoot()
        if pt > configuration.jetMinPt {
            jetCount += 1
            jets.insert(pt: pt, px: jx, py: jy)
        }
    }
}
