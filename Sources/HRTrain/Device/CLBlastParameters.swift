import CLShim
import Foundation

/// CLBlast's GEMM kernel parameters for one device, as `hrtrain tune` finds and stores them.
///
/// CLBlast runs a GEMM either with its "direct" kernel (`XgemmDirect`, for small problems) or with the
/// "indirect" one (`Xgemm`, after padding/transposing the operands); it picks direct when
/// `m·n·k < XGEMM_MIN_INDIRECT_SIZE³`. All three are set together through `CLBlastOverrideParameters`,
/// which applies for the rest of the process (CLBlast recompiles its kernels on the next call).
public struct GEMMParameters: Codable, Sendable, Equatable {
    /// `Xgemm` parameters (GEMMK, KREG, KWG, KWI, MDIMA, MDIMC, MWG, NDIMB, NDIMC, NWG, SA, SB, STRM, STRN, VWM, VWN).
    public var indirect: [String: Int]
    /// `XgemmDirect` parameters (KWID, MDIMAD, MDIMCD, NDIMBD, NDIMCD, PADA, PADB, VWMD, VWND, WGD).
    public var direct: [String: Int]
    /// `GemmRoutine`'s `XGEMM_MIN_INDIRECT_SIZE`.
    public var minIndirectSize: Int
    /// The most helper kernels (pad, copy, transpose: see `GEMMKernelPlan`) an indirect GEMM may cost: a call
    /// that CLBlast's size rule sends to `Xgemm` but whose operands would need more runs `XgemmDirect` instead
    /// (one launch; `OpenCLBackend.matmul` routes it). nil: CLBlast's size rule alone (what `hrtrain tune` times).
    public var maximumIndirectHelpers: Int?

    /// Creates parameters (`maximumIndirectHelpers` nil: CLBlast's size rule alone).
    public init(
        indirect: [String: Int], direct: [String: Int], minIndirectSize: Int, maximumIndirectHelpers: Int? = nil
    ) {
        self.indirect = indirect
        self.direct = direct
        self.minIndirectSize = minIndirectSize
        self.maximumIndirectHelpers = maximumIndirectHelpers
    }

    /// A one-line description (`MWG=128 NWG=128 …`).
    public var summary: String {
        "Xgemm " + indirect.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            + "; XgemmDirect "
            + direct.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            + "; XGEMM_MIN_INDIRECT_SIZE=\(minIndirectSize)"
            + (maximumIndirectHelpers.map { "; indirect only with at most \($0) helper kernel(s)" } ?? "")
    }
}

/// What `hrtrain tune` stores per device.
public struct StoredGEMMTuning: Codable, Sendable {
    public var device: String
    public var driver: String
    public var parameters: GEMMParameters
    /// Seconds of the training step's GEMMs with CLBlast's defaults and with `parameters`.
    public var defaultSeconds: Double
    public var tunedSeconds: Double
    public var date: String
}

/// Storing and applying CLBlast GEMM parameters (found by `GEMMTuning`, applied when a context opens).
public enum CLBlastParameters {
    /// The file holding the tuned parameters of `device`: `<cache>/clblast/<hash of device+driver>.json`.
    public static func storeURL(for device: DeviceInfo, cache: URL = ProgramCache.defaultDirectory()) -> URL {
        let key = "\(device.platform)|\(device.name)|\(device.driverVersion)"
        return cache.appendingPathComponent("clblast").appendingPathComponent(
            String(format: "%016llx", fnv1a64(key)) + ".json")
    }

    /// Applies the stored parameters for the context's device, if `hrtrain tune` stored some. Returns them.
    @discardableResult
    public static func applyStored(for context: ComputeContext, cache: URL = ProgramCache.defaultDirectory()) throws
        -> StoredGEMMTuning?
    {
        let url = storeURL(for: context.device, cache: cache)
        guard let data = try? Data(contentsOf: url) else { return nil }
        guard let stored = try? JSONDecoder().decode(StoredGEMMTuning.self, from: data),
            stored.device == context.device.name,
            stored.driver == context.device.driverVersion
        else {
            throw DeviceError(
                "the tuned GEMM parameters in \(url.path) cannot be read; delete the file or run `hrtrain tune` again")
        }
        try apply(stored.parameters, to: context)
        return stored
    }

    /// hrtrain's own defaults for devices it has measured, applied when no `hrtrain tune` result is stored (a
    /// stored one overrides them). PoCL's CPU devices: the parameters `hrtrain tune --budget 600` found for the
    /// training GEMMs on a 2-core Skylake-AVX512 Xeon under PoCL 3.1 (`Benchmarks/raw/tune.txt`: the step's GEMMs
    /// 125.8 → 67.6 ms against CLBlast's defaults); CLBlast's own defaults for a CPU are tuned for none.
    public static func builtIn(for device: DeviceInfo) -> (parameters: GEMMParameters, source: String)? {
        guard device.kind == .cpu, device.platform.contains("Portable Computing Language") else { return nil }
        return (pocl, "hrtrain's parameters for PoCL CPU devices")
    }

    /// The built-in parameters for PoCL CPU devices.
    static let pocl = GEMMParameters(
        indirect: [
            "GEMMK": 0, "KREG": 1, "KWG": 16, "KWI": 2, "MDIMA": 8, "MDIMC": 8, "MWG": 128, "NDIMB": 16, "NDIMC": 16,
            "NWG": 128, "SA": 0, "SB": 0, "STRM": 0, "STRN": 0, "VWM": 8, "VWN": 2,
        ],
        direct: [
            "KWID": 2, "MDIMAD": 8, "MDIMCD": 8, "NDIMBD": 8, "NDIMCD": 8, "PADA": 1, "PADB": 1, "VWMD": 2, "VWND": 2,
            "WGD": 64,
        ], minIndirectSize: 339, maximumIndirectHelpers: 1)

    /// Incremented by every override: CLBlast's temporary-buffer sizes depend on the parameters (their padding),
    /// so a backend that caches them must ask again when this changes.
    nonisolated(unsafe) static var version = 0

    /// Overrides CLBlast's single-precision GEMM parameters on the context's device.
    public static func apply(_ parameters: GEMMParameters, to context: ComputeContext) throws {
        try override("Xgemm", parameters.indirect, device: context.deviceID)
        try override("XgemmDirect", parameters.direct, device: context.deviceID)
        try override("GemmRoutine", ["XGEMM_MIN_INDIRECT_SIZE": parameters.minIndirectSize], device: context.deviceID)
    }

    /// The `XGEMM_MIN_INDIRECT_SIZE` last given to CLBlast per device (`OpenCLBackend.matmul` changes it
    /// per call).
    nonisolated(unsafe) static var minIndirectSizes: [cl_device_id: Int] = [:]

    /// `XGEMM_MIN_INDIRECT_SIZE` that sends every GEMM direct (`m·n·k < 2⁶⁰` always holds).
    static let neverIndirect = 1 << 20

    /// Sets `XGEMM_MIN_INDIRECT_SIZE` on `device` unless it already has that value. Leaves `version` as it is:
    /// the temporary-buffer sizes of the indirect calls do not depend on it.
    static func setMinIndirectSize(_ size: Int, device: cl_device_id) throws {
        if minIndirectSizes[device] == size { return }
        try override("GemmRoutine", ["XGEMM_MIN_INDIRECT_SIZE": size], device: device, changesSizes: false)
    }

    static func override(_ kernel: String, _ values: [String: Int], device: cl_device_id, changesSizes: Bool = true)
        throws
    {
        let sorted = values.sorted { $0.key < $1.key }
        var names = sorted.map { strdup($0.key) }
        defer { for name in names { free(name) } }
        var numbers = sorted.map { $0.value }
        let status = names.withUnsafeMutableBufferPointer { namePointers in
            namePointers.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: sorted.count) { n in
                CLBlastOverrideParameters(device, kernel, CLBlastPrecisionSingle, sorted.count, n, &numbers)
            }
        }
        if changesSizes { version += 1 }
        if kernel == "GemmRoutine" { minIndirectSizes[device] = status == CLBlastSuccess ? values.first?.value : nil }
        try clblastCheck(status, "CLBlastOverrideParameters", detail: "kernel \(kernel): \(values)")
    }
}

/// The kernels CLBlast 1.5.3 launches for one row-major single-precision GEMM `c = op(a)·op(b)` with β = 0
/// (`Xgemm::DoGemm`): one `XgemmDirect` below the size rule (`m·n·k < XGEMM_MIN_INDIRECT_SIZE³`), otherwise
/// `Xgemm` plus one pad/copy/transpose kernel per matrix not already in the layout the kernel wants
/// (`Xgemm::NoTempBuffer`: sizes multiples of the tiles MWG/NWG/KWG·KREG, leading dimension = its extent, offset
/// 0, no transposition; with GEMMK = 0 a row-major C is always transposed back, with GEMMK = 1 never).
public struct GEMMKernelPlan: Equatable, Sendable {
    /// Whether the size rule sends the call to `Xgemm`.
    public var sizeRuleIndirect: Bool
    /// The helper kernels `Xgemm` would need around it (A, B, C; 0 to 3).
    public var indirectHelpers: Int

    /// The plan of `c[m, n] = op(a)·op(b)` (row-major; `offsets` and `leading` of a, b, c in elements).
    public init(
        m: Int, n: Int, k: Int, transposeA: Bool, transposeB: Bool, offsets: [Int], leading: [Int],
        parameters: GEMMParameters
    ) {
        let mnk = Double(m) * Double(n) * Double(k)
        let threshold = Double(parameters.minIndirectSize)
        sizeRuleIndirect = !(mnk < threshold * threshold * threshold)
        let p = parameters.indirect
        let gemmk = p["GEMMK"] ?? 0
        func ceiled(_ x: Int, _ multiple: Int) -> Int { multiple > 0 ? (x + multiple - 1) / multiple * multiple : x }
        let (mc, nc, kc) = (
            ceiled(m, p["MWG"] ?? 1), ceiled(n, p["NWG"] ?? 1), ceiled(k, (p["KWG"] ?? 1) * (p["KREG"] ?? 1))
        )
        // Row-major: A and B are "rotated" when not transposed, C always (Xgemm::ProcessArguments).
        let (aWant, bWant, cWant) = (gemmk == 1, true, gemmk == 1)
        let (aRotated, bRotated, cRotated) = (!transposeA, !transposeB, true)
        let a = (one: aRotated ? k : m, two: aRotated ? m : k, oneI: aWant ? kc : mc, twoI: aWant ? mc : kc)
        let b = (one: bRotated ? n : k, two: bRotated ? k : n, oneI: nc, twoI: kc)
        let c = (one: cRotated ? n : m, two: cRotated ? m : n, oneI: cWant ? nc : mc, twoI: cWant ? mc : nc)
        func needsHelper(_ x: (one: Int, two: Int, oneI: Int, twoI: Int), _ i: Int, transposed: Bool) -> Bool {
            !(x.one == x.oneI && x.two == x.twoI && leading[i] == x.one && offsets[i] == 0 && !transposed)
        }
        indirectHelpers =
            [
                needsHelper(a, 0, transposed: aRotated != aWant), needsHelper(b, 1, transposed: bRotated != bWant),
                needsHelper(c, 2, transposed: cRotated != cWant),
            ].filter { $0 }.count
    }

    /// Whether the call runs `Xgemm` under `parameters` as `OpenCLBackend.matmul` routes it (the size rule, and
    /// no more helpers than `maximumIndirectHelpers`).
    public func routedIndirect(_ parameters: GEMMParameters) -> Bool {
        sizeRuleIndirect && indirectHelpers <= (parameters.maximumIndirectHelpers ?? Int.max)
    }

    /// The kernels the call launches when it runs indirect (`indirect`) or direct.
    public func kernels(indirect: Bool) -> Int { indirect ? 1 + indirectHelpers : 1 }
}
