import ArgumentParser
import Foundation
import HRTrain

extension MPIMode: ExpressibleByArgument {}

/// `--device N` or `--device N,M,…`: one device index, or one per node-local rank (`--device 0,1` under
/// `mpirun -np 4` on one node gives ranks 0 and 2 device 0, ranks 1 and 3 device 1).
struct DeviceList: ExpressibleByArgument, Equatable {
    var indices: [Int]

    init?(argument: String) {
        let parts = argument.split(separator: ",", omittingEmptySubsequences: false)
        let values = parts.map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ $0 != nil && $0! >= 0 }) else { return nil }
        indices = values.map { $0! }
    }

    /// The entry for node-local rank `localRank`.
    func index(forLocalRank localRank: Int) -> Int { indices[localRank % indices.count] }
}

/// `--mpi`: data-parallel training over MPI ranks.
struct DistributedOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "MPI: auto (when started by mpirun, mpiexec or srun), on (also a single process), off. libmpi is "
                + "loaded at run time ($HRTRAIN_MPI_LIBRARY names it; Open MPI's ABI).",
            valueName: "auto|on|off"))
    var mpi: MPIMode = .auto

    /// Starts MPI when wanted; a clear error otherwise.
    func start() throws -> Communicator { try Communicator.start(mode: mpi) }
}

/// `reportingErrors`; with several ranks an error on this one ends the whole job instead (MPI_Abort), with
/// `error: rank R/N: <message>`.
func reportingErrors<T>(on communicator: Communicator, flags: [DataField: String] = [:], _ body: () throws -> T)
    throws -> T
{
    guard communicator.size > 1 else { return try reportingErrors(flags: flags, body) }
    do { return try body() } catch let error as ExitCode { throw error } catch {
        communicator.abort(errorMessage(error, flags: flags))
    }
}

extension DeviceOptions {
    /// Opens the device of this rank: `--device` (its entry for the node-local rank when it is a list), else
    /// `$HRTRAIN_DEVICE`, else, in a job of several ranks, the node's GPUs in turn by node-local rank (the
    /// first device, e.g. PoCL's CPU device, where there is no GPU); a single process keeps the usual choice.
    func open(for communicator: Communicator) throws -> ComputeContext {
        let environment = ProcessInfo.processInfo.environment
        if let device { return try ComputeContext(deviceIndex: device.index(forLocalRank: communicator.localRank)) }
        if communicator.size == 1 || environment["HRTRAIN_DEVICE"].map({ !$0.isEmpty }) == true {
            return try ComputeContext()
        }
        let devices = try DeviceCatalog.list()
        let index = DeviceAssignment.deviceIndex(
            localRank: communicator.localRank, explicit: nil,
            gpuIndices: devices.filter { $0.kind == .gpu }.map(\.index), fallback: devices.first?.index ?? 0)
        return try ComputeContext(deviceIndex: index)
    }
}

extension HRTrainCommand {
    struct MPICheck: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "mpi-check",
            abstract: "Check an MPI launch: ranks, node-local ranks, devices, and the all-reduce's result and time.",
            discussion: """
                Run it as the training would run (`mpirun -np 4 hrtrain mpi-check`, `srun hrtrain mpi-check`). \
                Every rank all-reduces a vector whose sum it knows; rank 0 prints one line per rank and the median \
                time of an all-reduce of --count floats (default: the gradients of the thesis network, 143,618 \
                floats = 0.57 MB). Exit status 1 when a sum is wrong.
                """)

        @OptionGroup var distributedOptions: DistributedOptions
        @OptionGroup var deviceOptions: DeviceOptions
        @Option(help: "Floats per timed all-reduce.") var count = 143_618
        @Option(help: "Timed all-reduces.") var repetitions = 50
        @Flag(help: "Do not open an OpenCL device (only MPI is checked).") var noDevice = false

        func validate() throws {
            if count < 1 || repetitions < 1 { throw ValidationError("--count and --repetitions must be ≥ 1") }
        }

        func run() throws {
            let communicator = try reportingErrors { try distributedOptions.start() }
            defer { communicator.finalize() }
            do {
                var device = -1.0
                var deviceName = "-"
                if !noDevice {
                    let context = try deviceOptions.open(for: communicator)
                    device = Double(context.device.index)
                    deviceName = context.device.name
                }
                // Rank r contributes (r + 1)·(i mod 7): the sum is size(size+1)/2·(i mod 7), exact in Float32.
                var values = (0..<count).map { Float((communicator.rank + 1) * ($0 % 7)) }
                try communicator.allReduceSum(&values)
                let factor = communicator.size * (communicator.size + 1) / 2
                let wrong = values.indices.filter { values[$0] != Float(factor * ($0 % 7)) }.count
                var times: [Double] = []
                for _ in 0..<repetitions {
                    let start = DispatchTime.now().uptimeNanoseconds
                    try communicator.allReduceSum(&values)
                    times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
                }
                let localRanks = try communicator.allGather(Double(communicator.localRank))
                let devices = try communicator.allGather(device)
                let pids = try communicator.allGather(Double(getpid()))
                let failures = try communicator.allGather(Double(wrong))
                let median = times.sorted()[times.count / 2]
                var medians = try communicator.allGather(median)
                try communicator.allReduceMax(&medians)
                if communicator.rank == 0 {
                    print(
                        "hrtrain mpi-check: \(communicator.size) rank\(communicator.size == 1 ? "" : "s")"
                            + (communicator.usesMPI ? " (MPI)" : " (no MPI: a single process)"))
                    let rows = (0..<communicator.size).map { r in
                        [
                            "\(r)", "\(Int(localRanks[r]))", devices[r] < 0 ? "-" : "\(Int(devices[r]))",
                            "\(Int(pids[r]))", String(format: "%.3f", medians[r]),
                            failures[r] == 0 ? "ok" : "\(Int(failures[r])) wrong",
                        ]
                    }
                    print(
                        table(
                            ["rank", "local rank", "device", "pid", "all-reduce ms", "sums"], rows,
                            rightAligned: [0, 1, 2, 3, 4]))
                    print(
                        "all-reduce of \(count) floats (\(String(format: "%.2f", Double(count * 4) / 1e6)) MB, "
                            + "MPI_SUM through host memory): median \(String(format: "%.3f", median)) ms on rank 0 "
                            + "over \(repetitions); device of rank 0: \(deviceName)")
                }
                if failures.contains(where: { $0 != 0 }) {
                    throw CommandError("the all-reduce gave wrong sums on some ranks")
                }
            } catch {
                if communicator.size > 1 { communicator.abort("\(error)") }
                printError("error: \(error)")
                throw ExitCode.failure
            }
        }
    }
}
