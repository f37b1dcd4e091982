import CPUShim
import Foundation

/// The processor's instruction-set features, read with cpuid/xgetbv (never from a library's own detection).
public struct CPUFeatures: Codable, Sendable, Equatable {
    /// "GenuineIntel", "AuthenticAMD", …
    public var vendor: String
    public var family: Int
    public var model: Int
    /// AVX2 and FMA3, with the OS saving the YMM state.
    public var avx2: Bool
    /// AVX-512 F, DQ, BW and VL, with the OS saving the ZMM and opmask state.
    public var avx512: Bool
    /// AVX with the OS saving the YMM state.
    public var avx: Bool

    /// The features of the processor this process runs on.
    public static let current: CPUFeatures = {
        var f = cpushim_features()
        cpushim_query_features(&f)
        let vendor = withUnsafeBytes(of: f.vendor) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return CPUFeatures(
            vendor: vendor, family: Int(f.family), model: Int(f.model),
            avx2: f.avx2 == 1 && f.fma == 1 && f.os_avx == 1,
            avx512: f.avx512f == 1 && f.avx512dq == 1 && f.avx512bw == 1 && f.avx512vl == 1 && f.os_avx512 == 1,
            avx: f.avx == 1 && f.os_avx == 1)
    }()

    /// `AVX-512`, `AVX2+FMA`, `AVX` or `SSE`: the widest vector level the kernels may use.
    public var level: String { avx512 ? "AVX-512" : avx2 ? "AVX2+FMA" : avx ? "AVX" : "SSE" }

    /// One line for tables: `AuthenticAMD family 25 model 17, AVX-512`.
    public var summary: String { "\(vendor) family \(family) model \(model), \(level)" }
}

/// The BLAS the CPU backend runs its SGEMMs through, opened once per process with `dlopen` after its kernel
/// selection is fixed through the environment (BLIS reads `BLIS_ARCH_TYPE` at its first call, OpenBLAS reads
/// `OPENBLAS_CORETYPE` when it is loaded — so it must not be linked, or it would read it before `main`).
///
/// The kernels are chosen from `CPUFeatures`, never from the library's own detection (OpenBLAS 0.3.21 runs
/// its SSE3 "Prescott" kernels on CPUs it does not know), and the library is asked afterwards which kernels
/// it runs: a mismatch is an error here and a FAIL in `hrtrain verify`.
public struct BLASSelection: Codable, Sendable, Equatable {
    /// The libraries hrtrain can use: BLIS, OpenBLAS and oneDNN (its `dnnl_sgemm`, Debian's `libdnnl2`).
    public enum Library: String, Codable, Sendable, CaseIterable {
        case blis, openblas, onednn

        /// The name as the library spells it.
        public var displayName: String {
            switch self {
            case .blis: return "BLIS"
            case .openblas: return "OpenBLAS"
            case .onednn: return "oneDNN"
            }
        }
    }
    public var library: Library
    /// The shared library opened.
    public var path: String
    /// The kernel configuration hrtrain asked for (BLIS arch name / OpenBLAS core name).
    public var requestedKernels: String
    /// What the library reports running after it initialised.
    public var reportedKernels: String
    /// Why these kernels (feature level, or the override variable).
    public var reason: String
    /// The processor.
    public var features: CPUFeatures
    /// How the threads wait between parallel regions, and why (see `chooseWaitPolicy`).
    public var waitPolicy: String?

    /// True when the library runs the kernels hrtrain chose and the CPU supports them.
    public var kernelsMatch: Bool {
        Self.check(library: library, requested: requestedKernels, reported: reportedKernels, features: features) == nil
    }

    /// nil when `reported` is what was requested and within the CPU's features; else what is wrong.
    public static func check(library: Library, requested: String, reported: String, features: CPUFeatures) -> String? {
        if requested.lowercased() != reported.lowercased() {
            return "\(library.rawValue) runs its '\(reported)' kernels, hrtrain selected '\(requested)'"
        }
        if let needed = requiredLevel(library: library, kernels: reported), !features.satisfies(needed) {
            return "\(library.rawValue)'s '\(reported)' kernels need \(needed), the CPU has \(features.level)"
        }
        return nil
    }

    /// The kernels for the CPU's features: BLIS `skx` where AVX-512 runs at full width (Intel; AMD Zen 5, family
    /// 26, where `skx` measured 1.3-1.5x `haswell`'s GEMM rate), `haswell` on other AVX2+FMA CPUs (also on AMD
    /// Zen 4, family 25, whose AVX-512 runs at half width and where `haswell` measured faster); OpenBLAS
    /// `SkylakeX`, `Haswell`, `Sandybridge`, else the library's generic x86-64 kernels; oneDNN's instruction-set cap
    /// `avx512_core`, `avx2`, `avx`, `sse41` (its JIT kernels use the widest the cap and the CPU allow).
    static func kernels(for library: Library, features f: CPUFeatures) -> String {
        let fullWidth512 = f.avx512 && (f.vendor == "GenuineIntel" || (f.vendor == "AuthenticAMD" && f.family >= 26))
        switch library {
        case .blis: return fullWidth512 ? "skx" : f.avx2 ? "haswell" : f.avx ? "sandybridge" : "generic"
        case .openblas: return f.avx512 ? "SkylakeX" : f.avx2 ? "Haswell" : f.avx ? "Sandybridge" : "Prescott"
        case .onednn: return f.avx512 ? "avx512_core" : f.avx2 ? "avx2" : f.avx ? "avx" : "sse41"
        }
    }

    /// oneDNN's `dnnl_cpu_isa_t` for the caps hrtrain requests (dnnl_types.h of oneDNN 2.x).
    static let onednnInstructionSets: [String: Int32] = ["sse41": 0x1, "avx": 0x3, "avx2": 0x7, "avx512_core": 0x27]

    /// The library for a CPU, by measurement of the whole training step with 2 threads on a quiet machine
    /// (`hrtrain bench --backend cpu`, alternating, README). oneDNN on AMD Zen 4 (family 25 with AVX-512) machines
    /// of at most `oneDNNProcessorLimit` logical CPUs (its tiles give a weight gradient 8 threads,
    /// `cpushim_onednn_tile`; measured on 2): its `avx512_core` step ran a median 1.08x BLIS `haswell`'s there (14
    /// alternating pairs, 0.94-1.27; the thesis-size epoch 10.4 s against 11.8 s; session 10). BLIS on every other
    /// CPU, and where oneDNN does not load. On the Xeon (family 6 model 207) BLIS `skx` trains 1.15–1.32× faster
    /// than OpenBLAS `SkylakeX`, although OpenBLAS's GEMMs alone are as fast or faster per core: OpenBLAS's own
    /// threads keep the cores from the step's other parallel regions; oneDNN is not measured there yet
    /// (`HRTRAIN_BLAS=onednn`). On AMD Zen 4, BLIS `haswell` 179 GFLOP/s on 2 threads against OpenBLAS's 72–119.
    static func defaultLibrary(
        for f: CPUFeatures, processors: Int = ProcessInfo.processInfo.activeProcessorCount
    ) -> Library {
        f.vendor == "AuthenticAMD" && f.family == 25 && f.avx512 && processors <= oneDNNProcessorLimit ? .onednn : .blis
    }

    /// The most logical CPUs oneDNN is the default on (`CPUSHIM_TILES_WANTED`: a 256 × 256 GEMM has 8 tiles).
    static let oneDNNProcessorLimit = Int(CPUSHIM_TILES_WANTED)

    /// The shared library to open: Debian's path where it exists, else the soname (found through the loader's
    /// search path, e.g. the `lib/` of the GPU bundle).
    static func path(for library: Library) -> String {
        let candidates: [String]
        switch library {
        case .blis: candidates = ["/usr/lib/x86_64-linux-gnu/blis-openmp/libblis.so.4", "libblis.so.4"]
        case .openblas:
            candidates = ["/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0", "libopenblas.so.0"]
        case .onednn: candidates = ["/usr/lib/x86_64-linux-gnu/libdnnl.so.2", "libdnnl.so.2"]
        }
        return candidates.first { !$0.hasPrefix("/") || FileManager.default.fileExists(atPath: $0) }!
    }

    /// The Debian package that installs the library.
    static func package(for library: Library) -> String {
        switch library {
        case .blis: return "libblis4-openmp"
        case .openblas: return "libopenblas0-pthread"
        case .onednn: return "libdnnl2"
        }
    }

    /// Whether the library can be opened here (a default other than BLIS falls back to BLIS where it cannot). A
    /// library that opens stays loaded (it is opened again at once; closing a C++ library and opening it again is
    /// not safe everywhere); never asked of OpenBLAS, which must not load before `OPENBLAS_CORETYPE` is set.
    /// Returns nil, or the loader's reason (`dlerror`).
    static func loadError(_ library: Library) -> String? {
        precondition(library != .openblas, "OpenBLAS reads its core type when it loads")
        if dlopen(path(for: library), RTLD_NOW | RTLD_LOCAL) != nil { return nil }
        return dlerror().map { String(cString: $0) } ?? "dlopen failed"
    }

    /// The vector level a kernel configuration executes (nil: unknown name, no requirement known).
    static func requiredLevel(library: Library, kernels: String) -> String? {
        let name = kernels.lowercased()
        if ["skx", "knl", "skylakex", "cooperlake", "sapphirerapids"].contains(name) || name.hasPrefix("avx512") {
            return "AVX-512"
        }
        if ["haswell", "zen", "zen2", "zen3", "excavator", "steamroller", "avx2", "avx2_vnni"].contains(name) {
            return "AVX2+FMA"
        }
        if ["sandybridge", "piledriver", "bulldozer", "avx"].contains(name) { return "AVX" }
        return nil
    }

    /// The selection of this process (opened on first use; `$HRTRAIN_BLAS` = blis|openblas|onednn overrides the library
    /// `defaultLibrary(for:)` picks,
    /// `$HRTRAIN_BLAS_KERNELS` overrides the kernels, checked against the CPU's features).
    public static let shared: Result<BLASSelection, BackendError> = {
        do { return .success(try open()) } catch let error as BackendError { return .failure(error) } catch {
            return .failure(BackendError("\(error)"))
        }
    }()

    static func open(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> BLASSelection {
        let features = CPUFeatures.current
        var library: Library
        var fallback = ""
        if let name = environment["HRTRAIN_BLAS"], !name.isEmpty {
            guard let chosen = Library(rawValue: name.lowercased()) else {
                throw BackendError("HRTRAIN_BLAS must be blis, openblas or onednn, got '\(name)'")
            }
            library = chosen
        } else {
            library = defaultLibrary(for: features)
            if library != .blis, let problem = loadError(library) {
                fallback = "; \(library.displayName) not loaded (\(problem); Debian: \(package(for: library))), so BLIS"
                library = .blis
            }
        }
        var requested = kernels(for: library, features: features)
        var reason = "\(features.level) (cpuid)"
        if let override = environment["HRTRAIN_BLAS_KERNELS"], !override.isEmpty {
            if let needed = requiredLevel(library: library, kernels: override), !features.satisfies(needed) {
                throw BackendError(
                    "HRTRAIN_BLAS_KERNELS=\(override) needs \(needed), but this CPU has \(features.level) only")
            }
            requested = override
            reason = "HRTRAIN_BLAS_KERNELS"
        }
        reason += fallback
        let path = self.path(for: library)
        let package = self.package(for: library)
        if library == .openblas {
            if cpushim_library_loaded(path) == 0 { setenv("OPENBLAS_CORETYPE", requested, 1) }
        }
        let (waitSetting, waitPolicy) = try Self.chooseWaitPolicy(environment: environment)
        if let (name, value) = waitSetting { setenv(name, value, 0) }
        var error = [CChar](repeating: 0, count: 512)
        let kind: Int32
        switch library {
        case .blis: kind = Int32(CPUSHIM_BLAS_BLIS)
        case .openblas: kind = Int32(CPUSHIM_BLAS_OPENBLAS)
        case .onednn: kind = Int32(CPUSHIM_BLAS_ONEDNN)
        }
        guard cpushim_blas_open(path, kind, &error, 512) == 0 else {
            throw BackendError(
                "cannot open \(library.rawValue) (\(String(cString: error))); install the Debian package \(package)")
        }
        if library == .blis {
            let id = cpushim_blis_arch_id(requested)
            guard id >= 0 else {
                throw BackendError("BLIS at \(path) has no configuration called '\(requested)'")
            }
            setenv("BLIS_ARCH_TYPE", String(id), 1)
        }
        if library == .onednn {
            guard let isa = onednnInstructionSets[requested.lowercased()] else {
                throw BackendError(
                    "oneDNN has no instruction-set cap called '\(requested)' (expected one of "
                        + onednnInstructionSets.keys.sorted().joined(separator: ", ")
                        + "; HRTRAIN_BLAS_KERNELS names the kernels of the library in use, and HRTRAIN_BLAS=blis "
                        + "chooses BLIS)")
            }
            let status = cpushim_onednn_set_max_isa(isa)
            guard status == 0 else {
                throw BackendError(
                    "oneDNN at \(path) refused the instruction-set cap '\(requested)' (status \(status))")
            }
        }
        var text = [CChar](repeating: 0, count: 256)
        cpushim_blas_kernels(&text, 256)
        let reported = String(cString: text)
        let selection = BLASSelection(
            library: library, path: path, requestedKernels: requested, reportedKernels: reported, reason: reason,
            features: features, waitPolicy: waitPolicy)
        if let problem = check(library: library, requested: requested, reported: reported, features: features) {
            throw BackendError("the CPU backend's BLAS is misconfigured: \(problem)")
        }
        return selection
    }

    /// libgomp's wait policy (BLIS's threads and the kernels' parallel-for; libgomp reads it once, when it is
    /// loaded with BLIS): the variable to set (nil: none) and a description. By default libgomp's own: a waiting
    /// thread spins for a while (300,000 rounds) before it sleeps, so it is woken at once at each of the ~30
    /// parallel regions and barriers of a step; a passive wait (sleep at once) costs a wake-up each time. Measured
    /// on the 2-core Zen 5 (README): spinning was faster idle and under load alike, and the default thread count
    /// (`CPUBackend.defaultThreads`: the free cores) keeps hrtrain's threads from sharing cores, where waits cost
    /// most. `OMP_WAIT_POLICY` or `GOMP_SPINCOUNT` set by the user wins; `HRTRAIN_THREAD_WAIT=passive` (or `spin`)
    /// chooses.
    static func chooseWaitPolicy(environment: [String: String]) throws -> (
        setting: (String, String)?, description: String
    ) {
        for name in ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT"] {
            if let user = environment[name] { return (nil, "\(name)=\(user) (set by the user)") }
        }
        switch environment["HRTRAIN_THREAD_WAIT"]?.lowercased() {
        case nil, "spin": return (nil, "spin (libgomp's default)")
        case "passive": return (("OMP_WAIT_POLICY", "PASSIVE"), "passive (HRTRAIN_THREAD_WAIT)")
        case let other?: throw BackendError("HRTRAIN_THREAD_WAIT must be spin or passive, got '\(other)'")
        }
    }

    /// The cores free for this process when the CPU backend was first asked for them, over 0.1 s (`freeCores`).
    public static let freeCoresAtStart: Double? = freeCores(over: 0.1)

    /// The cores free for this process over `seconds`, from /proc/stat's first line: the idle and iowait share of
    /// all CPU time, plus the share of niced processes when this one is not niced (the scheduler gives a nice-0
    /// thread its core back from them at once), times the number of CPUs listed; nil where it cannot be read.
    static func freeCores(over seconds: Double) -> Double? {
        let countNicedAsFree = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) <= 0
        func sample() -> (free: Double, total: Double, cpus: Int)? {
            guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8) else { return nil }
            let lines = text.split(separator: "\n")
            guard let first = lines.first, first.hasPrefix("cpu ") else { return nil }
            let values = first.split(separator: " ").dropFirst().compactMap { Double($0) }
            guard values.count >= 5 else { return nil }
            // user nice system idle iowait irq softirq steal (guest and guest_nice are inside user and nice).
            let cpus = lines.filter { $0.hasPrefix("cpu") && !$0.hasPrefix("cpu ") }.count
            let free = values[3] + values[4] + (countNicedAsFree ? values[1] : 0)
            return (free, values.prefix(8).reduce(0, +), cpus)
        }
        guard let before = sample() else { return nil }
        usleep(UInt32(seconds * 1_000_000))
        guard let after = sample(), after.total > before.total else { return nil }
        return (after.free - before.free) / (after.total - before.total) * Double(after.cpus)
    }

    /// This selection with `reportedKernels` asked from the library again now.
    public func reportingNow() -> BLASSelection {
        var text = [CChar](repeating: 0, count: 256)
        cpushim_blas_kernels(&text, 256)
        var copy = self
        copy.reportedKernels = String(cString: text)
        return copy
    }

    /// `BLIS 'haswell' kernels (AVX2+FMA (cpuid))`.
    public var summary: String { "\(library.displayName) '\(reportedKernels)' kernels (\(reason))" }
}

extension CPUFeatures {
    /// Whether the CPU has the vector level `level` (`AVX-512`, `AVX2+FMA`, `AVX`).
    func satisfies(_ level: String) -> Bool {
        switch level {
        case "AVX-512": return avx512
        case "AVX2+FMA": return avx2
        case "AVX": return avx
        default: return true
        }
    }
}

/// How BLIS divides one GEMM among its threads. BLIS's own factorisation of the thread count is slower on the
/// training step's large shapes than all threads on one dimension of C (`Benchmarks/cpu/blis-split.c` on the
/// 2-core Zen 4, BLIS `haswell`, 2 threads, medians of 7 rounds, five runs; README, "How BLIS splits"): faster
/// in 14 of the 15 shape-run pairs, by 1.04–1.38×.
///
/// A split is applied only where m, n and k are all at least `minimumSplitDimension`: there BLIS takes its
/// packed path, whose ranges end on whole micro-tiles and never divide k, so every split gives the same bits.
/// Smaller shapes go to BLIS's small-matrix ("sup") kernels, whose edge kernels follow the ranges: splitting
/// 601×131×257 A·Bᵀ over C's columns on 2 threads, or over either dimension on 3, changed the bits there
/// (`CPUBackendTests`, `Benchmarks/cpu/blas-bits.c`), so those keep BLIS's own split.
public enum BLASThreadSplit: String, Sendable, CaseIterable {
    /// Over C's rows for C = Aᵀ·B (the weight gradients), over C's columns otherwise, with the kernels it was
    /// measured best for (`measuredKernels`); BLIS's own split with other kernels.
    case measured
    /// The rule of `.measured` (C's rows for Aᵀ·B, C's columns otherwise) with any BLIS kernels: for measuring it
    /// on kernels outside `measuredKernels` (`HRTRAIN_BLAS_SPLIT=by-shape`).
    case byShape = "by-shape"
    /// BLIS's own factorisation of the thread count.
    case library
    /// Every thread on a range of C's rows (BLIS's JC loop: row-major C is its column-major Cᵀ).
    case rows
    /// Every thread on a range of C's columns (BLIS's IC loop).
    case columns

    /// The smallest m, n and k a split is applied to (BLIS 0.9's small-matrix thresholds are 201 and below).
    public static let minimumSplitDimension = 256

    /// `$HRTRAIN_BLAS_SPLIT` (for comparisons), else `.measured`; an unknown value is an error naming it.
    public static func fromEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> BLASThreadSplit {
        guard let value = environment["HRTRAIN_BLAS_SPLIT"], !value.isEmpty else { return .measured }
        guard let split = BLASThreadSplit(rawValue: value.lowercased()) else {
            throw BackendError(
                "HRTRAIN_BLAS_SPLIT=\(value): expected one of "
                    + allCases.map(\.rawValue).joined(separator: ", "))
        }
        return split
    }

    /// The BLIS kernels `.measured` splits for: `haswell` (the Zen 4's). With `skx` (Intel AVX-512, Zen 5) the same
    /// harness, run on the Zen 4, found the rule slower for Aᵀ·B (117 against 126 GFLOP/s) and A·Bᵀ (156 against
    /// 164), so `skx` keeps BLIS's own split until measured on its CPUs.
    public static let measuredKernels: Set<String> = ["haswell"]

    /// The split a backend on `blas` uses: this one, except `.library` wherever another split is unmeasured or
    /// meaningless (OpenBLAS, whose thread count is then not set again between calls; `.measured` with kernels
    /// outside `measuredKernels`). Resolved once, when the backend opens, not per GEMM.
    func resolved(for blas: BLASSelection) -> BLASThreadSplit {
        if blas.library != .blis { return .library }
        if self == .measured { return Self.measuredKernels.contains(blas.reportedKernels) ? .byShape : .library }
        return self
    }

    /// The shim's split (`CPUSHIM_SPLIT_*`) for one call of C (m×n) = op(A)·op(B) with inner dimension k, of a
    /// split already `resolved(for:)` the library.
    func shimValue(transposeA: Bool, m: Int, n: Int, k: Int) -> Int32 {
        if Swift.min(m, n, k) < Self.minimumSplitDimension { return Int32(CPUSHIM_SPLIT_LIBRARY) }
        switch self {
        case .measured, .byShape: return Int32(transposeA ? CPUSHIM_SPLIT_JC : CPUSHIM_SPLIT_IC)
        case .library: return Int32(CPUSHIM_SPLIT_LIBRARY)
        case .rows: return Int32(CPUSHIM_SPLIT_JC)
        case .columns: return Int32(CPUSHIM_SPLIT_IC)
        }
    }
}
