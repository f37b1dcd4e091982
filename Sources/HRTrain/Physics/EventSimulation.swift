import Foundation

/// The per-block state of the event generator: one RNG stream, the derived constants, reusable
/// particle buffers and the reconstructed sums of the current event (no heap allocation per event).
struct EventSimulation {
    /// The physics parameters.
    let configuration: EventGenerator.Configuration
    /// The block's random stream.
    var rng: Xoshiro256StarStar

    // MARK: Derived constants
    /// CDF of the W pT spectrum at its truncation: `F(p) = 1 − (p0²/(p0² + p²))^(n−1)`.
    private let wPtCdfMaximum: Double
    /// Cumulative, normalised weights of the pile-up periods.
    private let periodCumulativeWeights: [Double]
    /// Pile-up tracks surviving vertex association, per interaction:
    /// `dN_ch/dη · 2η_trk · ε_trk · leakage`.
    private let leakingTrackRate: Double
    /// Calorimeter-bound pile-up particles above the generation threshold per interaction, central
    /// (|η| < 2.5: neutrals and unreconstructed charged) and forward (2.5 < |η| < 4.9: all).
    private let centralDepositRate: Double
    private let forwardDepositRate: Double
    /// Probability that a pile-up deposit is central, `rate_central / (rate_central + rate_forward)`.
    private let centralDepositProbability: Double
    /// Pile-up deposits, the inner loop of the generator, use tables instead of transcendental functions.
    /// Their |η| is a linear map of one uniform u (see `pileUp`); over `depositTableSize` bins of u the
    /// tables hold `cosh η` and `(cosh η / E0)^(k−1)` at the bin centre (|η| resolved to < 0.01).
    private static let depositTableSize = 2048
    private let depositCosh: [Double]
    private let depositCoshPower: [Double]
    /// `pT^(k−1)` at `pT = p_min + T·x` for x = j/64, j = 0…1024, linearly interpolated (error < 2e-6).
    private static let ptPowerSteps = 64.0
    private let depositPtPower: [Double]
    /// Calorimeter constants: `1 − c`, `k − 1`, `1/E0`, `a²`, `b²`; track `c²`.
    let responseDeficit: Double
    let responseExponent: Double
    let inverseReferenceEnergy: Double
    let stochasticSquared: Double
    let constantSquared: Double
    let trackConstantSquared: Double

    // MARK: Reconstructed event
    /// Charged PFOs (tracks).
    var charged = PFOCollection()
    /// Neutral PFOs (calorimeter deposits above threshold).
    var neutral = PFOCollection()
    /// The two leading jets with pT > 20 GeV.
    var jets = LeadingObjects(capacity: 2)
    /// Number of jets with pT > 20 GeV.
    var jetCount = 0

    // MARK: Scratch particle lists (reused)
    private var particleX: [Double] = []
    private var particleY: [Double] = []
    private var particleEta: [Double] = []
    private var particleCharged: [Bool] = []

    /// A simulation drawing from stream `stream` of `seed`.
    init(configuration: EventGenerator.Configuration, seed: UInt64, stream: UInt64) {
        self.configuration = configuration
        rng = Xoshiro256StarStar(seed: seed, stream: stream)
        let c = configuration
        let ratio = c.wPtScale * c.wPtScale / (c.wPtScale * c.wPtScale + c.wPtMaximum * c.wPtMaximum)
        wPtCdfMaximum = 1 - FastMath.exp((c.wPtExponent - 1) * FastMath.log(ratio))
        let totalWeight = c.pileUpPeriods.reduce(0) { $0 + $1.weight }
        var running = 0.0
        periodCumulativeWeights = c.pileUpPeriods.map {
            running += $0.weight / totalWeight
            return running
        }
        leakingTrackRate =
            c.pileUpChargedDensity * 2 * c.trackerEtaMax * c.trackingEfficiency * c.pileUpTrackLeakage
        // Fraction of the exponential spectrum above 0.5 GeV that lies above the generation threshold.
        let aboveThreshold = FastMath.exp(-(c.pileUpGenerationMinPt - c.cpfoMinPt) / c.pileUpPtSlope)
        let neutralDensity = c.pileUpChargedDensity * c.pileUpNeutralToCharged
        centralDepositRate =
            aboveThreshold * 2 * c.trackerEtaMax
            * (neutralDensity + c.pileUpChargedDensity * (1 - c.trackingEfficiency))
        forwardDepositRate =
            aboveThreshold * 2 * (c.calorimeterEtaMax - c.trackerEtaMax) * (neutralDensity + c.pileUpChargedDensity)
        centralDepositProbability = centralDepositRate / (centralDepositRate + forwardDepositRate)
        let probability = centralDepositProbability
        let etaBins = (0..<Self.depositTableSize).map { (i: Int) -> Double in
            let u = (Double(i) + 0.5) / Double(Self.depositTableSize)
            return u < probability
                ? u / probability * c.trackerEtaMax
                : c.trackerEtaMax + (u - probability) / (1 - probability) * (c.calorimeterEtaMax - c.trackerEtaMax)
        }
        depositCosh = etaBins.map { FastMath.cosh($0) }
        depositCoshPower = depositCosh.map {
            FastMath.exp((c.caloResponseExponent - 1) * FastMath.log($0 / c.caloResponseReferenceEnergy))
        }
        depositPtPower = (0...1024).map {
            let pt = c.pileUpGenerationMinPt + c.pileUpPtSlope * Double($0) / Self.ptPowerSteps
            return FastMath.exp((c.caloResponseExponent - 1) * FastMath.log(pt))
        }
        responseDeficit = 1 - c.caloResponseAtReference
        responseExponent = c.caloResponseExponent - 1
        inverseReferenceEnergy = 1 / c.caloResponseReferenceEnergy
        stochasticSquared = c.caloStochastic * c.caloStochastic
        constantSquared = c.caloConstant * c.caloConstant
        trackConstantSquared = c.trackResolutionConstant * c.trackResolutionConstant
        particleX.reserveCapacity(128)
        particleY.reserveCapacity(128)
        particleEta.reserveCapacity(128)
        particleCharged.reserveCapacity(128)
    }

    /// Simulates one event and writes its 40 values (features, then targets) to `out`.
    mutating func simulate(into out: UnsafeMutablePointer<Float>) {
        let c = configuration
        charged.reset()
        neutral.reset()
        jets.reset()
        jetCount = 0

        // Pile-up conditions.
        let mu = sampleMu()
        let interactions = rng.poisson(mu)
        let vertices = 1 + rng.binomial(interactions, c.vertexEfficiency)

        // Truth: |u_t| = pT(W) from the inverted, truncated CDF, `p = p0·√((1 − U)^(−1/(n−1)) − 1)`.
        let u = rng.uniform() * wPtCdfMaximum
        let recoil = c.wPtScale * (FastMath.exp(-FastMath.log(1 - u) / (c.wPtExponent - 1)) - 1).squareRoot()
        let direction = rng.unitVector()
        let truthX = recoil * direction.x
        let truthY = recoil * direction.y

        // Hard scatter: balanced underlying event, then one or two sprays carrying exactly u_t.
        underlyingEvent()
        if rng.uniform() < recoil / (recoil + c.secondSprayScale) {
            let fraction = rng.uniform(c.secondSprayFractionMin, c.secondSprayFractionMax)
            let second = rng.unitVector()
            let x2 = fraction * recoil * second.x
            let y2 = fraction * recoil * second.y
            hardSpray(targetX: x2, targetY: y2, interactions: interactions)
            hardSpray(targetX: truthX - x2, targetY: truthY - y2, interactions: interactions)
        } else {
            hardSpray(targetX: truthX, targetY: truthY, interactions: interactions)
        }

        pileUp(interactions: interactions)

        // Features in the thesis' order, then the targets.
        out[0] = Float(charged.sumX)
        out[1] = Float(charged.sumY)
        out[2] = Float(neutral.sumX)
        out[3] = Float(neutral.sumY)
        out[4] = Float(charged.sumX + neutral.sumX)
        out[5] = Float(charged.sumY + neutral.sumY)
        out[6] = Float(charged.sumEt)
        out[7] = Float(neutral.sumEt)
        out[8] = Float(charged.sumEt + neutral.sumEt)
        for i in 0..<2 {
            out[9 + 2 * i] = Float(jets.px[i])
            out[10 + 2 * i] = Float(jets.py[i])
        }
        for i in 0..<5 {
            out[13 + 2 * i] = Float(neutral.leading.px[i])
            out[14 + 2 * i] = Float(neutral.leading.py[i])
            out[23 + 2 * i] = Float(charged.leading.px[i])
            out[24 + 2 * i] = Float(charged.leading.py[i])
        }
        out[33] = Float(vertices)
        out[34] = Float(mu)
        out[35] = Float(jetCount)
        out[36] = Float(neutral.count)
        out[37] = Float(charged.count)
        out[38] = Float(truthX)
        out[39] = Float(truthY)
    }

    /// μ from the luminosity-weighted mixture of period Gaussians, resampled into [μ_min, μ_max].
    private mutating func sampleMu() -> Double {
        let c = configuration
        while true {
            let pick = rng.uniform()
            let period = c.pileUpPeriods[periodCumulativeWeights.firstIndex { pick < $0 } ?? c.pileUpPeriods.count - 1]
            let mu = period.mean + period.sigma * rng.normal()
            if mu >= c.muMinimum && mu <= c.muMaximum { return mu }
        }
    }

    /// The soft underlying event: Poisson multiplicity, exponential pT, flat η and φ. Its momenta are
    /// balanced among themselves (`p_i ← p_i − Σp/N`), so it adds nothing to u_t, and each particle is
    /// passed through the detector.
    private mutating func underlyingEvent() {
        let c = configuration
        let count = rng.poisson(c.underlyingEventMultiplicity)
        if count == 0 { return }
        particleX.removeAll(keepingCapacity: true)
        particleY.removeAll(keepingCapacity: true)
        var sumX = 0.0
        var sumY = 0.0
        for _ in 0..<count {
            let pt = rng.exponential(mean: c.underlyingEventMeanPt)
            let direction = rng.unitVector()
            particleX.append(pt * direction.x)
            particleY.append(pt * direction.y)
            sumX += pt * direction.x
            sumY += pt * direction.y
        }
        let shiftX = sumX / Double(count)
        let shiftY = sumY / Double(count)
        for i in 0..<count {
            let px = particleX[i] - shiftX
            let py = particleY[i] - shiftY
            let eta = rng.uniform(-c.underlyingEventEtaMax, c.underlyingEventEtaMax)
            let isCharged = rng.uniform() < c.chargedFraction
            _ = measureHadron(
                px: px, py: py, pt: (px * px + py * py).squareRoot(), eta: eta, charged: isCharged, pileUp: false)
        }
    }

    /// A hard-scatter spray whose particles sum exactly to `(targetX, targetY)`, with a jet built from it.
    private mutating func hardSpray(targetX: Double, targetY: Double, interactions: Int) {
        let eta = configuration.sprayEtaSigma * rng.normal()
        spray(targetX: targetX, targetY: targetY, axisEta: eta, pileUp: false, interactions: interactions)
    }

    /// Fragments a momentum `(targetX, targetY)` into `1 + Poisson(a·ln(1 + p/E_m))` particles with flat
    /// momentum fractions, spread by ±Δφ, ±Δη around the axis, then rotates and scales them all by the
    /// complex factor `T/Σw` so that their vector sum is exactly the target; measures them and builds the jet.
    private mutating func spray(targetX: Double, targetY: Double, axisEta: Double, pileUp: Bool, interactions: Int) {
        let c = configuration
        let momentum = (targetX * targetX + targetY * targetY).squareRoot()
        if momentum == 0 { return }
        let count = 1 + rng.poisson(c.sprayMultiplicityScale * FastMath.log(1 + momentum / c.sprayMultiplicityEnergy))
        particleX.removeAll(keepingCapacity: true)
        particleY.removeAll(keepingCapacity: true)
        particleEta.removeAll(keepingCapacity: true)
        particleCharged.removeAll(keepingCapacity: true)
        // Particles w_i in the frame of the axis, x_i ~ Exp(1), δφ_i uniform.
        var sumX = 0.0
        var sumY = 0.0
        for _ in 0..<count {
            let share = rng.exponential(mean: 1)
            let angle = rng.uniform(-c.sprayPhiHalfWidth, c.sprayPhiHalfWidth)
            let rotation = FastMath.cosSinSmall(angle)
            let x = share * rotation.cos
            let y = share * rotation.sin
            particleX.append(x)
            particleY.append(y)
            sumX += x
            sumY += y
            particleEta.append(axisEta + rng.uniform(-c.sprayEtaHalfWidth, c.sprayEtaHalfWidth))
            particleCharged.append(rng.uniform() < c.chargedFraction)
        }
        // Complex factor T/W = T·conj(W)/|W|².
        let norm = sumX * sumX + sumY * sumY
        let factorX = (targetX * sumX + targetY * sumY) / norm
        let factorY = (targetY * sumX - targetX * sumY) / norm
        var jetX = 0.0
        var jetY = 0.0
        for i in 0..<count {
            let px = particleX[i] * factorX - particleY[i] * factorY
            let py = particleX[i] * factorY + particleY[i] * factorX
            let seen = measureHadron(
                px: px, py: py, pt: (px * px + py * py).squareRoot(), eta: particleEta[i],
                charged: particleCharged[i], pileUp: pileUp)
            jetX += seen.x
            jetY += seen.y
        }
        reconstructJet(x: jetX, y: jetY, eta: axisEta, interactions: interactions)
    }

    /// Pile-up from `interactions` minimum-bias collisions, drawn per category by exact Poisson thinning:
    /// tracks that survive vertex association (pT > 0.5 GeV, |η| < 2.5), calorimeter deposits of particles
    /// above the generation threshold (central: neutrals and unreconstructed charged; forward: all), and
    /// pile-up jets. Each particle has pT = p_min + Exp(T), η flat within its region, uniform φ.
    private mutating func pileUp(interactions: Int) {
        let c = configuration
        let n = Double(interactions)
        for _ in 0..<rng.poisson(n * leakingTrackRate) {
            let pt = c.cpfoMinPt + rng.exponential(mean: c.pileUpPtSlope)
            let direction = rng.unitVector()
            _ = addTrack(px: pt * direction.x, py: pt * direction.y, pt: pt)
        }
        // Deposits: R(E)·… as in `calorimeterPt`, with (E/E0)^(k−1) = pT^(k−1)·(cosh η/E0)^(k−1) from the
        // tables. One uniform u gives |η| (the sign does not matter): [0, P_central) maps linearly onto
        // |η| < η_trk, [P_central, 1) onto η_trk < |η| < η_cal.
        for _ in 0..<rng.poisson(n * (centralDepositRate + forwardDepositRate)) {
            let x = rng.exponential(mean: 1)
            let pt = c.pileUpGenerationMinPt + c.pileUpPtSlope * x
            let ptPower: Double
            if x < 16 {
                let position = x * Self.ptPowerSteps
                let j = Int(position)
                ptPower = depositPtPower[j] + (position - Double(j)) * (depositPtPower[j + 1] - depositPtPower[j])
            } else {
                ptPower = FastMath.exp(responseExponent * FastMath.log(pt))
            }
            let bin = Int(rng.uniform() * Double(Self.depositTableSize))
            let energy = pt * depositCosh[bin]
            let response = max(0, 1 - responseDeficit * ptPower * depositCoshPower[bin])
            let sigma = (stochasticSquared / energy + constantSquared).squareRoot()
            let measured = max(0, pt * response * (1 + sigma * rng.normal()))
            if measured > c.npfoMinPt {
                let direction = rng.unitVector()
                neutral.add(px: measured * direction.x, py: measured * direction.y, pt: measured)
            }
        }
        for _ in 0..<rng.poisson(n * c.pileUpJetRate) {
            let pt = c.pileUpJetMinPt + rng.exponential(mean: c.pileUpJetPtSlope)
            let direction = rng.unitVector()
            let eta = rng.uniform(-c.jetEtaMax, c.jetEtaMax)
            spray(
                targetX: pt * direction.x, targetY: pt * direction.y, axisEta: eta, pileUp: true,
                interactions: interactions)
        }
    }
}
