import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The one place that plans a command's outputs before any work: every file it will write (with the
/// companions a format adds, such as a `.npy` file's `.columns` sidecar) is checked against every file it
/// reads and against every other output, by resolved path and by file identity (device and inode, so hard
/// links and symbolic links are caught too), and every output's folder must exist and be writable, and an
/// existing output must be a regular file. A collision is refused with a message naming both files by the
/// labels the caller gave them (a front end's names for its inputs and outputs, such as its flags).
public struct OutputPlan: Sendable {
    /// One planned file.
    struct Entry: Sendable {
        var option: String
        var path: String
        var resolved: String
        var identity: FileIdentity?
    }

    /// Device and inode of an existing file.
    struct FileIdentity: Sendable, Equatable {
        var device: UInt64
        var inode: UInt64
    }

    private var inputs: [Entry] = []
    private var outputs: [Entry] = []

    /// An empty plan.
    public init() {}

    /// Records a file the command reads (a `.npy` input also records its `.columns` sidecar).
    public mutating func input(_ path: String, option: String) {
        inputs.append(Self.entry(path, option: option))
        if path.lowercased().hasSuffix(".npy") {
            inputs.append(Self.entry(NPYFormat.columnsURL(for: URL(fileURLWithPath: path)).path, option: option))
        }
    }

    /// Records a file the command writes (a `.npy` output also records its `.columns` sidecar).
    public mutating func output(_ path: String, option: String) {
        outputs.append(Self.entry(path, option: option))
        if path.lowercased().hasSuffix(".npy") {
            outputs.append(
                Self.entry(NPYFormat.columnsURL(for: URL(fileURLWithPath: path)).path, option: option + " (sidecar)"))
        }
    }

    /// Records a file the command writes without companions.
    public mutating func plainOutput(_ path: String, option: String) {
        outputs.append(Self.entry(path, option: option))
    }

    /// A refused plan: `<label> <path>: <what is wrong>`.
    public struct Refusal: Error, CustomStringConvertible, Sendable {
        /// The caller's label of the output.
        public var label: String
        /// The output path.
        public var path: String
        /// What is wrong.
        public var message: String
        /// `label path: message`.
        public var description: String { "\(label) \(path): \(message)" }
    }

    /// Throws a Refusal for the first problem: an output folder that is missing or not writable, an output
    /// that exists but is not a regular file, an output that is an input, or two outputs that are one file.
    public func check() throws {
        for output in outputs {
            let url = URL(fileURLWithPath: output.path)
            let folder = url.deletingLastPathComponent().path
            var info = stat()
            guard stat(folder, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
                throw Refusal(label: output.option, path: output.path, message: "the folder \(folder) does not exist")
            }
            guard access(folder, W_OK) == 0 else {
                throw Refusal(label: output.option, path: output.path, message: "the folder \(folder) is not writable")
            }
            if stat(output.path, &info) == 0, (info.st_mode & S_IFMT) != S_IFREG {
                throw Refusal(
                    label: output.option, path: output.path,
                    message: "is \(InputFile.kindPhrase(info.st_mode)); give the path of a regular file to write")
            }
        }
        for (index, output) in outputs.enumerated() {
            for input in inputs where Self.same(output, input) {
                throw Refusal(
                    label: output.option, path: output.path,
                    message:
                        "is the same file as the input \(input.option) \(input.path): writing it would destroy the "
                        + "input; give another path"
                )
            }
            for other in outputs[..<index] where Self.same(output, other) {
                throw Refusal(
                    label: output.option, path: output.path,
                    message:
                        "is the same file as the output \(other.option) \(other.path): one would overwrite the "
                        + "other; give two different paths"
                )
            }
        }
    }

    /// True when two entries name one file: the same resolved path, or the same device and inode.
    private static func same(_ a: Entry, _ b: Entry) -> Bool {
        if a.resolved == b.resolved { return true }
        if let x = a.identity, let y = b.identity { return x == y }
        return false
    }

    /// Resolves `path` (symbolic links and `..` in the existing part) and reads its identity if it exists.
    private static func entry(_ path: String, option: String) -> Entry {
        let absolute = URL(fileURLWithPath: path).standardizedFileURL
        var info = stat()
        let identity =
            stat(absolute.path, &info) == 0
            ? FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino)) : nil
        return Entry(option: option, path: path, resolved: resolve(absolute), identity: identity)
    }

    /// The real path of `url`, or of its nearest existing ancestor followed by the rest.
    private static func resolve(_ url: URL) -> String {
        var suffix: [String] = []
        var current = url
        while true {
            if let real = realpath(current.path, nil) {
                defer { free(real) }
                let base = String(cString: real)
                return suffix.reversed().reduce(base) { $0 == "/" ? "/" + $1 : $0 + "/" + $1 }
            }
            let parent = current.deletingLastPathComponent()
            if parent.path == current.path { return url.path }
            suffix.append(current.lastPathComponent)
            current = parent
        }
    }
}
