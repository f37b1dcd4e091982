import CMPIShim
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// When hrtrain starts MPI.
public enum MPIMode: String, Sendable, CaseIterable {
    /// Only when launched by `mpirun`/`mpiexec`/`srun` (see `LaunchEnvironment.isLaunchedByMPI`).
    case auto
    /// Always (a singleton run initialises MPI with one rank).
    case on
    /// Never: one process, as without MPI installed.
    case off
}

/// What the launcher (`mpirun`, `srun`) tells a process through its environment.
public struct LaunchEnvironment: Sendable, Equatable {
    /// The environment variables read.
    public var variables: [String: String]

    /// Reads `variables` (the process' environment by default).
    public init(_ variables: [String: String] = ProcessInfo.processInfo.environment) {
        self.variables = variables
    }

    /// True when a launcher started this process as one of a parallel job: Open MPI's `mpirun`
    /// (`OMPI_COMM_WORLD_SIZE`), a PMI/PMIx launcher such as MPICH's or `srun --mpi=pmix` (`PMI_SIZE`,
    /// `PMIX_RANK`), or a Slurm job step (`SLURM_NTASKS` together with `SLURM_STEP_ID`: the batch script
    /// itself, which has no step id, stays a single process).
    public var isLaunchedByMPI: Bool {
        if variables["OMPI_COMM_WORLD_SIZE"] != nil || variables["PMI_SIZE"] != nil { return true }
        if variables["PMIX_RANK"] != nil { return true }
        return variables["SLURM_NTASKS"] != nil && (variables["SLURM_STEP_ID"] ?? variables["SLURM_STEPID"]) != nil
    }

    /// This process' rank among those on its node: `OMPI_COMM_WORLD_LOCAL_RANK` (Open MPI), `SLURM_LOCALID`
    /// (srun), `MPI_LOCALRANKID` (MPICH's Hydra), `PMI_LOCAL_RANK`; 0 when none is set.
    public var localRank: Int {
        for key in ["OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "PMI_LOCAL_RANK"] {
            if let text = variables[key], let value = Int(text), value >= 0 { return value }
        }
        return 0
    }

    /// The MPI library to load: `HRTRAIN_MPI_LIBRARY` when set, else nil (libmpi.so.40, then libmpi.so).
    public var libraryPath: String? { variables["HRTRAIN_MPI_LIBRARY"].flatMap { $0.isEmpty ? nil : $0 } }

    /// The watchdog timeout in seconds: `HRTRAIN_MPI_TIMEOUT`, default 300.
    public var timeoutSeconds: Double {
        variables["HRTRAIN_MPI_TIMEOUT"].flatMap(Double.init).flatMap { $0 > 0 ? $0 : nil } ?? 300
    }
}

/// A failure of an MPI call or of the agreement between ranks.
public struct CommunicatorError: Error, CustomStringConvertible, Equatable {
    /// What went wrong, naming the rank.
    public var message: String
    /// Creates the error.
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The ranks of a data-parallel job and the collective operations between them (MPI_COMM_WORLD).
///
/// Without MPI (`Communicator.single`) there is one rank and every collective returns its input. With MPI,
/// libmpi is loaded at run time by the `CMPIShim` target (Open MPI's ABI; `HRTRAIN_MPI_LIBRARY` names another
/// library), so the binary runs where no MPI is installed. All collectives go through host memory.
///
/// A watchdog thread ends the whole job when a collective waits longer than `timeoutSeconds` (a rank that
/// died without the launcher noticing, or hangs): it prints which rank waited for what and calls
/// `MPI_Abort`. While the ranks read their data (`whileReadingData`) a collective waits ten times as long: rank 0
/// reads the test rows as well, several times what another rank reads. Collectives must be called from one
/// thread at a time (the training loop's).
public final class Communicator: @unchecked Sendable {
    /// This process' rank, 0..<size.
    public let rank: Int
    /// The number of ranks.
    public let size: Int
    /// The rank among those on this node (for choosing a device).
    public let localRank: Int
    /// True when MPI is running (also for a job of one rank started by mpirun).
    public let usesMPI: Bool
    /// How long a collective may wait before the watchdog ends the job.
    public let timeoutSeconds: Double
    /// Seconds spent in all-reduce calls so far, and their number (for `bench` and the epoch summary).
    public private(set) var allReduceSeconds = 0.0
    public private(set) var allReduceCalls = 0

    /// How many times `timeoutSeconds` a collective may wait inside `whileReadingData`.
    public static let readingPatience = 10.0

    private let lock = NSLock()
    private var deadline: UInt64?
    private var waitingFor = ""
    private var waitedSeconds = 0.0
    private var reading = false
    private var watchdog: Thread?
    private var finalized = false

    init(rank: Int, size: Int, localRank: Int, usesMPI: Bool, timeoutSeconds: Double) {
        self.rank = rank
        self.size = size
        self.localRank = localRank
        self.usesMPI = usesMPI
        self.timeoutSeconds = timeoutSeconds
    }

    /// One process, no MPI.
    public static func single(localRank: Int = 0) -> Communicator {
        Communicator(rank: 0, size: 1, localRank: localRank, usesMPI: false, timeoutSeconds: .infinity)
    }

    /// Starts MPI when `mode` asks for it (`auto`: when a launcher started this process) and returns the
    /// communicator; `single` otherwise. Fails with a clear message when MPI is wanted but cannot be loaded.
    public static func start(mode: MPIMode, environment: LaunchEnvironment = LaunchEnvironment()) throws
        -> Communicator
    {
        let wanted: Bool
        switch mode {
        case .off: wanted = false
        case .on: wanted = true
        case .auto: wanted = environment.isLaunchedByMPI
        }
        guard wanted else { return single(localRank: environment.localRank) }
        var error = [CChar](repeating: 0, count: 512)
        let path = environment.libraryPath
        if cmpi_load(path, &error, error.count) != 0 {
            let why = String(cString: error)
            throw CommunicatorError(
                "\(why) (launched by mpirun/srun, or --mpi on; install Open MPI, e.g. Debian's libopenmpi3, "
                    + "or set HRTRAIN_MPI_LIBRARY to an Open MPI libmpi.so)")
        }
        var provided: Int32 = 0
        try check(cmpi_init(CMPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread", rank: nil)
        var rank: Int32 = 0
        var size: Int32 = 0
        try check(cmpi_rank(&rank), "MPI_Comm_rank", rank: nil)
        try check(cmpi_size(&size), "MPI_Comm_size", rank: Int(rank))
        let communicator = Communicator(
            rank: Int(rank), size: Int(size), localRank: environment.localRank, usesMPI: true,
            timeoutSeconds: environment.timeoutSeconds)
        communicator.startWatchdog(canAbort: provided >= CMPI_THREAD_MULTIPLE)
        return communicator
    }

    /// Throws `CommunicatorError` naming `call`, the rank and MPI's message unless `code` is MPI_SUCCESS.
    private static func check(_ code: Int32, _ call: String, rank: Int?) throws {
        guard code != 0 else { return }
        var text = [CChar](repeating: 0, count: 512)
        cmpi_error_string(code, &text, text.count)
        let who = rank.map { "rank \($0): " } ?? ""
        throw CommunicatorError("\(who)\(call) failed: \(String(cString: text))")
    }

    /// A one-line prefix naming this rank in messages ("rank 1/4: "), empty for a single process.
    public var label: String { size > 1 || usesMPI ? "rank \(rank)/\(size): " : "" }

    // MARK: Collectives

    /// Sums `values` element by element over all ranks, in place (MPI_FLOAT, MPI_SUM).
    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws {
        guard usesMPI, let base = values.baseAddress else { return }
        try collective("MPI_Allreduce of \(values.count) floats") {
            cmpi_allreduce_sum_float(base, Int32(values.count))
        }
    }

    /// Sums `values` element by element over all ranks (MPI_FLOAT, MPI_SUM).
    public func allReduceSum(_ values: inout [Float]) throws {
        try values.withUnsafeMutableBufferPointer { try allReduceSum($0) }
    }

    /// Sums `values` element by element over all ranks (MPI_DOUBLE, MPI_SUM).
    public func allReduceSum(_ values: inout [Double]) throws {
        guard usesMPI else { return }
        let count = Int32(values.count)
        try values.withUnsafeMutableBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return }
            try collective("MPI_Allreduce of \(count) doubles") { cmpi_allreduce_sum_double(base, count) }
        }
    }

    /// The element-wise maximum of `values` over all ranks (MPI_DOUBLE, MPI_MAX).
    public func allReduceMax(_ values: inout [Double]) throws {
        guard usesMPI else { return }
        let count = Int32(values.count)
        try values.withUnsafeMutableBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return }
            try collective("MPI_Allreduce (max) of \(count) doubles") { cmpi_allreduce_max_double(base, count) }
        }
    }

    /// Every rank's `value`, indexed by rank (an all-reduce of a vector that is zero but for one slot per rank:
    /// exact, since adding zeros is).
    public func allGather(_ value: Double) throws -> [Double] {
        var slots = [Double](repeating: 0, count: size)
        slots[rank] = value
        try allReduceSum(&slots)
        return slots
    }

    /// Exchanges floats between all ranks (MPI_Alltoallv): `send` holds `sendCounts[q]` floats for each rank q in
    /// rank order; the result holds `receiveCounts[q]` floats from each rank q, in rank order (every rank must
    /// know what it receives). With one rank, `send` comes back.
    public func allToAll(_ send: [Float], sendCounts: [Int], receiveCounts: [Int]) throws -> [Float] {
        try require(sendCounts.count == size && receiveCounts.count == size, "allToAll: one count per rank")
        try require(sendCounts.reduce(0, +) == send.count, "allToAll: the send counts do not add up")
        guard usesMPI else { return send }
        let limit = Int(Int32.max)
        guard send.count <= limit, receiveCounts.reduce(0, +) <= limit else {
            throw CommunicatorError(
                "\(label)an exchange of more than \(limit) floats at once (MPI's int counts); use more ranks")
        }
        func offsets(_ counts: [Int]) -> [Int32] {
            var running = 0
            return counts.map { count in
                defer { running += count }
                return Int32(running)
            }
        }
        let (sendCounts32, sendOffsets) = (sendCounts.map { Int32($0) }, offsets(sendCounts))
        let (receiveCounts32, receiveOffsets) = (receiveCounts.map { Int32($0) }, offsets(receiveCounts))
        var received = [Float](repeating: 0, count: receiveCounts.reduce(0, +))
        try send.withUnsafeBufferPointer { source in
            try received.withUnsafeMutableBufferPointer { target in
                try collective("MPI_Alltoallv of \(send.count) floats") {
                    cmpi_alltoallv_float(
                        source.baseAddress, sendCounts32, sendOffsets, target.baseAddress, receiveCounts32,
                        receiveOffsets)
                }
            }
        }
        return received
    }

    /// Replaces `values` on every rank by rank `root`'s (MPI_Bcast of the bytes; the count must agree).
    public func broadcast(_ values: inout [Double], root: Int = 0) throws {
        guard usesMPI else { return }
        let bytes = Int32(values.count * MemoryLayout<Double>.stride)
        try values.withUnsafeMutableBytes { raw in
            guard let base = raw.baseAddress else { return }
            try collective("MPI_Bcast of \(bytes) bytes") { cmpi_broadcast_bytes(base, bytes, Int32(root)) }
        }
    }

    /// Waits until every rank has reached this call.
    public func barrier() throws {
        guard usesMPI else { return }
        try collective("MPI_Barrier") { cmpi_barrier() }
    }

    /// How long a collective called now may wait: `timeoutSeconds`, `readingPatience` times that inside
    /// `whileReadingData`.
    public var collectiveTimeoutSeconds: Double {
        lock.lock()
        defer { lock.unlock() }
        return reading ? timeoutSeconds * Self.readingPatience : timeoutSeconds
    }

    /// Runs `body`, in which the ranks read and prepare their data: its collectives wait for the slowest reader
    /// `readingPatience` times as long as the training's.
    public func whileReadingData<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        let outer = reading
        reading = true
        lock.unlock()
        defer {
            lock.lock()
            reading = outer
            lock.unlock()
        }
        return try body()
    }

    /// Prints `message` (prefixed with this rank) and ends every rank of the job with exit status `code`
    /// (MPI_Abort); without MPI, just exits.
    public func abort(_ message: String, code: Int32 = 1) -> Never {
        FileHandle.standardError.write(Data("error: \(label)\(message)\n".utf8))
        if usesMPI { _ = cmpi_abort(code) }
        exit(code)
    }

    /// MPI_Finalize (once; the watchdog stops).
    public func finalize() {
        lock.lock()
        let first = !finalized
        finalized = true
        deadline = nil
        lock.unlock()
        if usesMPI && first { _ = cmpi_finalize() }
    }

    /// Runs one MPI call under the watchdog and times it.
    private func collective(_ what: String, _ call: () -> Int32) throws {
        let start = DispatchTime.now().uptimeNanoseconds
        let limit = collectiveTimeoutSeconds
        lock.lock()
        deadline = start + UInt64(min(limit, 1e9) * 1e9)
        waitingFor = reading ? "\(what) (while the ranks read their data: 10 × HRTRAIN_MPI_TIMEOUT)" : what
        waitedSeconds = limit
        lock.unlock()
        let code = call()
        let end = DispatchTime.now().uptimeNanoseconds
        lock.lock()
        deadline = nil
        lock.unlock()
        if what.hasPrefix("MPI_Allreduce") {
            allReduceSeconds += Double(end - start) / 1e9
            allReduceCalls += 1
        }
        try Self.check(code, what, rank: rank)
    }

    private func startWatchdog(canAbort: Bool) {
        guard timeoutSeconds.isFinite else { return }
        let thread = Thread { [weak self] in
            while let self {
                Thread.sleep(forTimeInterval: min(1, self.timeoutSeconds / 4))
                self.lock.lock()
                let expired = self.deadline.map { DispatchTime.now().uptimeNanoseconds > $0 } ?? false
                let what = self.waitingFor
                let limit = self.waitedSeconds
                let done = self.finalized
                self.lock.unlock()
                if done { return }
                if expired {
                    let message =
                        "error: \(self.label)\(what) waited more than \(limit) s for the other ranks "
                        + "(one died or hangs; HRTRAIN_MPI_TIMEOUT sets the limit): ending the job\n"
                    FileHandle.standardError.write(Data(message.utf8))
                    // MPI_Abort from this thread needs MPI_THREAD_MULTIPLE; otherwise exit, and the launcher
                    // ends the other ranks of a job whose process exited without MPI_Finalize.
                    if canAbort { _ = cmpi_abort(75) }
                    _exit(75)
                }
            }
        }
        thread.name = "hrtrain MPI watchdog"
        watchdog = thread
        thread.start()
    }
}
