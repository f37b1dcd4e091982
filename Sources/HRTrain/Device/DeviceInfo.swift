import CLShim
import Foundation

/// The kind of an OpenCL device, from `CL_DEVICE_TYPE`.
public enum DeviceKind: String, Codable, Sendable {
    case gpu, cpu, accelerator, other
}

/// What `hrtrain devices` shows about one OpenCL device.
public struct DeviceInfo: Codable, Sendable, Equatable {
    /// Position in the flattened (platform, device) list; what `--device N` selects.
    public var index: Int
    public var platform: String
    public var platformVersion: String
    public var name: String
    public var vendor: String
    public var kind: DeviceKind
    public var computeUnits: Int
    /// Maximum clock in MHz.
    public var clockMHz: Int
    public var globalMemoryBytes: Int
    public var maxAllocationBytes: Int
    public var localMemoryBytes: Int
    public var maxWorkGroupSize: Int
    public var openCLCVersion: String
    public var deviceVersion: String
    public var driverVersion: String
    /// Whether the device supports `double` (cl_khr_fp64).
    public var supportsDouble: Bool
}

/// One enumerated device: its description and the raw handle.
struct DeviceHandle {
    var info: DeviceInfo
    var id: cl_device_id
}

/// Platform and device discovery.
public enum DeviceCatalog {
    /// All devices of all platforms, in platform order then device order.
    public static func list() throws -> [DeviceInfo] { try handles().map(\.info) }

    static func handles() throws -> [DeviceHandle] {
        var platformCount: cl_uint = 0
        let status = clGetPlatformIDs(0, nil, &platformCount)
        // The ICD loader answers CL_PLATFORM_NOT_FOUND_KHR (-1001) when no platform is installed.
        if status == -1001 || (status == CL_SUCCESS && platformCount == 0) {
            throw DeviceError(
                "no OpenCL platform found: install an OpenCL driver (on Debian: apt-get install pocl-opencl-icd for "
                    + "the CPU, or your GPU vendor's ICD)"
            )
        }
        try clCheck(status, "clGetPlatformIDs")
        var platforms = [cl_platform_id?](repeating: nil, count: Int(platformCount))
        try clCheck(clGetPlatformIDs(platformCount, &platforms, nil), "clGetPlatformIDs")

        var result: [DeviceHandle] = []
        for platform in platforms.compactMap({ $0 }) {
            let platformName = try platformString(platform, cl_platform_info(CL_PLATFORM_NAME))
            let platformVersion = try platformString(platform, cl_platform_info(CL_PLATFORM_VERSION))
            var deviceCount: cl_uint = 0
            let ds = clGetDeviceIDs(platform, cl_device_type(CL_DEVICE_TYPE_ALL), 0, nil, &deviceCount)
            if ds == CL_DEVICE_NOT_FOUND || deviceCount == 0 { continue }
            try clCheck(ds, "clGetDeviceIDs", detail: "platform \(platformName)")
            var devices = [cl_device_id?](repeating: nil, count: Int(deviceCount))
            try clCheck(
                clGetDeviceIDs(platform, cl_device_type(CL_DEVICE_TYPE_ALL), deviceCount, &devices, nil),
                "clGetDeviceIDs")
            for device in devices.compactMap({ $0 }) {
                let type: cl_device_type = try deviceValue(device, CL_DEVICE_TYPE)
                let kind: DeviceKind =
                    type & cl_device_type(CL_DEVICE_TYPE_GPU) != 0
                    ? .gpu
                    : type & cl_device_type(CL_DEVICE_TYPE_CPU) != 0
                        ? .cpu
                        : type & cl_device_type(CL_DEVICE_TYPE_ACCELERATOR) != 0 ? .accelerator : .other
                let extensions = try deviceString(device, CL_DEVICE_EXTENSIONS)
                let fp64Config: cl_device_fp_config = (try? deviceValue(device, CL_DEVICE_DOUBLE_FP_CONFIG)) ?? 0
                let info = DeviceInfo(
                    index: result.count,
                    platform: platformName,
                    platformVersion: platformVersion,
                    name: try deviceString(device, CL_DEVICE_NAME),
                    vendor: try deviceString(device, CL_DEVICE_VENDOR),
                    kind: kind,
                    computeUnits: Int(try deviceValue(device, CL_DEVICE_MAX_COMPUTE_UNITS) as cl_uint),
                    clockMHz: Int(try deviceValue(device, CL_DEVICE_MAX_CLOCK_FREQUENCY) as cl_uint),
                    globalMemoryBytes: Int(try deviceValue(device, CL_DEVICE_GLOBAL_MEM_SIZE) as cl_ulong),
                    maxAllocationBytes: Int(try deviceValue(device, CL_DEVICE_MAX_MEM_ALLOC_SIZE) as cl_ulong),
                    localMemoryBytes: Int(try deviceValue(device, CL_DEVICE_LOCAL_MEM_SIZE) as cl_ulong),
                    maxWorkGroupSize: Int(try deviceValue(device, CL_DEVICE_MAX_WORK_GROUP_SIZE) as Int),
                    openCLCVersion: try deviceString(device, CL_DEVICE_OPENCL_C_VERSION),
                    deviceVersion: try deviceString(device, CL_DEVICE_VERSION),
                    driverVersion: try deviceString(device, CL_DRIVER_VERSION),
                    supportsDouble: extensions.contains("cl_khr_fp64") || fp64Config != 0
                )
                result.append(DeviceHandle(info: info, id: device))
            }
        }
        if result.isEmpty {
            throw DeviceError("OpenCL platforms were found, but none of them has a device")
        }
        return result
    }

    /// The device a run uses: `requested` (from `--device`), else `$HRTRAIN_DEVICE`, else the first GPU,
    /// else the first device of any kind.
    static func select(_ requested: Int?, environment: [String: String] = ProcessInfo.processInfo.environment)
        throws -> DeviceHandle
    {
        let all = try handles()
        var index = requested
        if index == nil, let text = environment["HRTRAIN_DEVICE"], !text.isEmpty {
            guard let value = Int(text) else {
                throw DeviceError("HRTRAIN_DEVICE=\(text) is not a device index (run `hrtrain devices` to list them)")
            }
            index = value
        }
        if let index {
            guard all.indices.contains(index) else {
                let list = all.map { "  \($0.info.index): \($0.info.name) (\($0.info.platform))" }.joined(
                    separator: "\n")
                throw DeviceError(
                    "device index \(index) does not exist; \(all.count) device\(all.count == 1 ? "" : "s") "
                        + "available:\n\(list)"
                )
            }
            return all[index]
        }
        return all.first { $0.info.kind == .gpu } ?? all[0]
    }

    private static func platformString(_ platform: cl_platform_id, _ param: cl_platform_info) throws -> String {
        var size = 0
        try clCheck(clGetPlatformInfo(platform, param, 0, nil, &size), "clGetPlatformInfo")
        var bytes = [CChar](repeating: 0, count: size + 1)
        try clCheck(clGetPlatformInfo(platform, param, size, &bytes, nil), "clGetPlatformInfo")
        return String(cString: bytes).trimmingCharacters(in: .whitespaces)
    }

    static func deviceString(_ device: cl_device_id, _ param: Int32) throws -> String {
        var size = 0
        try clCheck(clGetDeviceInfo(device, cl_device_info(param), 0, nil, &size), "clGetDeviceInfo")
        var bytes = [CChar](repeating: 0, count: size + 1)
        try clCheck(clGetDeviceInfo(device, cl_device_info(param), size, &bytes, nil), "clGetDeviceInfo")
        return String(cString: bytes).trimmingCharacters(in: .whitespaces)
    }

    static func deviceValue<T: FixedWidthInteger>(_ device: cl_device_id, _ param: Int32) throws -> T {
        var value: T = 0
        try clCheck(
            clGetDeviceInfo(device, cl_device_info(param), MemoryLayout<T>.size, &value, nil), "clGetDeviceInfo")
        return value
    }
}
