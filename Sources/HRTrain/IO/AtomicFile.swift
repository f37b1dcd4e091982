import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Writes files so that a reader sees the old content or the complete new content, never a partial file.
///
/// Content goes to a temporary file in the target's directory (`.<name>.tmp-XXXXXX`), which is flushed
/// with `fsync` and then renamed over the target. If anything fails, the temporary file is removed and
/// an existing target is left untouched.
public enum AtomicFile {
    /// Writes `target` through a buffered writer, replacing it only when `body` and the flush succeed.
    public static func write(to target: URL, _ body: (FileWriter) throws -> Void) throws {
        try withoutActuallyEscaping(body) { try write([(target, $0)]) }
    }

    /// Writes several files; none is replaced unless all were written (then they are renamed in order).
    public static func write(_ files: [(url: URL, body: (FileWriter) throws -> Void)]) throws {
        var staged: [Staged] = []
        do {
            for (url, body) in files {
                let (descriptor, temporary) = try makeTemporary(for: url)
                staged.append(Staged(target: url, temporary: temporary))
                let writer = FileWriter(descriptor: descriptor, url: url)
                defer { close(descriptor) }
                try body(writer)
                try writer.flush()
                try sync(descriptor, url)
            }
        } catch {
            for file in staged { unlink(file.temporary) }
            throw error
        }
        try commit(staged)
    }

    /// Lets `body` create the content at a temporary path (for C libraries that open files by name),
    /// then flushes it and renames it over `target`.
    public static func write(to target: URL, viaPath body: (URL) throws -> Void) throws {
        let (descriptor, temporary) = try makeTemporary(for: target)
        close(descriptor)
        do {
            try body(URL(fileURLWithPath: temporary))
            let reopened = open(temporary, O_RDWR)
            guard reopened >= 0 else { throw systemError("cannot reopen \(temporary)", target) }
            defer { close(reopened) }
            try sync(reopened, target)
        } catch {
            unlink(temporary)
            throw error
        }
        try commit([Staged(target: target, temporary: temporary)])
    }

    /// A finished temporary file waiting to be renamed over its target.
    private struct Staged {
        let target: URL
        let temporary: String
    }

    /// Creates an empty, uniquely named file next to `target` with the mode the target would get: the existing
    /// target's permissions, else 0666 less the umask (as `open` would create it); returns its descriptor and path.
    private static func makeTemporary(for target: URL) throws -> (Int32, String) {
        let directory = target.deletingLastPathComponent().path
        var template = Array("\(directory)/.\(siblingStem(of: target)).tmp-XXXXXX".utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard descriptor >= 0 else { throw systemError("cannot create a temporary file in \(directory)", target) }
        var existing = stat()
        let mode = stat(target.path, &existing) == 0 ? existing.st_mode & 0o7777 : 0o666 & ~processUmask
        fchmod(descriptor, mode)
        return (descriptor, String(cString: template))
    }

    /// The target's name as the stem of its temporary and backup siblings: at most 200 bytes of it (whole
    /// characters), so that `.<stem>.tmp-XXXXXX` stays within the 255 bytes a file name may have.
    static func siblingStem(of target: URL) -> String {
        var stem = Substring(target.lastPathComponent)
        while stem.utf8.count > 200 { stem = stem.dropLast() }
        return String(stem)
    }

    /// The process's umask, read once from `/proc/self/status` (reading it with `umask(2)` means setting it,
    /// a race with other threads creating files); 022 where that line is missing.
    static let processUmask: mode_t = {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        for line in status.split(separator: "\n") where line.hasPrefix("Umask:") {
            if let value = mode_t(line.dropFirst("Umask:".count).trimmingCharacters(in: .whitespaces), radix: 8) {
                return value
            }
        }
        return 0o022
    }()

    /// `fsync`s a descriptor, naming `target` on failure.
    private static func sync(_ descriptor: Int32, _ target: URL) throws {
        guard fsync(descriptor) == 0 else { throw systemError("fsync failed", target) }
    }

    /// Renames every staged file over its target, all or nothing: with several files, each existing target
    /// is first kept under a hard link (`.<name>.old-XXXXXX`); if a rename fails, the targets already
    /// replaced get their old content back (or are removed if they did not exist), and the error names the
    /// file that could not be replaced.
    private static func commit(_ staged: [Staged]) throws {
        var backups: [String?] = []
        if staged.count > 1 {
            for file in staged {
                backups.append(try backup(of: file.target, cleaningUp: staged, backups))
            }
        }
        defer { for case let backup? in backups { unlink(backup) } }
        for (index, file) in staged.enumerated() where rename(file.temporary, file.target.path) != 0 {
            let error = systemError("cannot replace the file", file.target)
            for leftover in staged[index...] { unlink(leftover.temporary) }
            for undone in (0..<index).reversed() {
                if let backup = backups[undone] {
                    rename(backup, staged[undone].target.path)
                } else {
                    unlink(staged[undone].target.path)
                }
            }
            throw error
        }
        // Make the renames durable too (best effort: some file systems refuse to sync a directory).
        for directory in Set(staged.map { $0.target.deletingLastPathComponent().path }) {
            let descriptor = open(directory, O_RDONLY)
            if descriptor >= 0 {
                _ = fsync(descriptor)
                close(descriptor)
            }
        }
    }

    /// A hard link to the existing regular file `target` next to it (nil when there is none); on failure
    /// removes every staged temporary file and the backups made so far.
    private static func backup(of target: URL, cleaningUp staged: [Staged], _ made: [String?]) throws -> String? {
        var info = stat()
        guard lstat(target.path, &info) == 0 else { return nil }
        let directory = target.deletingLastPathComponent().path
        for attempt in 0..<100 {
            let name = "\(directory)/.\(siblingStem(of: target)).old-\(getpid())-\(attempt)"
            if link(target.path, name) == 0 { return name }
            if errno != EEXIST { break }
        }
        let error = systemError("cannot keep the old file while replacing it", target)
        for file in staged { unlink(file.temporary) }
        for case let backup? in made { unlink(backup) }
        throw error
    }

    /// A DataError for `target` with `errno`'s text appended.
    static func systemError(_ what: String, _ target: URL) -> DataError {
        DataError("\(what): \(String(cString: strerror(errno)))", url: target)
    }
}

/// A buffered writer to a file being written by AtomicFile.
public final class FileWriter {
    private let descriptor: Int32
    private let url: URL
    private var buffer: [UInt8] = []
    private let capacity = 1 << 20

    init(descriptor: Int32, url: URL) {
        self.descriptor = descriptor
        self.url = url
        buffer.reserveCapacity(capacity)
    }

    /// Appends raw bytes.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        if buffer.count + bytes.count > capacity { try flush() }
        if bytes.count >= capacity {
            try writeAll(bytes)
        } else {
            buffer.append(contentsOf: bytes)
        }
    }

    /// Appends bytes.
    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Appends a string as UTF-8.
    public func write(_ string: String) throws {
        var string = string
        try string.withUTF8 { try write(UnsafeRawBufferPointer($0)) }
    }

    /// Sends the buffered bytes to the file and, with `toDisk`, waits until the disk has them (`fdatasync`).
    func flush(toDisk: Bool = false) throws {
        try buffer.withUnsafeBytes { try writeAll($0) }
        buffer.removeAll(keepingCapacity: true)
        if toDisk, fdatasync(descriptor) != 0 { throw AtomicFile.systemError("fdatasync failed", url) }
    }

    /// `write(2)` until every byte is written, retrying on EINTR.
    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let written = systemWrite(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                throw AtomicFile.systemError("write failed", url)
            }
            offset += written
        }
    }
}

/// `write(2)`, reachable from FileWriter, whose methods shadow the name.
private func systemWrite(_ descriptor: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    write(descriptor, bytes, count)
}
