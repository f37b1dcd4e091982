import Foundation

@testable import HRTrain

#if canImport(Glibc)
    import Glibc
#endif

// libFuzzer targets for hrtrain's readers, one binary chosen by $HRTRAIN_FUZZ_TARGET:
// `csv`, `npy` (readTable on the input written as a file of that format), `hdf5` (see HDF5Server below) and
// `model` (the bytes as a safetensors file, decoded as a model and as a checkpoint). Every input must end in a
// value or a thrown error: a trap, a crash or a sanitizer report is a finding. Built by Fuzz/run.sh with
// -sanitize=fuzzer (debug, testable: the hdf5 target calls the internal in-process reader).

/// The target named in the environment.
private let target = ProcessInfo.processInfo.environment["HRTRAIN_FUZZ_TARGET"] ?? "csv"

/// A private folder for the files the readers open (in /dev/shm when it exists: no disk traffic).
private let folder: URL = {
    let base =
        FileManager.default.fileExists(atPath: "/dev/shm")
        ? URL(fileURLWithPath: "/dev/shm") : FileManager.default.temporaryDirectory
    let url = base.appendingPathComponent("hrtrain-fuzz-\(target)-\(ProcessInfo.processInfo.processIdentifier)")
    try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}()

/// Writes `bytes` to `name` in the private folder (plain POSIX calls: fast) and returns its URL.
private func file(_ name: String, _ bytes: UnsafeRawBufferPointer) -> URL {
    let url = folder.appendingPathComponent(name)
    let descriptor = open(url.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    precondition(descriptor >= 0, "cannot write \(url.path)")
    var offset = 0
    while offset < bytes.count {
        let written = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
        precondition(written > 0, "cannot write \(url.path)")
        offset += written
    }
    close(descriptor)
    return url
}

/// One input: never throws out, never traps.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    switch target {
    case "csv":
        _ = try? readTable(file("input.csv", bytes))
    case "npy":
        // The first byte is the length of the `.columns` sidecar that follows it (0: none); the rest is the array.
        let sidecarURL = folder.appendingPathComponent("input.npy.columns")
        unlink(sidecarURL.path)
        var body = bytes
        if let length = bytes.first.map(Int.init), length > 0, length < bytes.count {
            _ = file("input.npy.columns", UnsafeRawBufferPointer(rebasing: bytes[1..<1 + length]))
            body = UnsafeRawBufferPointer(rebasing: bytes[(1 + length)...])
        } else if !bytes.isEmpty {
            body = UnsafeRawBufferPointer(rebasing: bytes[1...])
        }
        _ = try? readTable(file("input.npy", body))
    case "hdf5":
        HDF5Server.shared.check(file("input.h5", bytes))
    case "model":
        let url = file("input.safetensors", bytes)
        if let decoded = try? SafeTensorsFile(decoding: Array(bytes), file: url.path) {
            _ = try? Model(file: decoded, path: url.path)
        }
        _ = try? Checkpoint.read(from: url)
    default:
        fatalError("unknown HRTRAIN_FUZZ_TARGET \(target): use csv, npy, hdf5 or model")
    }
    return 0
}

/// The hdf5 target. hrtrain reads HDF5 in a child forked per file (IsolatedReader), since libhdf5 itself crashes
/// or loops on some damaged files; a fork per input made this target about 4 executions/s. Here one persistent
/// child (a server, forked by a small manager process started before libFuzzer) runs our reader,
/// `HDF5Format.readInThisProcess` (HDF5File, the CHDF5 shim, libhdf5), on each input under a time limit, and
/// answers with the table or the error message. Then:
/// - when the child answered, the parent runs the same reader in this process (so that libFuzzer's coverage
///   sees our Swift reading code) and requires the same answer, and the table to survive `Table(serialized:)`;
/// - when the child crashed or timed out (libhdf5's fault, not ours), the manager starts a new server child, and
///   every 100th such input is read through the production path, `HDF5Format.read` (a forked child per read,
///   about 45 ms of system time from this grown process), which must throw a DataError;
/// - every 1,000th input also goes through `HDF5Format.read` (the production path) and must agree with the child.
/// libhdf5 is a system library without coverage instrumentation: libFuzzer is guided by our code's branches.
private final class HDF5Server {
    /// The one server of this process.
    static let shared = HDF5Server()

    /// What the child said about one file.
    enum Answer: Equatable {
        /// The serialized table.
        case table([UInt8])
        /// The error message.
        case error(String)
        /// The child died (a crash, or SIGVTALRM after the time limit).
        case died(signal: Int32)

        /// The answer with every hexadecimal address in an error message replaced by `0x…`.
        var withoutAddresses: Answer {
            guard case .error(let message) = self else { return self }
            return .error(message.replacing(try! Regex("0x[0-9a-fA-F]+"), with: "0x…"))
        }
    }

    private var manager: pid_t = -1
    private var requests: Int32 = -1
    private var answers: Int32 = -1
    private var inputs = 0
    /// How the inputs ended: tables, errors, crashes of libhdf5 (a signal or a sanitizer report), time-outs.
    private var outcomes = (tables: 0, errors: 0, crashes: 0, timeouts: 0)
    /// Milliseconds of CPU time one read may take in the server child (`$HRTRAIN_FUZZ_READ_LIMIT_MS`, default
    /// 20; CPU time, so a loaded machine does not turn slow reads into time-outs): damaged global heaps make
    /// libhdf5 1.10 loop in `H5HG_read` (seen with gdb), and a short limit keeps those inputs cheap. Such an
    /// input is a time-out here as in IsolatedReader (whose limit is `$HRTRAIN_READER_TIMEOUT` seconds).
    private let limit = ProcessInfo.processInfo.environment["HRTRAIN_FUZZ_READ_LIMIT_MS"].flatMap(Int.init) ?? 20

    /// Reads `url` through the child, then checks the answer as described above.
    func check(_ url: URL) {
        inputs += 1
        if inputs == 1 {
            atexit {
                let counts = HDF5Server.shared.outcomes
                let line =
                    "hdf5 target: \(HDF5Server.shared.inputs) inputs: \(counts.tables) tables, "
                    + "\(counts.errors) errors, \(counts.crashes) libhdf5 crashes and \(counts.timeouts) time-outs "
                    + "in the server child\n"
                fputs(line, stderr)
            }
        }
        let answer = ask(url)
        switch answer {
        case .table: outcomes.tables += 1
        case .error: outcomes.errors += 1
        case .died(let signal) where signal == SIGVTALRM: outcomes.timeouts += 1
        case .died: outcomes.crashes += 1
        }
        switch answer {
        case .died(let signal) where signal == SIGVTALRM && outcomes.timeouts % 100 != 1:
            break  // a time-out: the same alarm as IsolatedReader's; every 100th is also read the production way
        case .died(let signal) where signal != SIGVTALRM && outcomes.crashes % 100 != 1:
            break  // a crash of libhdf5: every 100th is also read the production way (a fork per read)
        case .died(let signal):
            do {
                _ = try HDF5Format.read(from: url)
                // A read that ran out of time in the server may finish in time here (a loaded machine).
                precondition(signal == SIGVTALRM, "libhdf5 crashed in the server child, but HDF5Format.read did not")
            } catch is DataError {
            } catch {
                fatalError("the production reader threw a \(type(of: error)), not a DataError: \(error)")
            }
        case .table(let bytes):
            guard Table(serialized: bytes) != nil else { fatalError("the child's table does not deserialize") }
            fallthrough
        case .error:
            let here: Answer
            do {
                here = .table(
                    try HDF5Format.locked { try HDF5Format.readInThisProcess(from: url, dataset: nil) }
                        .table.serialized())
            } catch let error as DataError {
                here = .error(error.message)
            } catch {
                fatalError("the reader threw a \(type(of: error)), not a DataError: \(error)")
            }
            // libhdf5's messages can hold heap addresses ("current p = 0x7c95…"), which differ between processes.
            precondition(
                here.withoutAddresses == answer.withoutAddresses,
                "the reader gave different answers in the child (\(String(describing: answer).prefix(400))) and in "
                    + "this process (\(String(describing: here).prefix(400)))")
        }
        if inputs % 1000 == 0 {
            let production: Answer
            do { production = .table(try HDF5Format.read(from: url).serialized()) } catch let error as DataError {
                production = .error(error.message)
            } catch {
                fatalError("HDF5Format.read threw a \(type(of: error)), not a DataError: \(error)")
            }
            if case .died = answer {
            } else {
                precondition(
                    production.withoutAddresses == answer.withoutAddresses,
                    "HDF5Format.read and the server child disagree")
            }
            _ = try? readTable(url)
        }
    }

    /// Sends `url` to the manager and waits for the server child's answer.
    private func ask(_ url: URL) -> Answer {
        precondition(manager > 0, "the HDF5 manager process was not started (startManager)")
        precondition(writeAll(requests, Array(url.path.utf8) + [0]), "the HDF5 manager process died")
        guard let tag = readExactly(answers, 1), let length = readExactly(answers, 8),
            let payload = readExactly(answers, Int(length.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }))
        else { fatalError("the HDF5 manager process died") }
        switch tag[0] {
        case 0: return .table(payload)
        case 1: return .error(String(decoding: payload, as: UTF8.self))
        default: return .died(signal: payload.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) } & 0x7F)
        }
    }

    /// Forks the manager process, before libFuzzer starts (this process is small then, and forks from the
    /// manager are cheap: a fork of the grown fuzzing process cost about 45 ms of system time). The manager
    /// keeps one server child, passes each request to it and its answer back; when the server dies it reaps it,
    /// answers with tag 2 and the wait status, and starts a new server for the next request.
    func startManager() {
        var toManager: [Int32] = [0, 0]
        var fromManager: [Int32] = [0, 0]
        precondition(pipe(&toManager) == 0 && pipe(&fromManager) == 0, "cannot create pipes")
        signal(SIGPIPE, SIG_IGN)  // a write to a dead server fails with EPIPE instead
        let pid = fork()
        precondition(pid >= 0, "cannot fork the HDF5 manager process")
        if pid == 0 {
            close(toManager[1])
            close(fromManager[0])
            manage(toManager[0], fromManager[1])
        }
        close(toManager[0])
        close(fromManager[1])
        manager = pid
        requests = toManager[1]
        answers = fromManager[0]
    }

    /// The manager's loop (see startManager).
    private func manage(_ input: Int32, _ output: Int32) -> Never {
        var server: (pid: pid_t, requests: Int32, answers: Int32)?
        while true {
            var request: [UInt8] = []
            var byte: UInt8 = 0
            while true {
                let got = read(input, &byte, 1)
                if got < 0 && errno == EINTR { continue }
                guard got == 1 else { _exit(0) }  // the fuzzing process has gone
                request.append(byte)
                if byte == 0 { break }
            }
            let current = server ?? startServer(closing: [input, output])
            server = current
            var answer: [UInt8]
            if writeAll(current.requests, request), let tag = readExactly(current.answers, 1),
                let length = readExactly(current.answers, 8),
                let payload = readExactly(
                    current.answers, Int(length.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }))
            {
                answer = tag + length + payload
            } else {
                var status: Int32 = 0
                while waitpid(current.pid, &status, 0) < 0 && errno == EINTR {}
                close(current.requests)
                close(current.answers)
                server = nil
                answer = [2] + withUnsafeBytes(of: UInt64(4)) { Array($0) } + withUnsafeBytes(of: status) { Array($0) }
            }
            guard writeAll(output, answer) else { _exit(3) }
        }
    }

    /// Forks a server child from the manager: it reads NUL-terminated paths and answers each with a tag (0
    /// table, 1 error), a 64-bit length and the bytes. `closing`: the manager's descriptors, closed in it.
    private func startServer(closing descriptors: [Int32]) -> (pid: pid_t, requests: Int32, answers: Int32) {
        var toChild: [Int32] = [0, 0]
        var fromChild: [Int32] = [0, 0]
        guard pipe(&toChild) == 0 && pipe(&fromChild) == 0 else { _exit(4) }
        let pid = fork()
        guard pid >= 0 else { _exit(5) }
        if pid == 0 {
            for descriptor in descriptors + [toChild[1], fromChild[0]] { close(descriptor) }
            for fatal in [SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGVTALRM] { signal(fatal, SIG_DFL) }
            if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "__sanitizer_set_death_callback") {
                typealias SetCallback = @convention(c) (@convention(c) () -> Void) -> Void
                unsafeBitCast(symbol, to: SetCallback.self)({ _exit(134) })
            }
            // libhdf5's crashes in the child (sanitizer reports included) are expected: their reports go to
            // $HRTRAIN_FUZZ_CHILD_STDERR when it is set (Fuzz/run.sh: .build/fuzz/hdf5-children.log).
            if let path = ProcessInfo.processInfo.environment["HRTRAIN_FUZZ_CHILD_STDERR"] {
                let log = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
                if log >= 0 { dup2(log, 2) }
            }
            serve(toChild[0], fromChild[1])
        }
        close(toChild[0])
        close(fromChild[1])
        return (pid, toChild[1], fromChild[0])
    }

    /// The child's loop.
    private func serve(_ input: Int32, _ output: Int32) -> Never {
        var path: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let got = read(input, &byte, 1)
            if got < 0 && errno == EINTR { continue }
            guard got == 1 else { _exit(0) }
            guard byte == 0 else {
                path.append(byte)
                continue
            }
            let url = URL(fileURLWithPath: String(decoding: path, as: UTF8.self))
            path = []
            var timer = itimerval(
                it_interval: timeval(), it_value: timeval(tv_sec: limit / 1000, tv_usec: (limit % 1000) * 1000))
            setitimer(__itimer_which_t(ITIMER_VIRTUAL.rawValue), &timer, nil)
            var answer: [UInt8]
            do {
                answer = [0] + (try HDF5Format.readInThisProcess(from: url, dataset: nil).table.serialized())
            } catch let error as DataError {
                answer = [1] + Array(error.message.utf8)
            } catch {
                answer = [1] + Array("not a DataError: \(error)".utf8)
            }
            timer.it_value = timeval()
            setitimer(__itimer_which_t(ITIMER_VIRTUAL.rawValue), &timer, nil)
            let length = UInt64(answer.count - 1)
            answer.insert(contentsOf: withUnsafeBytes(of: length) { Array($0) }, at: 1)
            guard writeAll(output, answer) else { _exit(3) }
        }
    }

    /// Writes all of `bytes`; false on failure.
    private func writeAll(_ descriptor: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress! + offset, bytes.count - offset) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return false }
            offset += written
        }
        return true
    }

    /// Reads exactly `count` bytes; nil at end of file (the child died).
    private func readExactly(_ descriptor: Int32, _ count: Int) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: count)
        var offset = 0
        while offset < count {
            let got = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + offset, count - offset) }
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else { return nil }
            offset += got
        }
        return bytes
    }
}

/// libFuzzer's driver, from its runtime.
@_silgen_name("LLVMFuzzerRunDriver")
private func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

/// The entry point SwiftPM gives an executable target (`main` is an alias of it): runs libFuzzer's driver.
@_cdecl("hrtrain_fuzz_main")
public func fuzzMain(
    _ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    var count = argc
    var arguments = argv
    if target == "hdf5" { HDF5Server.shared.startManager() }
    return runFuzzerDriver(&count, &arguments) { fuzzOneInput($0, $1) }
}
