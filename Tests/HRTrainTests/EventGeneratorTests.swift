import XCTest

@testable import HRTrain

/// Tests of the W⁺→μν event generator: determinism, layout, and the physics of the raw recoil.
final class EventGeneratorTests: XCTestCase {
    /// One shared 40k-event sample for the physics checks (generating it dominates the suite's time).
    static let sample = EventGenerator().generate(events: 40_000, seed: 2024)

    private func column(_ table: Table, _ name: String) -> [Float] {
        table.column(table.columnIndex(name)!)
    }

    /// Row-major values of the shared sample's first `rows` rows.
    private func samplePrefix(_ rows: Int) -> [Float] {
        Array(Self.sample.values[..<(rows * Self.sample.columnCount)])
    }

    func testSameSeedGivesIdenticalBytes() {
        let again = EventGenerator().generate(events: 6_000, seed: 2024)
        XCTAssertEqual(again.values.map(\.bitPattern), samplePrefix(6_000).map(\.bitPattern))
    }

    func testDifferentSeedsDiffer() {
        let other = EventGenerator().generate(events: 2_000, seed: 2025)
        let differing = zip(other.values, samplePrefix(2_000)).filter { $0 != $1 }.count
        XCTAssertGreaterThan(differing, other.values.count / 2)
    }

    /// The shared sample was made concurrently; a serial run gives the same bytes.
    func testSerialAndConcurrentGenerationAreIdentical() {
        let serial = EventGenerator().generate(events: 0..<9_000, seed: 2024, concurrent: false)
        XCTAssertEqual(serial.values.map(\.bitPattern), samplePrefix(9_000).map(\.bitPattern))
    }

    /// Event i depends only on (seed, i): a split starting inside an RNG block reproduces the same rows.
    func testEventsDependOnlyOnTheirIndex() {
        let split = EventGenerator().generateSplit(events: 9_000, trainingCount: 6_000, seed: 2024)
        XCTAssertEqual(split.training.rowCount, 6_000)
        XCTAssertEqual(split.test.rowCount, 3_000)
        XCTAssertEqual(split.training.columnNames, EventGenerator.columnNames)
        XCTAssertEqual(
            (split.training.values + split.test.values).map(\.bitPattern), samplePrefix(9_000).map(\.bitPattern))
    }

    func testThesisSampleSizes() {
        XCTAssertEqual(
            EventGenerator.thesisTrainingCount + EventGenerator.thesisTestCount, EventGenerator.thesisEventCount)
        XCTAssertEqual(EventGenerator.thesisEventCount, 3_625_136)
    }

    func testFeatureNamesCountAndOrder() {
        let expected =
            [
                "hr_charged_x", "hr_charged_y", "hr_neutral_x", "hr_neutral_y", "hr_all_x", "hr_all_y",
                "sumet_charged", "sumet_neutral", "sumet_all", "jet1_px", "jet1_py", "jet2_px", "jet2_py",
            ]
            + (1...5).flatMap { ["npfo\($0)_px", "npfo\($0)_py"] }
            + (1...5).flatMap { ["cpfo\($0)_px", "cpfo\($0)_py"] }
            + ["n_pv", "mu", "n_jets", "n_npfo", "n_cpfo"]
        XCTAssertEqual(EventGenerator.featureNames.count, 38)
        XCTAssertEqual(EventGenerator.featureNames, expected)
        XCTAssertEqual(EventGenerator.targetNames, ["truth_hr_x", "truth_hr_y"])
        let table = Self.sample
        XCTAssertEqual(table.columnNames, expected + ["truth_hr_x", "truth_hr_y"])
        XCTAssertEqual(table.rowCount, 40_000)
        XCTAssertEqual(EventGenerator().generate(events: 0, seed: 1).rowCount, 0)
    }

    func testAllValuesAreFinite() {
        XCTAssertTrue(Self.sample.values.allSatisfy(\.isFinite))
    }

    /// |u_t| = pT(W): mean ≈ p0 = 9 GeV for the default spectrum, components centred on zero with an RMS of
    /// ≈ √(⟨pT²⟩/2) ≈ 9 GeV; the sample's statistical errors are ≈ 0.1 GeV.
    func testTruthRecoilMeanAndRMS() {
        let tx = column(Self.sample, "truth_hr_x").map(Double.init)
        let ty = column(Self.sample, "truth_hr_y").map(Double.init)
        let n = Double(tx.count)
        let meanMagnitude = zip(tx, ty).map { ($0 * $0 + $1 * $1).squareRoot() }.reduce(0, +) / n
        XCTAssertGreaterThan(meanMagnitude, 8.0)
        XCTAssertLessThan(meanMagnitude, 10.5)
        for component in [tx, ty] {
            let mean = component.reduce(0, +) / n
            let rms = (component.reduce(0) { $0 + $1 * $1 } / n).squareRoot()
            XCTAssertLessThan(abs(mean), 0.3)
            XCTAssertGreaterThan(rms, 7.0)
            XCTAssertLessThan(rms, 11.0)
        }
    }

    /// The raw all-PFO recoil is under-measured (hadronic response < 1, thresholds, acceptance) and its
    /// response rises with |u_t| (the calorimeter response rises with energy; soft particles are lost).
    func testRawRecoilResponseIsBelowOneAndRisesWithRecoil() {
        let t = Self.sample
        let tx = column(t, "truth_hr_x")
        let ty = column(t, "truth_hr_y")
        let magnitude = zip(tx, ty).map { ($0 * $0 + $1 * $1).squareRoot() }
        let bins = recoilFigures(
            predictedX: column(t, "hr_all_x"), predictedY: column(t, "hr_all_y"), truthX: tx, truthY: ty,
            variable: magnitude, edges: [0, 10, 40, 100])
        let low = bins[0]
        let high = bins[2]
        XCTAssertGreaterThan(low.response, 0.4)
        XCTAssertLessThan(low.response, 0.85)
        XCTAssertLessThan(high.response, 1.0)
        XCTAssertGreaterThan(high.response - low.response, 3 * (low.responseError + high.responseError))
        // Each PFO collection alone measures less than the sum of both.
        for prefix in ["hr_charged", "hr_neutral"] {
            let partial = recoilFigures(
                predictedX: column(t, prefix + "_x"), predictedY: column(t, prefix + "_y"), truthX: tx, truthY: ty,
                variable: magnitude, edges: [0, 10, 40, 100])
            XCTAssertLessThan(partial[2].response, high.response)
        }
    }

    /// Pile-up adds neutral PFOs in random directions: σ(u⊥) grows with μ (by ≈ 60 % from μ ≈ 18 to 55).
    func testRawRecoilResolutionWorsensWithPileUp() {
        let t = Self.sample
        let bins = recoilFigures(
            predictedX: column(t, "hr_all_x"), predictedY: column(t, "hr_all_y"),
            truthX: column(t, "truth_hr_x"), truthY: column(t, "truth_hr_y"),
            variable: column(t, "mu"), edges: [10, 25, 50, 70])
        let low = bins[0]
        let high = bins[2]
        XCTAssertGreaterThan(low.perpendicularRMS, 6)
        XCTAssertLessThan(low.perpendicularRMS, 13)
        XCTAssertGreaterThan(high.perpendicularRMS, 1.3 * low.perpendicularRMS)
        XCTAssertGreaterThan(high.perpendicularWidth, 1.3 * low.perpendicularWidth)
        XCTAssertGreaterThan(high.parallelRMS, 1.3 * low.parallelRMS)
    }

    /// Objects that are missing are zero; present ones are ordered and pass their thresholds; the sums
    /// are consistent.
    func testMissingObjectsAreZeroAndSumsAreConsistent() {
        let t = Self.sample
        let stride = t.columnCount
        func index(_ name: String) -> Int { t.columnIndex(name)! }
        let nJets = index("n_jets")
        let nN = index("n_npfo")
        let nC = index("n_cpfo")
        let nPV = index("n_pv")
        let mu = index("mu")
        var eventsWithMissingJet2 = 0
        for row in 0..<t.rowCount {
            let v = t.values[(row * stride)..<((row + 1) * stride)]
            func value(_ i: Int) -> Float { v[v.startIndex + i] }
            func pt(_ name: String) -> Float {
                let x = value(index(name + "_px"))
                let y = value(index(name + "_py"))
                return (x * x + y * y).squareRoot()
            }
            for count in [value(nJets), value(nN), value(nC), value(nPV)] {
                XCTAssertEqual(count, count.rounded())
                XCTAssertGreaterThanOrEqual(count, 0)
            }
            XCTAssertGreaterThanOrEqual(value(nPV), 1)
            XCTAssertTrue((10...70).contains(value(mu)))
            for k in 1...2 {
                let name = "jet\(k)"
                if value(nJets) < Float(k) {
                    XCTAssertEqual(value(index(name + "_px")), 0)
                    XCTAssertEqual(value(index(name + "_py")), 0)
                    if k == 2 { eventsWithMissingJet2 += 1 }
                } else {
                    XCTAssertGreaterThan(pt(name), 20)
                }
            }
            XCTAssertGreaterThanOrEqual(pt("jet1"), pt("jet2"))
            for (kind, countIndex, threshold) in [("npfo", nN, Float(1.0)), ("cpfo", nC, Float(0.4))] {
                for k in 1...5 {
                    let name = "\(kind)\(k)"
                    if value(countIndex) < Float(k) {
                        XCTAssertEqual(value(index(name + "_px")), 0)
                        XCTAssertEqual(value(index(name + "_py")), 0)
                    } else {
                        XCTAssertGreaterThan(pt(name), threshold)
                    }
                    if k > 1 { XCTAssertGreaterThanOrEqual(pt("\(kind)\(k - 1)"), pt(name)) }
                }
            }
            let tolerance: Float = 1e-3
            XCTAssertEqual(
                value(index("hr_all_x")), value(index("hr_charged_x")) + value(index("hr_neutral_x")),
                accuracy: tolerance)
            XCTAssertEqual(
                value(index("hr_all_y")), value(index("hr_charged_y")) + value(index("hr_neutral_y")),
                accuracy: tolerance)
            XCTAssertEqual(
                value(index("sumet_all")), value(index("sumet_charged")) + value(index("sumet_neutral")),
                accuracy: tolerance)
            let leadingCharged = (1...5).map { pt("cpfo\($0)") }.reduce(0, +)
            XCTAssertLessThanOrEqual(leadingCharged, value(index("sumet_charged")) + tolerance)
        }
        // Both cases occur: the zero-filling is actually exercised.
        XCTAssertGreaterThan(eventsWithMissingJet2, 0)
        XCTAssertLessThan(eventsWithMissingJet2, t.rowCount)
    }
}
