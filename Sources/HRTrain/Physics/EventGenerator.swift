import Foundation

/// A fast, seeded generator of simulated W⁺→μν events at √s = 13 TeV with a simple detector model.
///
/// It stands in for the thesis' ATLAS simulation, which is not public: each event carries the thesis' 38
/// input features (reconstructed hadronic recoil, ΣET, jets, leading particle-flow objects, pile-up) and
/// the two regression targets, the truth hadronic recoil `u_t = −pT(W)`. All momenta are in GeV.
///
/// The physics (see `Configuration` for every parameter and its source):
/// - truth: `pT(W)` from `f(pT) ∝ pT / (p0² + pT²)^n`, uniform φ; `u_t = −pT(W)`;
/// - hard-scatter hadrons summing exactly to `u_t`: one or two jet-like sprays plus a balanced soft
///   underlying event, each particle charged or neutral;
/// - pile-up: Run-2-like μ, `N_int ~ Poisson(μ)` interactions, reconstructed vertices
///   `N_PV = 1 + Binomial(N_int, ε_vtx)`, soft particles and occasional pile-up jets;
/// - detector: tracks (cPFOs) with efficiency, threshold, resolution and pile-up vertex rejection;
///   calorimeter deposits (nPFOs) with a hadronic response below one, stochastic and constant resolution
///   and a threshold; calibrated jets built from the sprays. The muon is not part of the recoil.
///
/// Determinism: events are made in blocks of `blockSize`; block `b` draws from its own xoshiro256**
/// stream seeded by SplitMix64 from `(seed, b)`, so event `i` depends only on `(seed, i, configuration)`
/// whatever the thread count, and `generate(events: 0..<m)` is a prefix of `generate(events: 0..<n)`.
public struct EventGenerator: Sendable {
    /// A Run-2 data-taking period in the pile-up profile: a Gaussian in μ with a luminosity weight.
    public struct PileUpPeriod: Sendable, Equatable {
        /// Integrated luminosity of the period (fb⁻¹), used as the relative weight.
        public var weight: Double
        /// Mean number of interactions per bunch crossing ⟨μ⟩ of the period.
        public var mean: Double
        /// Width of the period's μ distribution.
        public var sigma: Double

        /// Creates a period.
        public init(weight: Double, mean: Double, sigma: Double) {
            self.weight = weight
            self.mean = mean
            self.sigma = sigma
        }
    }

    /// Every physics parameter of the generator, with its source or rationale. Units GeV, radians.
    public struct Configuration: Sendable, Equatable {
        // MARK: Truth W transverse momentum
        /// Scale p0 of `f(pT) ∝ pT/(p0² + pT²)^n`. With n = 2.5 the peak is at `p0/√(2n−1) = p0/2` = 4.5 GeV
        /// and the mean at p0 = 9 GeV, like the measured W pT spectrum at 13 TeV (ATLAS, EPJC 84 (2024) 315:
        /// peak 4–5 GeV, mean ≈ 9 GeV for inclusive W).
        public var wPtScale = 9.0
        /// Exponent n of the W pT spectrum: the tail falls as `pT^(1−2n)` = pT⁻⁴, as the measured spectrum
        /// does between 30 and 300 GeV.
        public var wPtExponent = 2.5
        /// Upper truncation of the W pT spectrum (sampled exactly by inverting the truncated CDF).
        public var wPtMaximum = 500.0

        // MARK: Hard-scatter hadrons
        /// Mean number of underlying-event particles, Poisson: ≈ 2 charged particles per unit η·2π with
        /// pT > 0.5 GeV in the transverse region of Z/W events (ATLAS, EPJC 74 (2014) 3195) over |η| < 5.5,
        /// counting all pT.
        public var underlyingEventMultiplicity = 40.0
        /// Mean pT of underlying-event particles (exponential spectrum), ⟨pT⟩ ≈ 0.7 GeV for soft hadrons.
        public var underlyingEventMeanPt = 0.7
        /// Underlying-event particles are flat in η within ±this; beyond the calorimeter they are lost.
        public var underlyingEventEtaMax = 5.5
        /// Probability that a hadron is charged: π± are 2/3 of pions; with π⁰, K⁰_L and neutrons the
        /// charged fraction of jet energy is ≈ 60 % (PDG, "Jets and fragmentation").
        public var chargedFraction = 0.6
        /// Spray multiplicity `1 + Poisson(a · ln(1 + p/E_m))`, a = this: logarithmic growth of the hadron
        /// multiplicity with jet momentum (≈ 9 particles at 50 GeV, ≈ 11 at 100 GeV).
        public var sprayMultiplicityScale = 2.5
        /// Energy scale E_m of the spray multiplicity formula.
        public var sprayMultiplicityEnergy = 2.0
        /// Momentum fractions of spray particles are flat on the simplex (normalised exponentials).
        /// Particles are spread uniformly by ±this in φ around the spray axis (a jet of R ≈ 0.4).
        public var sprayPhiHalfWidth = 0.3
        /// Particles are spread uniformly by ±this in η around the spray axis.
        public var sprayEtaHalfWidth = 0.3
        /// Spray axes are Gaussian in η with this width: W recoil jets are spread over the whole detector.
        public var sprayEtaSigma = 1.8
        /// Probability of a second spray `p/(p + this)` for a recoil of momentum p: hard recoils more often
        /// come as two jets (ATLAS W+jets: σ(≥2 jets)/σ(≥1 jet) ≈ 0.2–0.3 at 30 GeV, rising with pT).
        public var secondSprayScale = 40.0
        /// Range of the second spray's momentum as a fraction of the total; its direction is uniform.
        public var secondSprayFractionMin = 0.15
        /// Upper end of the second spray's momentum fraction.
        public var secondSprayFractionMax = 0.5

        // MARK: Pile-up
        /// μ profile: luminosity-weighted Gaussians for 2015–16, 2017 and 2018 (ATLAS Run-2 luminosity
        /// public results: ⟨μ⟩ = 13.4/25.1, 37.8, 36.1 for 3.2+33.0, 44.3, 58.5 fb⁻¹; overall ⟨μ⟩ ≈ 34).
        public var pileUpPeriods = [
            PileUpPeriod(weight: 36.2, mean: 24.0, sigma: 8.0),
            PileUpPeriod(weight: 44.3, mean: 37.8, sigma: 11.0),
            PileUpPeriod(weight: 58.5, mean: 36.1, sigma: 9.0),
        ]
        /// μ is restricted to [minimum, maximum] by resampling (the bulk of Run 2 lies in 10–70).
        public var muMinimum = 10.0
        /// Upper end of the μ range.
        public var muMaximum = 70.0
        /// Probability that a pile-up interaction gives a reconstructed vertex: `⟨N_PV⟩ ≈ 1 + 0.55 μ`
        /// (ATLAS, EPJC 77 (2017) 332: vertex counts fall below μ at high pile-up).
        public var vertexEfficiency = 0.55
        /// Charged-particle density dN_ch/dη with pT > 0.5 GeV per pile-up interaction, flat over the
        /// calorimeter acceptance: ATLAS measures 2.9 for events with ≥ 1 such particle (PLB 758 (2016) 67);
        /// averaged over all inelastic interactions (diffractive ones are nearly empty) and over η (the
        /// density with a pT cut falls forward) we take 2.2. With the slope below this gives
        /// ΣET(nPFO) ≈ 4 GeV per unit μ and σ(u⊥) growing from ≈ 10 to ≈ 16 GeV over μ = 10–70, the
        /// Run-2 trend of the ATLAS cluster-based recoil.
        public var pileUpChargedDensity = 2.2
        /// Neutral (π⁰ → one cluster, K⁰_L, n) to charged multiplicity ratio: π⁰ : π± = 1 : 2, plus neutral
        /// hadrons.
        public var pileUpNeutralToCharged = 0.5
        /// Slope T of the pile-up particle spectrum above 0.5 GeV, `dN/dpT ∝ exp(−pT/T)`, giving
        /// ⟨pT⟩ = 1.0 GeV for pT > 0.5 GeV (ATLAS minimum bias, PLB 758 (2016) 67).
        public var pileUpPtSlope = 0.5
        /// Pile-up particles aimed at the calorimeter are generated only above this pT (exact Poisson
        /// thinning): below it the response (≤ 0.75) and resolution cannot lift them over the nPFO threshold,
        /// so they are individually invisible; their summed effect on jets is `jetPileUpNoise`.
        public var pileUpGenerationMinPt = 1.0
        /// Pile-up QCD jets with true pT above `pileUpJetMinPt` per interaction (|η| < 4.5): the inclusive
        /// jet cross section above 20 GeV is ≈ 1 % of σ_inel; most central ones lose their charged part to
        /// vertex association, so pile-up jets appear mostly forward, as in ATLAS (EPJC 76 (2016) 581).
        public var pileUpJetRate = 0.006
        /// Minimum true pT of a generated pile-up jet.
        public var pileUpJetMinPt = 20.0
        /// Exponential slope of the pile-up jet pT spectrum above its minimum.
        public var pileUpJetPtSlope = 8.0

        // MARK: Tracking (charged PFOs)
        /// Inner-detector acceptance |η| < 2.5.
        public var trackerEtaMax = 2.5
        /// Track reconstruction efficiency for charged hadrons, ≈ 90 % (ATLAS, EPJC 77 (2017) 673).
        public var trackingEfficiency = 0.9
        /// Track (cPFO) threshold pT > 0.5 GeV: the PFlow track selection (ATLAS, EPJC 77 (2017) 466).
        public var cpfoMinPt = 0.5
        /// Track resolution `σ(pT)/pT = s·pT ⊕ c`, s = this (per GeV) and c = `trackResolutionConstant`:
        /// the ATLAS inner-detector design figures 0.05 % · pT ⊕ 1 %.
        public var trackResolutionSlope = 0.0005
        /// Constant term c of the track resolution.
        public var trackResolutionConstant = 0.01
        /// Fraction of pile-up tracks wrongly kept by the hard-scatter vertex association (|z0 sin θ| < 2 mm):
        /// 5 %, i.e. 95 % rejection; hard-scatter tracks are all kept.
        public var pileUpTrackLeakage = 0.05
        /// Calorimeter acceptance |η| < 4.9; particles beyond it are lost.
        public var calorimeterEtaMax = 4.9

        // MARK: Calorimeter (neutral PFOs)
        /// Effective EM-scale hadronic response at the reference energy, c in Groom's form
        /// `R(E) = 1 − (1 − c)·(E/E0)^(k−1)` (Groom, NIM A 572 (2007) 633): R ≈ 0.55 at 3 GeV, 0.64 at
        /// 10 GeV, 0.76 at 100 GeV, the average over π⁰ photons (R = 1) and hadrons (π/e ≈ 0.5–0.8).
        public var caloResponseAtReference = 0.45
        /// Reference energy E0 of the response formula.
        public var caloResponseReferenceEnergy = 1.0
        /// Exponent k of the electromagnetic fraction `f_em = 1 − (E/E0)^(k−1)` (Groom: k ≈ 0.82).
        public var caloResponseExponent = 0.82
        /// Stochastic term a of `σ(E)/E = a/√E ⊕ b` (E in GeV): ATLAS hadronic calorimetry measures
        /// 50–56 %/√E for pions; 60 % for EM-scale clusters of mixed showers.
        public var caloStochastic = 0.6
        /// Constant term b of the calorimeter resolution (ATLAS pions: 3–5 %).
        public var caloConstant = 0.05
        /// nPFO threshold on the measured pT: 1 GeV.
        public var npfoMinPt = 1.0

        // MARK: Jets (anti-kt R = 0.4 PFlow-like)
        /// Calibration factor applied to the reconstructed constituents of a jet with |η| < trackerEtaMax:
        /// the inverse of the mean constituent response (tracks ≈ 1, clusters R(E)), so that calibrated
        /// hard-scatter jets have a response ≈ 1 at 30–60 GeV, like the ATLAS JES calibration.
        public var jetCalibrationCentral = 1.18
        /// Calibration factor for forward jets (no tracks: all constituents measured by the calorimeter).
        public var jetCalibrationForward = 1.38
        /// Pile-up noise in a jet after area subtraction, per transverse component, in GeV per
        /// √(interaction): ≈ 3 GeV at μ = 35, the ATLAS noise term N of the jet resolution (EPJC 81 (2021) 689).
        public var jetPileUpNoise = 0.5
        /// Constant term of the jet resolution (ATLAS: ≈ 3 %).
        public var jetConstantTerm = 0.03
        /// Jets are kept above pT > 20 GeV, the thesis' selection.
        public var jetMinPt = 20.0
        /// Jet acceptance |η| < 4.5.
        public var jetEtaMax = 4.5

        /// The default, documented parameter set.
        public init() {}
    }

    /// The physics parameters.
    public var configuration: Configuration

    /// Creates a generator with the given parameters (the documented defaults if omitted).
    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// Events per RNG block; part of the sample's definition (changing it changes the events).
    public static let blockSize = 4096

    /// The thesis' sample size: 3,625,136 selected W⁺→μν events.
    public static let thesisEventCount = 3_625_136
    /// The thesis' training-sample size (the first rows).
    public static let thesisTrainingCount = 2_275_902
    /// The thesis' test-sample size (the remaining rows).
    public static let thesisTestCount = 1_349_234

    /// The 38 input features, in the thesis' order (section 1.2.1).
    public static let featureNames: [String] = {
        var names = [
            "hr_charged_x", "hr_charged_y", "hr_neutral_x", "hr_neutral_y", "hr_all_x", "hr_all_y",
            "sumet_charged", "sumet_neutral", "sumet_all",
            "jet1_px", "jet1_py", "jet2_px", "jet2_py",
        ]
        for kind in ["npfo", "cpfo"] {
            for i in 1...5 { names += ["\(kind)\(i)_px", "\(kind)\(i)_py"] }
        }
        names += ["n_pv", "mu", "n_jets", "n_npfo", "n_cpfo"]
        return names
    }()

    /// The two regression targets: the truth hadronic recoil `u_t = −pT(W)`.
    public static let targetNames = ["truth_hr_x", "truth_hr_y"]

    /// All 40 columns of a generated table: the features, then the targets.
    public static var columnNames: [String] { featureNames + targetNames }

    /// Generates events `0..<events` (40 columns: `featureNames` then `targetNames`).
    public func generate(events: Int, seed: UInt64) -> Table {
        generate(events: 0..<events, seed: seed)
    }

    /// Generates the events with the given indices; event `i` is the same whatever range contains it.
    public func generate(events: Range<Int>, seed: UInt64) -> Table {
        generate(events: events, seed: seed, concurrent: true)
    }

    /// The thesis' split of `events` (default the thesis' sample) into training (the first
    /// `trainingCount` rows) and test (the rest); the events are i.i.d., so no shuffling is needed.
    public func generateSplit(
        events: Int = thesisEventCount, trainingCount: Int = thesisTrainingCount, seed: UInt64
    ) -> (training: Table, test: Table) {
        precondition(0 <= trainingCount && trainingCount <= events, "generateSplit: trainingCount out of range")
        return (generate(events: 0..<trainingCount, seed: seed), generate(events: trainingCount..<events, seed: seed))
    }

    /// Generates `events`, over all cores when `concurrent` (the result is identical either way).
    func generate(events: Range<Int>, seed: UInt64, concurrent: Bool) -> Table {
        precondition(events.lowerBound >= 0, "EventGenerator: negative event index")
        let columns = Self.featureNames.count + Self.targetNames.count
        let rows = events.count
        let blockSize = Self.blockSize
        let firstBlock = events.lowerBound / blockSize
        let blockCount = rows == 0 ? 0 : (events.upperBound - 1) / blockSize - firstBlock + 1
        let configuration = configuration
        let values = [Float](unsafeUninitializedCapacity: rows * columns) { buffer, count in
            // Blocks write disjoint row ranges of `buffer`, so sharing the pointer across threads is safe.
            nonisolated(unsafe) let base = buffer.baseAddress
            let runBlock = { (offset: Int) in
                let block = firstBlock + offset
                let start = block * blockSize
                let end = min(start + blockSize, events.upperBound)
                var simulation = EventSimulation(
                    configuration: configuration, seed: seed, stream: UInt64(block))
                var discarded = [Float](repeating: 0, count: columns)
                for event in start..<end {
                    if event < events.lowerBound {
                        // Events before the range keep the block's stream aligned; their values are dropped.
                        discarded.withUnsafeMutableBufferPointer { simulation.simulate(into: $0.baseAddress!) }
                    } else {
                        simulation.simulate(into: base! + (event - events.lowerBound) * columns)
                    }
                }
            }
            if concurrent {
                DispatchQueue.concurrentPerform(iterations: blockCount, execute: runBlock)
            } else {
                for offset in 0..<blockCount { runBlock(offset) }
            }
            count = rows * columns
        }
        return Table(columnNames: Self.columnNames, rowCount: rows, values: values)
    }
}
