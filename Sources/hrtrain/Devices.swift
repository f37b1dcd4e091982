import ArgumentParser
import Foundation
import HRTrain

extension HRTrainCommand {
    struct Devices: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the OpenCL devices hrtrain can use.",
            discussion: "The index in the first column is what --device and $HRTRAIN_DEVICE select.")

        @Flag(help: "Print JSON instead of a table.")
        var json = false

        func run() throws {
            let devices = try reportingErrors { try DeviceCatalog.list() }
            if json {
                print(try jsonString(devices))
                return
            }
            let rows = devices.map { d in
                [
                    "\(d.index)", d.platform, d.name, d.kind.rawValue, "\(d.computeUnits)", "\(d.clockMHz) MHz",
                    formatBytes(d.globalMemoryBytes), formatBytes(d.maxAllocationBytes),
                    d.openCLCVersion.replacingOccurrences(of: "OpenCL C ", with: ""),
                    d.supportsDouble ? "yes" : "no",
                ]
            }
            print(
                table(
                    ["#", "platform", "device", "type", "CUs", "clock", "global mem", "max alloc", "OpenCL C", "fp64"],
                    rows, rightAligned: [0, 4, 5, 6, 7]))
        }
    }
}
