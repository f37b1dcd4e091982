import ArgumentParser
import Foundation
import HRTrain

@main
struct HRTrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hrtrain",
        abstract: "Train deep neural networks that regress the hadronic recoil of collider events, on OpenCL.",
        version: HRTrainVersion.string,
        subcommands: [
            Devices.self, Generate.self, Verify.self, Train.self, Bench.self, Tune.self, Init.self, Predict.self,
            Evaluate.self, Report.self, Export.self, Calibrate.self, MPICheck.self,
        ]
    )

    /// Parses the command line with negative numbers kept as values (`--epochs -1` reads as `--epochs=-1`,
    /// so it meets the option's range check instead of being taken for a flag).
    /// A file-size limit (`ulimit -f`) makes writes fail with "File too large" instead of killing the process.
    static func main() {
        signal(SIGXFSZ, SIG_IGN)
        main(joiningNegativeValues(Array(CommandLine.arguments.dropFirst())))
    }
}

/// Joins `--name` and a following negative number (`-1`, `-.5`, `-1e3`, `-inf`, `-nan`) into `--name=-1`.
/// hrtrain has no positional arguments, so such a token can only be the value of the option before it.
func joiningNegativeValues(_ arguments: [String]) -> [String] {
    var joined: [String] = []
    var index = 0
    while index < arguments.count {
        let argument = arguments[index]
        if argument.hasPrefix("--"), argument.count > 2, !argument.contains("="), index + 1 < arguments.count,
            isNegativeNumber(arguments[index + 1])
        {
            joined.append(argument + "=" + arguments[index + 1])
            index += 2
        } else {
            joined.append(argument)
            index += 1
        }
    }
    return joined
}

/// True for `-` followed by a digit, a `.` and a digit, or `inf`/`nan` (any case).
func isNegativeNumber(_ text: String) -> Bool {
    guard text.hasPrefix("-"), !text.hasPrefix("--") else { return false }
    let rest = text.dropFirst().lowercased()
    if rest.hasPrefix("inf") || rest.hasPrefix("nan") { return true }
    guard let first = rest.first else { return false }
    return first.isNumber || (first == "." && rest.dropFirst().first?.isNumber == true)
}
