import ArgumentParser
import Foundation
import HRTrain

extension HRTrainCommand {
    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Generate simulated W⁺→μν events at 13 TeV with the thesis' 38 features (the built-in sample).",
            discussion: """
                A seeded generator with a simple detector model (see the README for every parameter): truth W pT \
                spectrum, hard-scatter sprays and underlying event, Run-2 pile-up, tracking, calorimeter response \
                and resolution, jets. Columns: the 38 features in the thesis' order, then truth_hr_x, truth_hr_y \
                (GeV). The format follows the extension: .csv, .npy (names in FILE.columns) or .h5/.hdf5. Event i \
                depends only on (seed, i), so the output is the same for any number of threads. --split writes the \
                thesis' training/test split (2,275,902 / 1,349,234 events; the same proportions for other --events) \
                to two files instead.
                """)

        @Option(help: "Number of events (default: the thesis' 3,625,136).") var events = EventGenerator.thesisEventCount
        @Option(help: "Random seed.") var seed: UInt64 = 42
        @Option(help: "Output file: .csv, .npy or .h5/.hdf5 (with --split: the training file).") var output: String
        @Option(help: "With --split: the test file (default: OUTPUT with '-test' before the extension).")
        var testOutput: String?
        @Flag(
            help: ArgumentHelp(
                "Write the thesis' training/test split (2,275,902 / 1,349,234 events, or those proportions) to two "
                    + "files.")
        ) var split = false
        @Flag(name: .shortAndLong, help: "No summary line.") var quiet = false

        func validate() throws {
            if events < 1 { throw ValidationError("--events must be at least 1, got \(events)") }
            if split && events < 2 { throw ValidationError("--split needs at least 2 events") }
            try boundedFlag("--events \(events)") {
                try SizeLimits.requireHostArray(
                    shape: [events, EventGenerator.columnNames.count], elementSize: 4,
                    what: "a sample of \(events) events × \(EventGenerator.columnNames.count) columns as Float32")
            }
            try requireTableFormat(output, field: .output)
            if let testOutput { try requireTableFormat(testOutput, field: .testOutput) }
        }

        func run() throws {
            try reportingErrors {
                let outputURL = URL(fileURLWithPath: output)
                try checkOutputs { plan in
                    plan.output(output, option: "--output")
                    if split { plan.output(testOutput ?? defaultTestPath(output), option: "--test-output") }
                }
                let start = DispatchTime.now()
                let generator = EventGenerator()
                if split {
                    let testURL = URL(fileURLWithPath: testOutput ?? defaultTestPath(output))
                    // The thesis' proportions (2,275,902 of 3,625,136 for training) for any --events.
                    let trainingCount = min(
                        max(
                            1,
                            Int(
                                (Double(events) * Double(EventGenerator.thesisTrainingCount)
                                    / Double(EventGenerator.thesisEventCount)).rounded())), events - 1)
                    let (training, test) = generator.generateSplit(
                        events: events, trainingCount: trainingCount, seed: seed)
                    let generated = elapsed(since: start)
                    try writeTable(training, to: outputURL)
                    try writeTable(test, to: testURL)
                    summary(
                        "\(training.rowCount) training events → \(output), \(test.rowCount) test events → "
                            + "\(testURL.path)",
                        generated, elapsed(since: start))
                } else {
                    let table = generator.generate(events: events, seed: seed)
                    let generated = elapsed(since: start)
                    try writeTable(table, to: outputURL)
                    summary(
                        "\(table.rowCount) events × \(table.columnCount) columns → \(output)", generated,
                        elapsed(since: start))
                }
            }
        }

        private func summary(_ what: String, _ generated: Double, _ total: Double) {
            if !quiet {
                printError(what + String(format: " (generated in %.1f s, %.1f s with writing)", generated, total))
            }
        }
    }
}

/// `sample.csv` → `sample-test.csv`.
func defaultTestPath(_ path: String) -> String {
    let url = URL(fileURLWithPath: path)
    let ext = url.pathExtension
    let stem = url.deletingPathExtension().path
    return ext.isEmpty ? stem + "-test" : stem + "-test." + ext
}
