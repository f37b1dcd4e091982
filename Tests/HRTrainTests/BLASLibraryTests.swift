import CPUShim
import Foundation
import XCTest

@testable import HRTrain

/// The CPU backend on each BLAS it can open, forced with `HRTRAIN_BLAS` in a child process (a process opens one
/// BLAS, so the in-process tests see only the default): `verify` passes, and a training run is bitwise the same
/// on 1, 3 and 8 threads (4480 training rows: a batch of 4000 and one of 480). oneDNN splits C into fixed tiles
/// (`CPUSHIM_TILE_ROWS` × `CPUSHIM_TILE_COLUMNS`, 256 × 128), so the shapes here span several tiles both ways; its
/// own threads would split k of the first layer's weight gradient (38 × 260, k = 4000) on 8 threads and change
/// its bits. BLIS stays covered where oneDNN is the default.
final class BLASLibraryTests: XCTestCase {
    func installed(_ library: BLASSelection.Library) throws {
        let path = BLASSelection.path(for: library)
        try XCTSkipIf(
            path.hasPrefix("/") == false,
            "\(library.displayName) is not installed (\(BLASSelection.package(for: library)))")
    }

    func check(_ library: BLASSelection.Library) throws {
        try installed(library)
        // OMP_NUM_THREADS=8: a one-thread run must not hand oneDNN libgomp's default team (8 threads change its bits).
        var environment = ["HRTRAIN_BLAS": library.rawValue]
        if library == .onednn { environment["OMP_NUM_THREADS"] = "8" }
        let verify = try runHRTrain(
            ["verify", "--backend", "cpu", "--batch", "280", "--hidden", "140,20", "--fd-probes", "4", "--json"],
            environment: environment)
        XCTAssertEqual(verify.status, 0, verify.out + verify.err)
        let report = try JSONSerialization.jsonObject(with: Data(verify.out.utf8)) as? [String: Any]
        let blas = report?["blas"] as? [String: Any]
        XCTAssertEqual(blas?["library"] as? String, library.rawValue, verify.out)
        XCTAssertEqual(blas?["requestedKernels"] as? String, blas?["reportedKernels"] as? String, verify.out)

        let dir = try temporaryDirectory(self)
        let data = dir.appendingPathComponent("events.npy")
        let generated = try runHRTrain(["generate", "--events", "5600", "--seed", "3", "--output", data.path])
        XCTAssertEqual(generated.status, 0, generated.err)
        var models: [Model] = []
        for threads in [1, 3, 8] {
            let model = dir.appendingPathComponent("model-\(threads).safetensors")
            let trained = try runHRTrain(
                [
                    "train", "--backend", "cpu", "--threads", "\(threads)", "--data", data.path, "--model", model.path,
                    "--hidden", "260,130", "--batch-size", "4000", "--epochs", "2", "--seed", "1", "--quiet",
                ], environment: environment)
            XCTAssertEqual(trained.status, 0, trained.err)
            models.append(try Model.read(from: model))
        }
        let bits = models.map { ($0.parameters + $0.runningStatistics).map(\.bitPattern) }
        XCTAssertTrue(models[0].parameters.allSatisfy(\.isFinite), "\(library.displayName): non-finite parameters")
        for (index, threads) in [(1, 3), (2, 8)] {
            let differing = zip(bits[0], bits[index]).filter { $0 != $1 }.count
            XCTAssertTrue(
                bits[0] == bits[index],
                "\(library.displayName): \(differing) of \(bits[0].count) values differ, 1 against \(threads) threads")
        }
    }

    func testOneDNNVerifiesAndTrainsBitwiseTheSameOnAnyThreadCount() throws { try check(.onednn) }

    func testBLISVerifiesAndTrainsBitwiseTheSameOnAnyThreadCount() throws { try check(.blis) }

    /// An unknown library or oneDNN cap is refused, naming the variable and what it takes.
    func testUnknownLibrariesAndOneDNNCapsAreRefused() throws {
        let unknown = try runHRTrain(
            ["verify", "--backend", "cpu", "--batch", "8", "--hidden", "4"], environment: ["HRTRAIN_BLAS": "mkl"])
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.err.contains("HRTRAIN_BLAS must be blis, openblas or onednn"), unknown.err)
        try installed(.onednn)
        let cap = try runHRTrain(
            ["verify", "--backend", "cpu", "--batch", "8", "--hidden", "4"],
            environment: ["HRTRAIN_BLAS": "onednn", "HRTRAIN_BLAS_KERNELS": "avx512_core_amx"])
        XCTAssertNotEqual(cap.status, 0)
        XCTAssertTrue(cap.err.contains("no instruction-set cap called 'avx512_core_amx'"), cap.err)
    }

    /// oneDNN's caps follow the CPU's features, and one the CPU lacks is a mismatch.
    func testOneDNNCapsFollowTheCPUFeatures() {
        let skylake = CPUFeatures(vendor: "GenuineIntel", family: 6, model: 207, avx2: true, avx512: true, avx: true)
        let avx2Only = CPUFeatures(vendor: "AuthenticAMD", family: 23, model: 49, avx2: true, avx512: false, avx: true)
        XCTAssertEqual(BLASSelection.kernels(for: .onednn, features: skylake), "avx512_core")
        XCTAssertEqual(BLASSelection.kernels(for: .onednn, features: avx2Only), "avx2")
        XCTAssertNil(BLASSelection.check(library: .onednn, requested: "avx2", reported: "avx2", features: avx2Only))
        XCTAssertNotNil(
            BLASSelection.check(library: .onednn, requested: "avx512_core", reported: "avx2", features: avx2Only))
        XCTAssertNotNil(
            BLASSelection.check(
                library: .onednn, requested: "avx512_core", reported: "avx512_core", features: avx2Only),
            "AVX-512 kernels on a CPU without AVX-512")
        let zen4 = CPUFeatures(vendor: "AuthenticAMD", family: 25, model: 17, avx2: true, avx512: true, avx: true)
        XCTAssertEqual(BLASSelection.defaultLibrary(for: zen4, processors: 2), .onednn, "measured fastest on Zen 4")
        XCTAssertEqual(
            BLASSelection.defaultLibrary(for: zen4, processors: 64), .blis, "8 tiles for a weight gradient: ≤ 8 CPUs")
        XCTAssertEqual(BLASSelection.defaultLibrary(for: avx2Only, processors: 2), .blis)
    }

    /// A cap below the CPU's widest runs those kernels (the cap's value reaches oneDNN and is read back).
    func testOneDNNRunsTheCapItIsGiven() throws {
        try installed(.onednn)
        try XCTSkipIf(!CPUFeatures.current.avx2, "the CPU has no AVX2")
        let capped = try runHRTrain(
            ["verify", "--backend", "cpu", "--batch", "8", "--hidden", "4", "--json"],
            environment: ["HRTRAIN_BLAS": "onednn", "HRTRAIN_BLAS_KERNELS": "avx2"])
        XCTAssertEqual(capped.status, 0, capped.out + capped.err)
        let report = try JSONSerialization.jsonObject(with: Data(capped.out.utf8)) as? [String: Any]
        XCTAssertEqual((report?["blas"] as? [String: Any])?["reportedKernels"] as? String, "avx2", capped.out)
    }

    /// oneDNN's tiles of C depend on C's shape alone: the step's shapes, and at least `CPUSHIM_TILES_WANTED` tiles
    /// (or the smallest tile) for any shape.
    func testOneDNNTilesFollowTheShapeOfC() {
        func tile(_ m: Int, _ n: Int) -> [Int] {
            var (rows, columns): (Int32, Int32) = (0, 0)
            cpushim_onednn_tile(Int32(m), Int32(n), &rows, &columns)
            return [Int(rows), Int(columns)]
        }
        XCTAssertEqual(tile(4000, 256), [256, 128], "32 tiles")
        XCTAssertEqual(tile(256, 256), [64, 128], "a weight gradient: 8 tiles")
        XCTAssertEqual(tile(38, 256), [64, 64], "the first layer's weight gradient: 4 tiles")
        XCTAssertEqual(tile(1, 1), [64, 64])
        for (m, n) in [(3, 5000), (5000, 3), (129, 257), (1000, 70), (Int(Int32.max), 1)] {
            let t = tile(m, n)
            let tiles = ((m + t[0] - 1) / t[0]) * ((n + t[1] - 1) / t[1])
            XCTAssertTrue(
                tiles >= Int(CPUSHIM_TILES_WANTED) || t == [64, 64], "\(m)×\(n): \(tiles) tiles of \(t)")
        }
    }
}
