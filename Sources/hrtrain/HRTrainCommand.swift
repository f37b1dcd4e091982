import ArgumentParser
import HRTrain

@main
struct HRTrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hrtrain",
        abstract: "Train deep neural networks that regress the hadronic recoil of collider events, on OpenCL.",
        version: HRTrainVersion.string,
        subcommands: [
            Devices.self, Generate.self, Verify.self, Train.self, Bench.self, Tune.self, Init.self, Predict.self,
            Evaluate.self, Report.self, Calibrate.self,
        ]
    )
}
