import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// SIGINT and SIGTERM during `hrtrain train`, in one place: between `install()` and `uninstall()`, the
/// first of them only sets a flag (the training loop polls it after every step and stops there, writing a
/// checkpoint at that step); a second one ends the process at once with status 128 + its number. Every file
/// hrtrain writes is replaced atomically (temporary file, then rename), so even then no file is lost or left
/// half-written: the target holds its old or its complete new content (a `.<name>.tmp-XXXXXX` may remain).
enum Interruption {
    /// Installs the handlers of SIGINT and SIGTERM.
    static func install() {
        receivedSignal = 0
        for (signal, message) in [(SIGINT, interruptMessage), (SIGTERM, terminateMessage)] {
            _ = message.count  // the message is built here, not in the handler
            var action = sigaction()
            #if canImport(Glibc)
                action.__sigaction_handler.sa_handler = handleSignal
            #else
                action.__sigaction_u.__sa_handler = handleSignal
            #endif
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(signal, &action, nil)
        }
    }

    /// Puts back the default actions.
    static func uninstall() {
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }

    /// The signal received (SIGINT or SIGTERM), nil while none was.
    static var received: Int32? { receivedSignal == 0 ? nil : receivedSignal }

    /// The signal's name, for messages.
    static func name(_ signal: Int32) -> String {
        signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : "\(signal)"
    }

    /// The command that resumes this run from `checkpoint`: the arguments given, without any `--resume`, plus
    /// `--resume CHECKPOINT`, quoted for a POSIX shell.
    static func resumeCommand(checkpoint: String, arguments: [String] = CommandLine.arguments) -> String {
        var kept: [String] = []
        var index = 1
        while index < arguments.count {
            let argument = arguments[index]
            if argument == "--resume" {
                index += 2
                continue
            }
            if !argument.hasPrefix("--resume=") { kept.append(argument) }
            index += 1
        }
        let program = arguments.first.map { URL(fileURLWithPath: $0).lastPathComponent } ?? "hrtrain"
        return ([program] + kept + ["--resume", checkpoint]).map(shellQuoted).joined(separator: " ")
    }

    /// `text` as one shell word.
    static func shellQuoted(_ text: String) -> String {
        let plain = CharacterSet(
            charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=,:@+%")
        if !text.isEmpty && text.unicodeScalars.allSatisfy(plain.contains) { return text }
        return "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}

/// Set by the handler only (0: no signal yet); read by the training loop after every step.
private nonisolated(unsafe) var receivedSignal: Int32 = 0

/// The line written (with `write`, which is async-signal-safe) when the first SIGINT arrives.
private let interruptMessage = Array(
    ("\nhrtrain: SIGINT received: finishing the current step, then writing a checkpoint "
        + "(send it again to stop at once)\n").utf8)
/// The same for SIGTERM.
private let terminateMessage = Array(
    ("\nhrtrain: SIGTERM received: finishing the current step, then writing a checkpoint "
        + "(send it again to stop at once)\n").utf8)

/// The handler: the first signal is recorded, a second ends the process (status 128 + its number).
private func handleSignal(_ signal: Int32) {
    if receivedSignal != 0 { _exit(128 + signal) }
    receivedSignal = signal
    let message = signal == SIGINT ? interruptMessage : terminateMessage
    message.withUnsafeBytes { _ = write(2, $0.baseAddress, $0.count) }
}
