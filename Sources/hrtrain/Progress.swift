import Foundation
import HRTrain

/// Where messages go: results to stdout; progress, warnings and details to stderr.
struct Log {
    var quiet: Bool
    var verbose: Bool
    /// Whether stderr is a terminal (then progress is a bar redrawn in place).
    var isTerminal = isatty(fileno(stderr)) != 0

    func info(_ text: String) { if !quiet { printError(text) } }
    func detail(_ text: String) { if verbose { printError(text) } }
    func warn(_ text: String) { printError("warning: " + text) }
    func result(_ text: String) { print(text) }
}

/// The progress bar on a terminal, one line per epoch otherwise.
final class ProgressPrinter: TrainingObserver {
    let log: Log
    let epochs: Int
    let batchSize: Int
    let rows: Int
    /// Reads the latest step loss (waits for the device, so it is called at most every quarter second).
    var trainer: (() throws -> Double?)?
    private var epochStart = DispatchTime.now()
    private var lastDraw = DispatchTime.now()

    init(log: Log, epochs: Int, batchSize: Int, rows: Int) {
        self.log = log
        self.epochs = epochs
        self.batchSize = batchSize
        self.rows = rows
    }

    func didQueueStep(epoch: Int, step: Int, of steps: Int) {
        if step == 0 { epochStart = DispatchTime.now() }
        guard log.isTerminal, !log.quiet, elapsed(since: lastDraw) > 0.25 || step == steps - 1 else { return }
        lastDraw = DispatchTime.now()
        let loss = (try? trainer?()) ?? nil
        let seconds = elapsed(since: epochStart)
        let done = min((step + 1) * batchSize, rows)
        let rate = Double(done) / max(seconds, 1e-9)
        let eta = Double(rows - done) / max(rate, 1e-9)
        let width = 24
        let filled = Int(Double(width) * Double(step + 1) / Double(steps))
        let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
        let text =
            "epoch \(epoch)/\(epochs) [\(bar)] \(step + 1)/\(steps)  loss "
            + "\(loss.map { String(format: "%.5g", $0) } ?? "-")  \(Int(rate)) ev/s  ETA \(Int(eta.rounded())) s"
        FileHandle.standardError.write(Data(("\r" + text + "\u{1B}[K").utf8))
    }

    func didFinishEpoch(_ r: EpochRecord, state: TrainerState) {
        if log.isTerminal && !log.quiet { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        let val = r.validationLoss.map { String(format: "  val_loss %.6g", $0) } ?? ""
        log.info(
            String(format: "epoch %d/%d  loss %.6g", r.epoch, epochs, r.trainLoss) + val
                + String(format: "  lr %.3g  %.1f s  %.0f ev/s", r.learningRate, r.seconds, r.eventsPerSecond))
    }
}
