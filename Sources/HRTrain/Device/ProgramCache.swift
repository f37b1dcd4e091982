import CLShim
import Foundation

/// How the kernel program of a run was obtained.
public struct ProgramBuildReport: Codable, Sendable, Equatable {
    /// `compiled` from source, or `cached` (a device binary loaded from the on-disk cache).
    public var origin: String
    /// Wall time of the build (or load), in seconds.
    public var seconds: Double
    /// The cache file used, if any.
    public var cacheFile: String?
    /// One line saying why a cached binary was not used and the program was rebuilt (corrupted,
    /// truncated or refused by the driver); nil otherwise.
    public var warning: String? = nil
}

/// The on-disk cache of compiled kernel programs, so that a second run skips compilation.
///
/// Entries are keyed by a hash of the source, the build options, the platform, the device and the driver
/// version; each file also stores the full key text, which is compared on load, so a hash collision or a
/// driver update can only cause a rebuild, never a wrong binary. Each file also stores the binary's length
/// and a 64-bit checksum: a truncated or corrupted file, or one the driver refuses, is never handed to the
/// driver as it is (or is dropped after the driver refuses it) and the program is rebuilt and stored again,
/// with a one-line warning in the build report. Location: `$HRTRAIN_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/hrtrain`, else `~/.cache/hrtrain`.
public struct ProgramCache: Sendable {
    /// The cache folder; nil disables the cache.
    public var directory: URL?

    /// Creates a cache in `directory` (nil: no caching).
    public init(directory: URL?) { self.directory = directory }

    /// The cache folder hrtrain uses by default (also where tuned GEMM parameters are stored).
    public static func defaultDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        if let dir = environment["HRTRAIN_CACHE_DIR"], !dir.isEmpty { return URL(fileURLWithPath: dir) }
        if let xdg = environment["XDG_CACHE_HOME"], !xdg.isEmpty {
            return URL(fileURLWithPath: xdg).appendingPathComponent("hrtrain")
        }
        let home = environment["HOME"] ?? NSHomeDirectory()
        return URL(fileURLWithPath: home).appendingPathComponent(".cache/hrtrain")
    }

    /// The default cache.
    public static var standard: ProgramCache { ProgramCache(directory: defaultDirectory()) }

    private static let magic = Array("HRTPROG2".utf8)

    func program(sources: String, options: String, context: cl_context, device: DeviceHandle) throws -> (
        cl_program, ProgramBuildReport
    ) {
        let start = DispatchTime.now()
        let info = device.info
        let key = [
            "source-bytes=\(sources.utf8.count)", "options=\(options)",
            "platform=\(info.platform) \(info.platformVersion)",
            "device=\(info.name) \(info.deviceVersion)", "driver=\(info.driverVersion)", "source=\(sources)",
        ].joined(separator: "\n")
        let file = directory?.appendingPathComponent("programs")
            .appendingPathComponent(String(format: "%016llx", fnv1a64(key)) + ".bin")

        var warning: String?
        if let file {
            switch Self.load(file, key: key) {
            case .missing: break
            case .invalid(let reason):
                warning = "the cached kernel program \(file.path) is \(reason); rebuilding it"
            case .valid(let binary):
                do {
                    let program = try Self.buildFromBinary(binary, options: options, context: context, device: device)
                    let report = ProgramBuildReport(
                        origin: "cached", seconds: elapsed(since: start), cacheFile: file.path)
                    return (program, report)
                } catch {
                    warning = "the OpenCL driver refused the cached kernel program \(file.path); rebuilding it"
                }
            }
        }
        let program = try Self.buildFromSource(sources, options: options, context: context, device: device)
        if let file, let binary = try? Self.binary(of: program) {
            Self.store(binary, key: key, to: file)  // best effort: a read-only cache only costs time
        }
        let report = ProgramBuildReport(
            origin: "compiled", seconds: elapsed(since: start), cacheFile: file?.path, warning: warning)
        return (program, report)
    }

    private static func buildFromSource(_ source: String, options: String, context: cl_context, device: DeviceHandle)
        throws -> cl_program
    {
        var status: cl_int = 0
        let program: cl_program? = source.withCString { ptr in
            var p: UnsafePointer<CChar>? = ptr
            var length = strlen(ptr)
            return clCreateProgramWithSource(context, 1, &p, &length, &status)
        }
        try clCheck(status, "clCreateProgramWithSource")
        try build(program!, options: options, device: device)
        return program!
    }

    private static func buildFromBinary(_ binary: [UInt8], options: String, context: cl_context, device: DeviceHandle)
        throws -> cl_program
    {
        var status: cl_int = 0
        var binaryStatus: cl_int = 0
        var id: cl_device_id? = device.id
        var length = binary.count
        let program: cl_program? = binary.withUnsafeBufferPointer { buf in
            var ptr: UnsafePointer<UInt8>? = buf.baseAddress
            return clCreateProgramWithBinary(context, 1, &id, &length, &ptr, &binaryStatus, &status)
        }
        try clCheck(status, "clCreateProgramWithBinary")
        try clCheck(binaryStatus, "clCreateProgramWithBinary", detail: "binary status")
        do { try build(program!, options: options, device: device) } catch {
            clReleaseProgram(program)
            throw error
        }
        return program!
    }

    private static func build(_ program: cl_program, options: String, device: DeviceHandle) throws {
        var id: cl_device_id? = device.id
        let status = clBuildProgram(program, 1, &id, options, nil, nil)
        if status != CL_SUCCESS {
            let log = (try? buildLog(program, device: device.id)) ?? "(no build log)"
            clReleaseProgram(program)
            try clCheck(status, "clBuildProgram", detail: "device \(device.info.name); build log:\n\(log)")
        }
    }

    /// The device's build log for `program`.
    static func buildLog(_ program: cl_program, device: cl_device_id) throws -> String {
        var size = 0
        try clCheck(
            clGetProgramBuildInfo(program, device, cl_program_build_info(CL_PROGRAM_BUILD_LOG), 0, nil, &size),
            "clGetProgramBuildInfo")
        var bytes = [CChar](repeating: 0, count: size + 1)
        try clCheck(
            clGetProgramBuildInfo(program, device, cl_program_build_info(CL_PROGRAM_BUILD_LOG), size, &bytes, nil),
            "clGetProgramBuildInfo")
        return String(cString: bytes)
    }

    private static func binary(of program: cl_program) throws -> [UInt8] {
        var size = 0
        try clCheck(
            clGetProgramInfo(program, cl_program_info(CL_PROGRAM_BINARY_SIZES), MemoryLayout<Int>.size, &size, nil),
            "clGetProgramInfo(CL_PROGRAM_BINARY_SIZES)")
        guard size > 0 else { throw DeviceError("the OpenCL driver returned an empty program binary") }
        var bytes = [UInt8](repeating: 0, count: size)
        try bytes.withUnsafeMutableBufferPointer { buf in
            var ptr: UnsafeMutablePointer<UInt8>? = buf.baseAddress
            try clCheck(
                clGetProgramInfo(
                    program, cl_program_info(CL_PROGRAM_BINARIES), MemoryLayout<UnsafeMutablePointer<UInt8>?>.size,
                    &ptr, nil),
                "clGetProgramInfo(CL_PROGRAM_BINARIES)")
        }
        return bytes
    }

    /// File layout: magic, key length (UInt64 LE), key bytes, binary length (UInt64 LE), FNV-1a 64 checksum
    /// of the binary (UInt64 LE), binary.
    private static func store(_ binary: [UInt8], key: String, to file: URL) {
        var data = Data(magic)
        let keyBytes = Array(key.utf8)
        withUnsafeBytes(of: UInt64(keyBytes.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: keyBytes)
        withUnsafeBytes(of: UInt64(binary.count).littleEndian) { data.append(contentsOf: $0) }
        withUnsafeBytes(of: checksum(binary).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: binary)
        try? FileManager.default.createDirectory(
            at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try? data.write(to: file, options: .atomic)
    }

    /// What a cache file holds.
    enum Entry: Equatable {
        /// No file (or one for another key: a hash collision): build and store.
        case missing
        /// A damaged file, with the reason.
        case invalid(String)
        /// A binary whose length and checksum match.
        case valid([UInt8])
    }

    /// Reads and checks a cache file.
    static func load(_ file: URL, key: String) -> Entry {
        guard FileManager.default.fileExists(atPath: file.path) else { return .missing }
        guard let bytes = try? InputFile.readAll(file) else { return .invalid("unreadable") }
        guard bytes.count >= magic.count + 8, Array(bytes[0..<magic.count]) == magic else {
            return .invalid("not a cache file of this hrtrain version")
        }
        func word(at offset: Int) -> UInt64? {
            guard offset >= 0, offset + 8 <= bytes.count else { return nil }
            return (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
        }
        let keyStart = magic.count + 8
        guard let keyLength = word(at: magic.count), keyLength <= UInt64(bytes.count - keyStart) else {
            return .invalid("truncated")
        }
        let keyEnd = keyStart + Int(keyLength)
        guard Array(bytes[keyStart..<keyEnd]) == Array(key.utf8) else { return .missing }
        guard let length = word(at: keyEnd), let stored = word(at: keyEnd + 8) else { return .invalid("truncated") }
        let binaryStart = keyEnd + 16
        guard length == UInt64(bytes.count - binaryStart) else {
            return .invalid(
                length > UInt64(bytes.count - binaryStart)
                    ? "truncated (\(bytes.count - binaryStart) of \(length) bytes)" : "longer than recorded")
        }
        let binary = Array(bytes[binaryStart...])
        guard !binary.isEmpty else { return .invalid("empty") }
        guard checksum(binary) == stored else { return .invalid("corrupted (checksum mismatch)") }
        return .valid(binary)
    }

    /// The 64-bit FNV-1a checksum of `bytes`.
    static func checksum(_ bytes: [UInt8]) -> UInt64 {
        bytes.withUnsafeBufferPointer { buffer in
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in buffer {
                hash ^= UInt64(byte)
                hash = hash &* 0x0000_0100_0000_01b3
            }
            return hash
        }
    }
}

/// 64-bit FNV-1a hash (a cache file name, not a security measure).
func fnv1a64(_ text: String) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 {
        hash ^= UInt64(byte)
        hash = hash &* 0x0000_0100_0000_01b3
    }
    return hash
}

/// Seconds since `start`.
public func elapsed(since start: DispatchTime) -> Double {
    Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
}
