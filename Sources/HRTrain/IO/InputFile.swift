import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The one place that opens input files: it checks that the path names a regular file before opening it
/// (a FIFO, a directory or a device is refused with a message, never opened, so nothing blocks), opens it
/// non-blocking, checks again on the open descriptor, and bounds what is read by the host's memory.
public enum InputFile {
    /// What kind of file system object `mode` describes, as a phrase.
    static func kindPhrase(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: return "a directory"
        case S_IFIFO: return "a FIFO (named pipe)"
        case S_IFSOCK: return "a socket"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFLNK: return "a symbolic link"
        default: return "not a regular file"
        }
    }

    /// The `stat` of `url` (following links); throws a DataError unless it is a regular file.
    @discardableResult
    public static func requireRegularFile(_ url: URL, field: DataField? = nil) throws -> stat {
        var info = stat()
        guard stat(url.path, &info) == 0 else {
            let reason = errno == ENOENT ? "no such file" : "cannot read the file: \(String(cString: strerror(errno)))"
            throw DataError(reason, file: url.path, field: field)
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw DataError(
                "is \(kindPhrase(info.st_mode)), not a regular file; give a regular file", file: url.path,
                field: field)
        }
        return info
    }

    /// Opens `url` read-only after checking that it is a regular file; returns the descriptor and its size.
    public static func open(_ url: URL, field: DataField? = nil) throws -> (descriptor: Int32, size: Int) {
        try requireRegularFile(url, field: field)
        // O_NONBLOCK: should the path be swapped for a FIFO between the check and the open, open returns
        // at once instead of waiting for a writer.
        let descriptor = systemOpen(url.path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw DataError("cannot open the file: \(String(cString: strerror(errno)))", file: url.path, field: field)
        }
        var info = stat()
        guard fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            close(descriptor)
            throw DataError("is not a regular file (it changed while being opened)", file: url.path, field: field)
        }
        let flags = fcntl(descriptor, F_GETFL)
        if flags >= 0 { _ = fcntl(descriptor, F_SETFL, flags & ~O_NONBLOCK) }
        return (descriptor, Int(info.st_size))
    }

    /// Reads the whole regular file `url`; its size is checked against the host's memory first.
    public static func readAll(_ url: URL, field: DataField? = nil) throws -> [UInt8] {
        let (descriptor, size) = try open(url, field: field)
        defer { close(descriptor) }
        do { try SizeLimits.requireHost(bytes: size, what: "reading the file") } catch let error as SizeLimitError {
            throw DataError(error.description, file: url.path, field: field)
        }
        var bytes = [UInt8](repeating: 0, count: size)
        var offset = 0
        while offset < size {
            let got = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + offset, size - offset) }
            if got < 0 {
                if errno == EINTR { continue }
                throw DataError(
                    "cannot read the file: \(String(cString: strerror(errno)))", file: url.path, field: field)
            }
            if got == 0 { break }  // the file shrank while being read
            offset += got
        }
        return offset == size ? bytes : Array(bytes[0..<offset])
    }

    /// Reads the whole regular file `url` as UTF-8 text.
    public static func readText(_ url: URL, field: DataField? = nil) throws -> String {
        String(decoding: try readAll(url, field: field), as: UTF8.self)
    }
}

/// `open(2)`, reachable from InputFile, whose `open` shadows the name.
private func systemOpen(_ path: String, _ flags: Int32) -> Int32 { open(path, flags) }
