import CLShim
import Foundation

/// Finding CLBlast GEMM parameters for the training shapes (stored and applied by `CLBlastParameters`).
public enum GEMMTuning {}

extension GEMMTuning {
    /// One training-step GEMM shape before and after tuning.
    public struct ShapeResult: Codable, Sendable {
        public var shape: String
        public var callsPerStep: Int
        public var defaultGFLOPs: Double
        public var tunedGFLOPs: Double
        /// Which kernel CLBlast uses for it with the tuned parameters.
        public var kernel: String
    }

    /// What `hrtrain tune` did.
    public struct Report: Codable, Sendable {
        public var device: String
        public var shapes: [ShapeResult]
        /// Wall seconds of one step's GEMMs.
        public var defaultSeconds: Double
        public var tunedSeconds: Double
        /// Seconds with hrtrain's built-in parameters for the device (what runs without a stored tune), if any.
        public var builtInSeconds: Double?
        public var parameters: GEMMParameters
        public var candidatesTried: Int
        public var candidatesFailed: Int
        public var seconds: Double
        /// Where the parameters were stored (nil when they were no better than CLBlast's defaults).
        public var storedAt: String?
    }

    /// `Xgemm` candidates satisfying CLBlast's constraints (GEMMK = 0, no local memory: CPU-friendly first),
    /// in a fixed pseudo-random order after the ones known to do well on PoCL.
    static func indirectCandidates(maxWorkGroup: Int) -> [[String: Int]] {
        var all: [[String: Int]] = []
        for mwg in [32, 64, 128] {
            for nwg in [32, 64, 128] {
                for kwg in [16, 32] {
                    for mdimc in [8, 16] {
                        for ndimc in [8, 16] {
                            for vwm in [2, 4, 8, 16] {
                                for vwn in [2, 4, 8, 16] {
                                    for sa in [0, 1] {
                                        let sb = sa
                                        let p = [
                                            "GEMMK": 0, "KREG": 1, "KWG": kwg, "KWI": 2, "MDIMA": mdimc, "MDIMC": mdimc,
                                            "MWG": mwg, "NDIMB": ndimc,
                                            "NDIMC": ndimc, "NWG": nwg, "SA": sa, "SB": sb, "STRM": 0, "STRN": 0,
                                            "VWM": vwm, "VWN": vwn,
                                        ]
                                        guard mdimc * ndimc <= maxWorkGroup, mwg % (mdimc * vwm) == 0,
                                            nwg % (ndimc * vwn) == 0,
                                            kwg % ((mdimc * ndimc) / mdimc) == 0, kwg % ((mdimc * ndimc) / ndimc) == 0
                                        else { continue }
                                        all.append(p)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let preferred = ["MWG": 128, "NWG": 128, "KWG": 16, "MDIMC": 8, "NDIMC": 8, "VWM": 16, "VWN": 16, "SA": 0]
        var rng = SplitMix64(seed: 2024)
        var rest = all.filter { p in !preferred.allSatisfy { p[$0.key] == $0.value } }
        for i in stride(from: rest.count - 1, to: 0, by: -1) { rest.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        return all.filter { p in preferred.allSatisfy { p[$0.key] == $0.value } }
            + rest.sorted { ($0["SA"]!) < ($1["SA"]!) }
    }

    /// `XgemmDirect` candidates satisfying CLBlast's constraints.
    static func directCandidates(maxWorkGroup: Int) -> [[String: Int]] {
        var all: [[String: Int]] = []
        for wgd in [16, 32, 64] {
            for dim in [8, 16] {
                for vwmd in [1, 2, 4, 8] {
                    for vwnd in [1, 2, 4, 8] {
                        for kwid in [2, 8] {
                            let p = [
                                "KWID": kwid, "MDIMAD": dim, "MDIMCD": dim, "NDIMBD": dim, "NDIMCD": dim, "PADA": 1,
                                "PADB": 1, "VWMD": vwmd, "VWND": vwnd, "WGD": wgd,
                            ]
                            guard dim * dim <= maxWorkGroup, wgd % (dim * vwmd) == 0, wgd % (dim * vwnd) == 0,
                                wgd % kwid == 0
                            else { continue }
                            all.append(p)
                        }
                    }
                }
            }
        }
        var rng = SplitMix64(seed: 2025)
        for i in stride(from: all.count - 1, to: 0, by: -1) { all.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        return all
    }

    /// Searches CLBlast's GEMM parameters for the GEMMs of a training step of `spec` at `batch` rows (the
    /// validation forward passes use the same shapes), within about `budget` seconds, and stores the best
    /// per device (when it beats CLBlast's defaults). `context` must not have tuned parameters applied.
    public static func tune(
        context: ComputeContext, spec: NetworkSpec, batch: Int, budget: Double,
        cache: URL = ProgramCache.defaultDirectory(), progress: (String) -> Void
    ) throws -> Report {
        let start = DispatchTime.now()
        let backend = OpenCLBackend(context: context)
        let shapes = Benchmark.trainingGEMMs(spec: spec, batch: batch).sorted { $0.flops < $1.flops }
        func timeAll() throws -> [Double] { try shapes.map { try Benchmark.timeGEMM(backend: backend, $0) } }
        func cost(_ times: [Double]) -> Double { zip(times, shapes).reduce(0) { $0 + $1.0 * Double($1.1.calls) } }

        progress("timing the \(shapes.count) GEMM shapes of a training step with CLBlast's defaults")
        let defaults = try timeAll()
        // hrtrain's built-in parameters are what a run without a stored result gets: the bar to beat, and the
        // first candidate of each kind (so that even the shortest budget tries them).
        let builtIn = CLBlastParameters.builtIn(for: context.device)?.parameters
        /// The shapes with the built-in parameters as a run without a stored result gets them: the backend
        /// routes each call by their helper limit (`GEMMParameters.maximumIndirectHelpers`).
        func timeBuiltIn(_ parameters: GEMMParameters) throws -> [Double] {
            try CLBlastParameters.apply(parameters, to: context)
            let previous = context.gemmParameters
            context.gemmParameters = parameters
            defer { context.gemmParameters = previous }
            return try timeAll()
        }
        var builtInTimes: [Double]?
        if let builtIn {
            progress("timing them with hrtrain's built-in parameters for this device, routed as a run gets them")
            builtInTimes = try timeBuiltIn(builtIn)
        }
        let maxWG = context.device.maxWorkGroupSize
        var tried = 0
        var failed = 0

        /// Times every shape with each candidate of `kernel` until `deadline` seconds into the search.
        func search(_ kernel: String, _ candidates: [[String: Int]], until deadline: Double) -> [(
            params: [String: Int], times: [Double]
        )] {
            var results: [(params: [String: Int], times: [Double])] = []
            for (i, candidate) in candidates.enumerated() where i == 0 || elapsed(since: start) < deadline {
                tried += 1
                do {
                    try CLBlastParameters.override(kernel, candidate, device: context.deviceID)
                    let times = try timeAll()
                    results.append((candidate, times))
                    let best = results.map { cost($0.times) }.min()!
                    progress(
                        String(
                            format: "[%3.0f s] %@ %@: %.1f ms per step (best %.1f)", elapsed(since: start), kernel,
                            describe(candidate), cost(times) * 1e3, best * 1e3))
                } catch {
                    failed += 1
                    progress(
                        String(
                            format: "[%3.0f s] %@ %@: failed (%@)", elapsed(since: start), kernel, describe(candidate),
                            "\(error)".prefix(80).description))
                }
            }
            return results
        }
        // Phase 1: every shape through Xgemm (XGEMM_MIN_INDIRECT_SIZE = 1: m·n·k < 1 never holds).
        try CLBlastParameters.override("GemmRoutine", ["XGEMM_MIN_INDIRECT_SIZE": 1], device: context.deviceID)
        let indirect = search(
            "Xgemm", (builtIn.map { [$0.indirect] } ?? []) + indirectCandidates(maxWorkGroup: maxWG),
            until: 0.6 * budget)
        // Phase 2: every shape through XgemmDirect.
        try CLBlastParameters.override("GemmRoutine", ["XGEMM_MIN_INDIRECT_SIZE": 1 << 20], device: context.deviceID)
        let direct = search(
            "XgemmDirect", (builtIn.map { [$0.direct] } ?? []) + directCandidates(maxWorkGroup: maxWG), until: budget)
        guard let anyIndirect = indirect.first, let anyDirect = direct.first else {
            throw DeviceError(
                "no GEMM candidate ran within the budget of \(Int(budget)) s; give it more time")
        }

        // The split: the k smallest shapes direct, the rest indirect; the best kernel of each kind for its part.
        // CLBlast routes by m·n·k alone, so only splits that some XGEMM_MIN_INDIRECT_SIZE makes are considered.
        let volumes = shapes.map { $0.m * $0.n * $0.k }
        var best: (cost: Double, k: Int, threshold: Int, direct: [String: Int], indirect: [String: Int])?
        for k in 0...shapes.count {
            guard let threshold = minIndirectSize(sendingDirect: k, of: volumes) else { continue }
            func partCost(_ times: [Double], _ range: Range<Int>) -> Double {
                range.reduce(0) { $0 + times[$1] * Double(shapes[$1].calls) }
            }
            let d = direct.min { partCost($0.times, 0..<k) < partCost($1.times, 0..<k) } ?? anyDirect
            let i =
                indirect.min { partCost($0.times, k..<shapes.count) < partCost($1.times, k..<shapes.count) }
                ?? anyIndirect
            let total = partCost(d.times, 0..<k) + partCost(i.times, k..<shapes.count)
            if best == nil || total < best!.cost { best = (total, k, threshold, d.params, i.params) }
        }
        let choice = best!
        let threshold = choice.threshold
        let parameters = GEMMParameters(indirect: choice.indirect, direct: choice.direct, minIndirectSize: threshold)
        try CLBlastParameters.apply(parameters, to: context)
        progress("checking the chosen parameters: \(parameters.summary)")
        let tuned = try timeAll()

        var storedAt: String?
        // Stored only when faster than both CLBlast's defaults and the built-in parameters (timed the same way
        // a moment ago), so that a short budget never leaves a run slower than without tuning.
        var bar = cost(defaults)
        if let builtIn, let builtInTimes {
            let again = try timeBuiltIn(builtIn)
            bar = min(bar, cost(builtInTimes), cost(again))
            try CLBlastParameters.apply(parameters, to: context)
        }
        if cost(tuned) < bar {
            let url = CLBlastParameters.storeURL(for: context.device, cache: cache)
            let stored = StoredGEMMTuning(
                device: context.device.name, driver: context.device.driverVersion, parameters: parameters,
                defaultSeconds: cost(defaults), tunedSeconds: cost(tuned),
                date: ISO8601DateFormatter().string(from: Date()))
            let encoder = JSON.encoder(pretty: true)
            try FileManager.default.createDirectory(
                at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            let data = try encoder.encode(stored)
            try AtomicFile.write(to: url) { try $0.write([UInt8](data)) }
            storedAt = url.path
        }
        let results = shapes.enumerated().map { i, s in
            ShapeResult(
                shape: s.label, callsPerStep: s.calls, defaultGFLOPs: s.flops / defaults[i] / 1e9,
                tunedGFLOPs: s.flops / tuned[i] / 1e9, kernel: i < choice.k ? "XgemmDirect" : "Xgemm")
        }
        return Report(
            device: context.device.name, shapes: results, defaultSeconds: cost(defaults), tunedSeconds: cost(tuned),
            builtInSeconds: builtInTimes.map(cost), parameters: parameters, candidatesTried: tried,
            candidatesFailed: failed, seconds: elapsed(since: start),
            storedAt: storedAt)
    }

    /// The `XGEMM_MIN_INDIRECT_SIZE` T that sends exactly the first `count` of `volumes` (m·n·k, ascending) to the
    /// direct kernel — CLBlast goes direct when m·n·k < T³ — or nil when no T does (equal volumes, or no cube
    /// between the two). 1 sends none direct, 2²⁰ all.
    static func minIndirectSize(sendingDirect count: Int, of volumes: [Int]) -> Int? {
        precondition((0...volumes.count).contains(count) && zip(volumes, volumes.dropFirst()).allSatisfy { $0 <= $1 })
        if count == 0 { return 1 }
        if count == volumes.count { return 1 << 20 }
        let below = volumes[count - 1]
        // The smallest T with T³ > below, in integers (cbrt's rounding only gives the start).
        var size = max(1, Int(cbrt(Double(below))))
        while size > 1 && (size - 1) * (size - 1) * (size - 1) > below { size -= 1 }
        while size * size * size <= below { size += 1 }
        return size * size * size <= volumes[count] ? size : nil
    }

    private static func describe(_ p: [String: Int]) -> String {
        p.sorted { $0.key < $1.key }.filter { !["GEMMK", "KREG", "STRM", "STRN", "PADA", "PADB"].contains($0.key) }.map
        { "\($0.key)=\($0.value)" }.joined(separator: " ")
    }
}
