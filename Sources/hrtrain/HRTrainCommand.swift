import ArgumentParser
import HRTrain

@main
struct HRTrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hrtrain",
        abstract: "Train deep neural networks that regress the hadronic recoil of collider events, on OpenCL.",
        version: HRTrainVersion.string,
        subcommands: [Devices.self, Verify.self, Train.self]
    )
}
