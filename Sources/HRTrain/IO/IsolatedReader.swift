import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Runs a reader that calls into a C library hrtrain cannot make safe (libhdf5 crashes on some damaged
/// files: fuzzing found out-of-bounds copies in its global-heap code) in a forked child process, so that a
/// crash there ends the child, not hrtrain: the caller gets a DataError naming the file and the signal.
///
/// The child runs `body`, sends its bytes (or its error message) through a pipe and leaves with `_exit`;
/// the parent reads them while the child writes, then reaps it.
enum IsolatedReader {
    /// Runs `body` in a child process; `lock` is held across the fork so that no other thread is inside the
    /// library at that moment (the child must not take it again).
    ///
    /// The child is also given a time limit (SIGALRM): `$HRTRAIN_READER_TIMEOUT` seconds, else 120 s plus one
    /// second per MB of the file, since a damaged file can also make the library loop forever.
    static func run(url: URL, library: String, lock: NSLock, _ body: () throws -> [UInt8]) throws -> [UInt8] {
        var info = stat()
        let size = stat(url.path, &info) == 0 ? Int(info.st_size) : 0
        let limit =
            ProcessInfo.processInfo.environment["HRTRAIN_READER_TIMEOUT"].flatMap(UInt32.init)
            ?? UInt32(min(86_400, 120 + size / 1_000_000))
        var descriptors: [Int32] = [0, 0]
        guard pipe(&descriptors) == 0 else { throw AtomicFile.systemError("cannot create a pipe", url) }
        lock.lock()
        let child = fork()
        if child == 0 {
            close(descriptors[0])
            alarm(limit)
            runChild(writingTo: descriptors[1], body)
        }
        lock.unlock()
        close(descriptors[1])
        guard child > 0 else {
            close(descriptors[0])
            throw AtomicFile.systemError("cannot start the \(library) reader process", url)
        }
        let received = readAll(descriptors[0])
        close(descriptors[0])
        var status: Int32 = 0
        while waitpid(child, &status, 0) < 0 && errno == EINTR {}
        let signal = status & 0x7F
        if signal == SIGALRM {
            throw DataError(
                "the \(library) library did not finish reading the file within \(limit) s: it is damaged "
                    + "(or set $HRTRAIN_READER_TIMEOUT higher)",
                url: url)
        }
        if signal != 0 {
            throw DataError(
                "the \(library) library crashed (signal \(signal), \(String(cString: strsignal(signal)))) while "
                    + "reading the file: it is damaged or not a valid \(library) file",
                url: url)
        }
        let exitCode = (status >> 8) & 0xFF
        guard exitCode == 0, let tag = received.first else {
            throw DataError(
                "the \(library) reader ended without an answer (exit status \(exitCode)): the file is damaged "
                    + "or not a valid \(library) file",
                url: url)
        }
        let payload = Array(received.dropFirst())
        guard tag == 0 else { throw DataError(String(decoding: payload, as: UTF8.self), url: url) }
        return payload
    }

    /// The child's side: default actions for the fatal signals (a crash kills the child and is seen by the
    /// parent, rather than running the parent's handlers), the answer written, then `_exit`.
    private static func runChild(writingTo descriptor: Int32, _ body: () throws -> [UInt8]) -> Never {
        for fatal in [SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGALRM] { signal(fatal, SIG_DFL) }
        disableSanitizerDeathCallback()
        var answer: [UInt8]
        do {
            answer = [0] + (try body())
        } catch let error as DataError {
            answer = [1] + Array(error.message.utf8)
        } catch {
            answer = [1] + Array("\(error)".utf8)
        }
        var offset = 0
        while offset < answer.count {
            let written = answer.withUnsafeBytes { write(descriptor, $0.baseAddress! + offset, answer.count - offset) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { _exit(3) }
            offset += written
        }
        _exit(0)
    }

    /// Under a sanitizer (the fuzz build), a report in the child ends the child only: the callback a fuzzer
    /// registered is replaced by a plain exit. Without a sanitizer this does nothing.
    private static func disableSanitizerDeathCallback() {
        typealias SetCallback = @convention(c) (@convention(c) () -> Void) -> Void
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "__sanitizer_set_death_callback") else {
            return
        }
        unsafeBitCast(symbol, to: SetCallback.self)({ _exit(134) })
    }

    /// Everything readable from `descriptor` until end of file.
    private static func readAll(_ descriptor: Int32) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let got = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress!, $0.count) }
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else { return bytes }
            bytes.append(contentsOf: chunk[0..<got])
        }
    }
}

extension Table {
    /// The table as bytes: column count, each name's length and UTF-8, row count, the values (native order).
    func serialized() -> [UInt8] {
        var bytes: [UInt8] = []
        func append(_ value: Int) { withUnsafeBytes(of: UInt64(value)) { bytes.append(contentsOf: $0) } }
        append(columnCount)
        for name in columnNames {
            append(name.utf8.count)
            bytes.append(contentsOf: name.utf8)
        }
        append(rowCount)
        values.withUnsafeBytes { bytes.append(contentsOf: $0) }
        return bytes
    }

    /// A table from `serialized()`; nil if the bytes are inconsistent.
    init?(serialized bytes: [UInt8]) {
        var offset = 0
        func next() -> Int? {
            guard offset + 8 <= bytes.count else { return nil }
            let value = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self) }
            offset += 8
            return value <= UInt64(Int.max) ? Int(value) : nil
        }
        guard let columns = next(), columns <= bytes.count else { return nil }
        var names: [String] = []
        for _ in 0..<columns {
            guard let length = next(), length <= bytes.count - offset else { return nil }
            names.append(String(decoding: bytes[offset..<offset + length], as: UTF8.self))
            offset += length
        }
        guard let rows = next(), case (let count, let overflow) = rows.multipliedReportingOverflow(by: columns),
            !overflow, count <= (bytes.count - offset) / 4, count * 4 == bytes.count - offset
        else { return nil }
        let values = bytes[offset...].withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        self.init(columnNames: names, rowCount: rows, values: values)
    }
}
