import Foundation

/// Which implementation of `Backend` a run uses.
public enum BackendKind: String, Codable, Sendable, CaseIterable {
    /// Float32 on an OpenCL device (`OpenCLBackend`).
    case opencl
    /// Float32 on the host's cores: BLAS SGEMMs and vectorised Swift (`CPUBackend`).
    case cpu
    /// The Double reference (`ReferenceBackend`): slow, the ground truth.
    case reference

    /// The default when none is asked for: OpenCL when a device is requested (`--device`, `$HRTRAIN_DEVICE`)
    /// or an OpenCL GPU exists, else the CPU backend (on a CPU, the native backend is several times faster than
    /// OpenCL through PoCL). `$HRTRAIN_BACKEND` overrides it. Returns the kind and why.
    public static func automatic(
        deviceRequested: Bool, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> (kind: BackendKind, reason: String) {
        if let text = environment["HRTRAIN_BACKEND"], !text.isEmpty {
            guard let kind = BackendKind(rawValue: text) else {
                throw BackendError("HRTRAIN_BACKEND must be opencl, cpu or reference, got '\(text)'")
            }
            return (kind, "HRTRAIN_BACKEND=\(text)")
        }
        if deviceRequested { return (.opencl, "an OpenCL device was requested") }
        if let text = environment["HRTRAIN_DEVICE"], !text.isEmpty {
            return (.opencl, "HRTRAIN_DEVICE=\(text) requests an OpenCL device")
        }
        let devices = (try? DeviceCatalog.list()) ?? []
        if let gpu = devices.first(where: { $0.kind == .gpu }) {
            return (.opencl, "OpenCL GPU found: \(gpu.name)")
        }
        return (
            .cpu,
            devices.isEmpty ? "no OpenCL device" : "no OpenCL GPU (only \(devices.map(\.name).joined(separator: ", ")))"
        )
    }
}
