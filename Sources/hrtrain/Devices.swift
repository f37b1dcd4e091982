import ArgumentParser
import Foundation
import HRTrain

extension HRTrainCommand {
    struct Devices: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the backends hrtrain can use: the native CPU backend and the OpenCL devices.",
            discussion: """
                The index in the first column is what --device and $HRTRAIN_DEVICE select (OpenCL). The last line \
                says which backend a command uses without --backend: OpenCL when --device or $HRTRAIN_DEVICE asks \
                for a device or an OpenCL GPU is there, else the CPU backend ($HRTRAIN_BACKEND overrides it). \
                --json prints the OpenCL devices only.
                """)

        @Flag(help: "Print JSON (the OpenCL devices) instead of a table.")
        var json = false

        func run() throws {
            let opencl = Result { try DeviceCatalog.list() }
            if json {
                print(try jsonString(try reportingErrors { try opencl.get() }))
                return
            }
            let cpu = Result { try CPUBackend() }
            var rows: [[String]] = []
            switch cpu {
            case .success(let backend):
                let f = backend.blas.features
                rows.append([
                    "cpu", "hrtrain CPU backend", "\(f.vendor) family \(f.family) model \(f.model) (\(f.level))", "cpu",
                    "\(backend.threads)", "", formatBytes(Int(ProcessInfo.processInfo.physicalMemory)), "", "",
                    "\(backend.blas.library.rawValue) '\(backend.blas.reportedKernels)'",
                ])
            case .failure(let error):
                printError("CPU backend unavailable: \(error)")
            }
            for d in (try? opencl.get()) ?? [] {
                rows.append([
                    "\(d.index)", d.platform, d.name, d.kind.rawValue, "\(d.computeUnits)", "\(d.clockMHz) MHz",
                    formatBytes(d.globalMemoryBytes), formatBytes(d.maxAllocationBytes),
                    d.openCLCVersion.replacingOccurrences(of: "OpenCL C ", with: ""),
                    d.supportsDouble ? "fp64" : "no fp64",
                ])
            }
            print(
                table(
                    [
                        "#", "platform", "device", "type", "CUs", "clock", "global mem", "max alloc", "OpenCL C",
                        "fp64 / BLAS",
                    ], rows, rightAligned: [4, 5, 6, 7]))
            if case .failure(let error) = opencl { printError("OpenCL: \(error)") }
            if let (kind, reason) = try? BackendKind.automatic(deviceRequested: false) {
                print("\ndefault backend: \(kind.rawValue) (\(reason)); --backend opencl|cpu|reference forces one")
            }
            if case .success(let backend) = cpu, let policy = backend.blas.waitPolicy {
                print("CPU backend threads wait: \(policy); HRTRAIN_THREAD_WAIT=spin|passive forces one")
            }
            if case .failure = cpu, case .failure = opencl { throw ExitCode.failure }
        }
    }
}
