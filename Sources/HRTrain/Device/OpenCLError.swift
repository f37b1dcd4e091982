import CLShim
import Foundation

/// A failed OpenCL or CLBlast call: the call, its symbolic status code and where it was made.
public struct OpenCLError: Error, CustomStringConvertible, Equatable {
    /// The API function that failed, e.g. `clCreateBuffer`.
    public var call: String
    /// The raw status code (OpenCL and CLBlast share one number space).
    public var code: Int32
    /// Extra context: sizes, device name, a build log.
    public var detail: String
    /// Source location of the call site in hrtrain.
    public var location: String

    /// The symbolic name of `code`, e.g. `CL_OUT_OF_RESOURCES`.
    public var codeName: String { String(cString: clshim_status_name(code)) }

    public var description: String {
        var text = "\(call) failed with \(codeName) (\(code))"
        if !detail.isEmpty { text += ": \(detail)" }
        return text + " [\(location)]"
    }
}

/// An error that is not a failed API call: no platform, a bad device index, an impossible request.
public struct DeviceError: Error, CustomStringConvertible, Equatable {
    /// What went wrong, in words a user can act on.
    public var message: String
    /// Creates the error.
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Checks an OpenCL status code; throws `OpenCLError` naming `call` unless it is `CL_SUCCESS`.
@inline(__always)
func clCheck(
    _ status: cl_int, _ call: @autoclosure () -> String, detail: @autoclosure () -> String = "",
    file: StaticString = #fileID, line: UInt = #line
) throws {
    if status != CL_SUCCESS {
        throw OpenCLError(call: call(), code: status, detail: detail(), location: "\(file):\(line)")
    }
}

/// Checks a CLBlast status code the same way.
@inline(__always)
func clblastCheck(
    _ status: CLBlastStatusCode, _ call: @autoclosure () -> String, detail: @autoclosure () -> String = "",
    file: StaticString = #fileID, line: UInt = #line
) throws {
    if status != CLBlastSuccess {
        throw OpenCLError(call: call(), code: status.rawValue, detail: detail(), location: "\(file):\(line)")
    }
}

/// Human-readable byte count ("1.5 GiB").
public func formatBytes(_ bytes: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024, unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f", value) + " " + units[unit]
}
