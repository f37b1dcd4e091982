import CLShim

/// OpenCL commands enqueued and host waits, counted for the whole process — hrtrain's own launches and the
/// kernels CLBlast launches inside a GEMM alike (`Sources/CLShim/commands.c` wraps the OpenCL entry points).
public struct CommandCounts: Codable, Sendable, Equatable {
    /// Kernel launches (`clEnqueueNDRangeKernel`).
    public var kernels = 0
    /// Buffer reads, writes, copies and fills.
    public var transfers = 0
    /// Host waits: `clFinish`, `clWaitForEvents`, blocking reads and writes.
    public var synchronisations = 0

    /// Creates counts (zero by default).
    public init(kernels: Int = 0, transfers: Int = 0, synchronisations: Int = 0) {
        self.kernels = kernels
        self.transfers = transfers
        self.synchronisations = synchronisations
    }

    /// Commands of either kind.
    public var commands: Int { kernels + transfers }

    /// The process' counts so far.
    public static func current() -> CommandCounts {
        var c = clshim_command_counts()
        clshim_command_counts(&c)
        return CommandCounts(
            kernels: Int(c.kernels), transfers: Int(c.transfers), synchronisations: Int(c.synchronisations))
    }

    /// The counts of what happened between `earlier` and `self`.
    public static func - (later: CommandCounts, earlier: CommandCounts) -> CommandCounts {
        CommandCounts(
            kernels: later.kernels - earlier.kernels, transfers: later.transfers - earlier.transfers,
            synchronisations: later.synchronisations - earlier.synchronisations)
    }

    /// The counts of running `body` on this thread (other threads' commands in the meantime count too).
    public static func during(_ body: () throws -> Void) rethrows -> CommandCounts {
        let start = current()
        try body()
        return current() - start
    }
}
