import Foundation
import XCTest

@testable import HRTrain

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// The HTML report: the SVG plotting layer (ticks, skipped points, well-formed XML), the page built from a
/// synthetic sample (every plot holds the evaluation's numbers, the CSV files agree), the page rendered by
/// headless Chromium, and `hrtrain report` end to end on a generated sample.
final class ReportTests: XCTestCase {
    // MARK: Plot layer

    /// CSV links of a report named like `run#3 ü&x.html` open the CSV files next to it: percent-encoded for the
    /// URL, then XML-escaped for the attribute.
    func testRelativeLinksArePercentEncodedAndEscaped() {
        XCTAssertEqual(relativeLink("run#3 ü&x_summary.csv"), "run%233%20%C3%BC&amp;x_summary.csv")
        XCTAssertEqual(relativeLink("a:b?c%d.csv"), "a%3Ab%3Fc%25d.csv")
        XCTAssertEqual(relativeLink("plain_summary.csv"), "plain_summary.csv")
    }

    func testNiceTicksOnLinearAndLogAxes() {
        XCTAssertEqual(niceTicks(lower: 0, upper: 97), [0, 20, 40, 60, 80, 100])
        let response = niceTicks(lower: 0.43, upper: 1.07)
        XCTAssertEqual(response.count, 5)
        for (a, b) in zip(response, [0.4, 0.6, 0.8, 1.0, 1.2]) { XCTAssertEqual(a, b, accuracy: 1e-12) }
        XCTAssertEqual(niceTicks(lower: -12.5, upper: 12.5, target: 4), [-20, -10, 0, 10, 20])
        let degenerate = niceTicks(lower: 5, upper: 5)
        XCTAssertTrue(degenerate.first! < 5 && degenerate.last! > 5, "a degenerate range is widened: \(degenerate)")
        let rates = logTicks(lower: 1e-4, upper: 1e-2)
        for (a, b) in zip(rates, [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2]) {
            XCTAssertEqual(a, b, accuracy: b * 1e-9)
        }
        XCTAssertEqual(logTicks(lower: 1, upper: 1e6), [1, 10, 100, 1000, 1e4, 1e5, 1e6])
        XCTAssertGreaterThanOrEqual(logTicks(lower: 0.31, upper: 0.52).count, 2, "a narrow log range still gets ticks")
    }

    func testPlotSkipsNonFinitePointsAndIsWellFormedXML() throws {
        var plot = SVGPlot(
            id: "t", title: "Loss & <things> “quoted”", x: PlotAxis("epoch"),
            y: PlotAxis("σ(u_{∥})", unit: "GeV²", scale: .log10))
        plot.series = [
            PlotSeries(
                name: "a < b",
                points: [
                    PlotPoint(x: 1, y: 2, error: 0.5), PlotPoint(x: 2, y: .nan),
                    PlotPoint(x: 3, y: 1.5, error: .infinity), PlotPoint(x: .infinity, y: 1), PlotPoint(x: 4, y: -1),
                ], style: 0),
            PlotSeries(name: "b", points: [PlotPoint(x: 1, y: 3), PlotPoint(x: 4, y: 0.9, error: 2)], style: 1),
        ]
        plot.referenceLines = [.horizontal(1)]
        let rendered = plot.render()
        XCTAssertEqual(rendered.drawnPoints, 4)
        XCTAssertEqual(rendered.skippedPoints, 3, "NaN, an infinite x and a negative value on a log axis")
        XCTAssertTrue(rendered.svg.contains("3 points not shown"))
        let document = try XMLDocumentSummary(rendered.svg)
        XCTAssertEqual(document.elements(class: "marker").count, 4)
        XCTAssertNil(document.attributeValues.first(where: holdsNonFiniteNumber))
        XCTAssertTrue(document.text.contains("Loss & <things> “quoted”"), "the title is escaped, not dropped")
        XCTAssertEqual(
            SVGWriter.rich("u_{∥} − 10^{−3} hr_all"),
            "u<tspan dy=\"0.3em\" font-size=\"75%\">∥</tspan><tspan dy=\"-0.3em\"> − 10</tspan>"
                + "<tspan dy=\"-0.45em\" font-size=\"75%\">−3</tspan><tspan dy=\"0.45em\"> hr_all</tspan>"
        )

        var histogram = SVGPlot(id: "h", title: "h", x: PlotAxis("x", unit: "GeV"), y: PlotAxis("density"))
        histogram.histograms = [HistogramSeries(name: "n", edges: [0, 1, 2, 3], values: [0.2, .nan, 0.5], style: 0)]
        let h = histogram.render()
        XCTAssertEqual(h.drawnPoints, 2)
        XCTAssertEqual(h.skippedPoints, 1)
        XCTAssertEqual(try XMLDocumentSummary(h.svg).elements(class: "hist").count, 1)

        var density = SVGPlot(id: "d", title: "d", x: PlotAxis("true"), y: PlotAxis("predicted"))
        density.density = DensityGrid(
            x: [0.5, 0.5, 1.5, 9], y: [0.5, 0.5, 1.5, 0.5], xEdges: [0, 1, 2], yEdges: [0, 1, 2])
        density.referenceLines = [.diagonal]
        XCTAssertEqual(density.density?.counts, [2, 0, 0, 1], "the event outside the edges is not counted")
        let d = density.render()
        XCTAssertEqual(d.drawnPoints, 2)
        XCTAssertEqual(try XMLDocumentSummary(d.svg).elements(class: "cell").count, 2)
    }

    // MARK: The page

    func testReportHoldsTheEvaluationInEveryPlotAndCSV() throws {
        let sample = SyntheticSample(events: 4000, seed: 11)
        let report = try sample.report()
        let expectedFigures =
            ["loss", "learning_rate"]
            + [
                "response", "resolution_parallel", "resolution_perpendicular", "corrected_resolution_parallel",
                "corrected_resolution_perpendicular",
            ].flatMap { q in
                ["truth", "mu", "npv"].map { "\(q)_vs_\($0)" }
            }
            + ["residual_x", "residual_y", "density_x", "density_y"]
        XCTAssertEqual(report.figures.map(\.id), expectedFigures)

        let page = report.html(csvStem: "report")
        XCTAssertFalse(page.contains("NaN"))
        XCTAssertFalse(page.contains("<script"), "no JavaScript")
        XCTAssertTrue(
            page.contains("<section id=\"verdict\">") && page.contains("σ(u⊥)/R ratio"), "the verdict tables")
        XCTAssertFalse(
            page.contains("http://")
                && page.replacingOccurrences(of: "http://www.w3.org/", with: "").contains("http://"), "nothing fetched")
        let document = try XMLDocumentSummary(page)
        XCTAssertNil(document.attributeValues.first(where: holdsNonFiniteNumber))
        XCTAssertEqual(document.elements(named: "svg").count, expectedFigures.count)

        let evaluation = report.input.evaluation
        for figure in report.figures {
            let inPlot = document.elements(inSVG: figure.id)
            let points =
                inPlot.filter { ["marker", "cell"].contains($0.attributes["class"]) }.count
                + inPlot.filter { $0.attributes["class"]?.hasPrefix("hist") == true }.compactMap {
                    $0.attributes["data-bins"].flatMap(Int.init)
                }.reduce(0, +)
            XCTAssertGreaterThan(points, 0, "\(figure.id) has no data points")
            XCTAssertEqual(points, figure.rendered.drawnPoints, figure.id)
            XCTAssertEqual(figure.rendered.skippedPoints, 0, figure.id)
        }

        // The response against |u_t|: one marker and one CSV row per filled bin and estimate, holding the
        // evaluation's numbers.
        let response = try XCTUnwrap(report.figures.first { $0.id == "response_vs_truth" })
        var expectedRows: [[String]] = []
        var notes: [String] = []
        for estimate in evaluation.estimates {
            for bin in estimate.binned[0].bins where bin.count >= 2 {
                expectedRows.append([
                    estimate.name, csvNumber(bin.lowerEdge), csvNumber(bin.upperEdge), "\(bin.count)",
                    csvNumber(bin.meanTruthMagnitude), csvNumber(bin.response), csvNumber(bin.responseError),
                ])
                notes.append("\(bin.count) events: \(plainNumber(bin.response)) ± \(plainNumber(bin.responseError))")
            }
        }
        XCTAssertEqual(response.csv.rows, expectedRows)
        XCTAssertEqual(
            expectedRows.count,
            document.elements(inSVG: "response_vs_truth").filter { $0.attributes["class"] == "marker" }.count)
        let tooltips = document.titles(inSVG: "response_vs_truth")
        for note in notes { XCTAssertTrue(tooltips.contains { $0.hasSuffix(note) }, "no marker for \(note)") }
        XCTAssertEqual(evaluation.estimates.map(\.name), ["network", "hr_charged", "hr_neutral", "hr_all"])
        let network = try XCTUnwrap(evaluation.estimates[0].summary)
        let charged = try XCTUnwrap(evaluation.estimates[1].summary)
        XCTAssertEqual(network.response, 1, accuracy: 0.05, "the synthetic network is unbiased")
        XCTAssertEqual(charged.response, 0.6, accuracy: 0.05, "the synthetic charged recoil has a response of 0.6")

        // The files: the page and one CSV per figure plus the summary, with the expected rows.
        let directory = try temporaryDirectory(self)
        let url = directory.appendingPathComponent("report.html")
        try report.write(to: url)
        XCTAssertEqual(try String(contentsOf: url, encoding: .utf8), page)
        for id in expectedFigures + ["summary"] {
            XCTAssertTrue(
                FileManager.default.fileExists(atPath: directory.appendingPathComponent("report_\(id).csv").path), id)
        }
        let lines = { (id: String) in
            try String(contentsOf: directory.appendingPathComponent("report_\(id).csv"), encoding: .utf8).split(
                separator: "\n"
            ).map(String.init)
        }
        XCTAssertEqual(
            try lines("response_vs_truth"),
            [response.csv.header.joined(separator: ",")] + expectedRows.map { $0.joined(separator: ",") })
        XCTAssertEqual(try lines("loss").count, 1 + sample.history.count)
        XCTAssertEqual(try lines("residual_x").count, 1 + 4 * 80)
        let summary = try lines("summary")
        XCTAssertEqual(summary.count, 1 + 4)
        XCTAssertTrue(summary[1].hasPrefix("network,truth_hr_x truth_hr_y,"))
        XCTAssertTrue(
            try lines("resolution_parallel_vs_npv").dropFirst().allSatisfy { $0.split(separator: ",").count == 8 })
    }

    func testReportWithoutHistorySaysSo() throws {
        var sample = SyntheticSample(events: 600, seed: 5)
        sample.history = []
        let report = try sample.report()
        XCTAssertFalse(report.figures.contains { $0.id == "loss" })
        let page = report.html(csvStem: "r")
        XCTAssertTrue(page.contains("No training history"))
        _ = try XMLDocumentSummary(page)
    }

    func testMetricsFileIsRead() throws {
        let directory = try temporaryDirectory(self)
        let url = directory.appendingPathComponent("metrics.jsonl")
        try """
        {"epoch":1,"events_per_second":1000,"learning_rate":0.001,"seconds":2,"train_loss":50.5,"val_loss":48}
        {"epoch":2,"events_per_second":1100,"learning_rate":0.0005,"seconds":1.9,"train_loss":40.25}

        """.write(to: url, atomically: true, encoding: .utf8)
        let history = try readMetrics(from: url)
        XCTAssertEqual(history.map(\.epoch), [1, 2])
        XCTAssertEqual(history[0].validationLoss, 48)
        XCTAssertNil(history[1].validationLoss)
        XCTAssertEqual(history[1].learningRate, 0.0005)
        try "{\"epoch\": 1}\n".write(to: url, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try readMetrics(from: url)) { XCTAssertTrue("\($0)".contains("line 1")) }
    }

    // MARK: Chromium

    func testChromiumRendersThePageWithoutErrors() throws {
        guard let chromium = ["chromium", "chromium-browser"].lazy.compactMap(executableOnPath).first else {
            throw XCTSkip("chromium is not installed (Debian: apt-get install chromium); the rendering test needs it")
        }
        let directory = try temporaryDirectory(self)
        let url = directory.appendingPathComponent("report.html")
        let report = try SyntheticSample(events: 3000, seed: 7).report()
        try report.write(to: url)

        let screenshot = directory.appendingPathComponent("page.png")
        let common = [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--hide-scrollbars", "--user-data-dir=\(directory.appendingPathComponent("profile").path)",
        ]
        let shot = try runProcess(
            chromium,
            common + [
                "--enable-logging=stderr", "--v=0", "--window-size=1280,2000", "--screenshot=\(screenshot.path)",
                url.absoluteString,
            ])
        XCTAssertEqual(shot.status, 0, shot.err)
        let consoleErrors = shot.err.split(separator: "\n").filter { $0.contains("CONSOLE") || $0.contains("Uncaught") }
        XCTAssertEqual(consoleErrors, [], "console messages while loading the page")

        let png = try Data(contentsOf: screenshot)
        XCTAssertGreaterThan(png.count, 50_000, "a screenshot of a page of plots is not that small")
        if let python = executableOnPath("python3") {
            let stats = try runProcess(python, ["-c", pngStatisticsScript, screenshot.path])
            XCTAssertEqual(stats.status, 0, stats.err)
            let numbers = stats.out.split(separator: " ").compactMap {
                Double($0.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            XCTAssertEqual(numbers.count, 2, stats.out)
            if numbers.count == 2 {
                XCTAssertGreaterThan(numbers[0], 64, "distinct colours: the page is blank or nearly so")
                XCTAssertGreaterThan(numbers[1], 0.02, "fraction of pixels unlike the background")
            }
        }

        let dom = try runProcess(chromium, common + ["--dump-dom", url.absoluteString])
        XCTAssertEqual(dom.status, 0, dom.err)
        XCTAssertEqual(
            dom.out.components(separatedBy: "<svg").count - 1, report.figures.count, "the DOM holds every plot")
        XCTAssertTrue(dom.out.contains("Provenance"))
    }

    // MARK: End to end

    func testReportCommandOnAGeneratedSample() throws {
        let directory = try temporaryDirectory(self)
        let data = directory.appendingPathComponent("events.csv").path
        let model = directory.appendingPathComponent("model.safetensors").path
        let metrics = directory.appendingPathComponent("metrics.jsonl").path
        let output = directory.appendingPathComponent("page.html").path
        var r = try runHRTrain(["generate", "--events", "2000", "--seed", "3", "--output", data, "--quiet"])
        XCTAssertEqual(r.status, 0, r.err)
        r = try runHRTrain(["init", "--out", model, "--hidden", "16,16", "--scaler-from", data])
        XCTAssertEqual(r.status, 0, r.err)
        let line =
            "{\"epoch\":1,\"events_per_second\":10,\"learning_rate\":0.001,\"seconds\":1,"
            + "\"train_loss\":300,\"val_loss\":310}\n"
        try line.write(toFile: metrics, atomically: true, encoding: .utf8)
        r = try runHRTrain([
            "report", "--model", model, "--data", data, "--backend", "reference", "--metrics", metrics, "--compare",
            "hr_all_x,hr_charged_y", "--output", output, "--title", "Untrained <test>",
        ])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("report written to"), r.out)
        let page = try String(contentsOfFile: output, encoding: .utf8)
        let document = try XMLDocumentSummary(page)
        XCTAssertTrue(document.text.contains("Untrained <test>"))
        for name in ["raw charged", "raw neutral", "raw all", "hr_all_x,hr_charged_y", "untrained (hrtrain init)"] {
            XCTAssertTrue(document.text.contains(name), name)
        }
        XCTAssertGreaterThan(document.elements(class: "marker").count, 50)
        let summary = try String(
            contentsOfFile: directory.appendingPathComponent("page_summary.csv").path, encoding: .utf8)
        XCTAssertEqual(summary.split(separator: "\n").count, 1 + 5)

        r = try runHRTrain([
            "report", "--model", model, "--data", data, "--backend", "reference", "--output",
            directory.appendingPathComponent("page.pdf").path,
        ])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains(".html"), r.err)
        r = try runHRTrain([
            "report", "--model", model, "--data", data, "--backend", "reference", "--compare", "hr_all_x", "--output",
            output,
        ])
        XCTAssertNotEqual(r.status, 0)
    }
}

// MARK: - Helpers

/// A synthetic W→μν-like sample: truth recoil, an unbiased "network" with a 5 GeV resolution, raw charged,
/// neutral and all recoils with responses 0.6, 0.3 and 0.9, pile-up μ and an integer N_PV.
private struct SyntheticSample {
    var table: Table
    var predictions: [Float]
    var history: [EpochRecord]

    init(events: Int, seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var columns: [String: [Float]] = [:]
        let names = [
            "truth_hr_x", "truth_hr_y", "hr_charged_x", "hr_charged_y", "hr_neutral_x", "hr_neutral_y", "hr_all_x",
            "hr_all_y", "mu", "n_pv", "feature",
        ]
        for name in names { columns[name] = [] }
        predictions = []
        for _ in 0..<events {
            let magnitude = 40 * abs(rng.normal()) + 2 * abs(rng.normal())
            let phi = 2 * Double.pi * (rng.normal() * 0.29 + 0.5)
            let (tx, ty) = (magnitude * cos(phi), magnitude * sin(phi))
            let mu = 35 + 10 * rng.normal()
            let noise = 4 + 0.1 * mu
            columns["truth_hr_x"]!.append(Float(tx))
            columns["truth_hr_y"]!.append(Float(ty))
            for (name, response) in [("hr_charged", 0.6), ("hr_neutral", 0.3), ("hr_all", 0.9)] {
                columns["\(name)_x"]!.append(Float(response * tx + noise * rng.normal()))
                columns["\(name)_y"]!.append(Float(response * ty + noise * rng.normal()))
            }
            columns["mu"]!.append(Float(mu))
            columns["n_pv"]!.append(Float(max(0, (0.6 * mu + 3 * rng.normal()).rounded())))
            columns["feature"]!.append(Float(rng.normal()))
            predictions += [Float(tx + 5 * rng.normal()), Float(ty + 5 * rng.normal())]
        }
        var values: [Float] = []
        for row in 0..<events { for name in names { values.append(columns[name]![row]) } }
        table = Table(columnNames: names, rowCount: events, values: values)
        history = (1...8).map { epoch in
            EpochRecord(
                epoch: epoch, trainLoss: 300 / Double(epoch), validationLoss: 320 / Double(epoch) + 5,
                learningRate: epoch > 5 ? 1e-4 : 1e-3, seconds: 1.5, eventsPerSecond: 2e6)
        }
    }

    func report() throws -> RecoilReport {
        let truthX = table.column(table.columnIndex("truth_hr_x")!)
        let truthY = table.column(table.columnIndex("truth_hr_y")!)
        let comparisons = [
            ["hr_charged_x", "hr_charged_y"], ["hr_neutral_x", "hr_neutral_y"], ["hr_all_x", "hr_all_y"],
        ]
        let evaluation = try Evaluation(
            predictions: predictions, table: table, targetNames: ["truth_hr_x", "truth_hr_y"], comparisons: comparisons,
            model: "model.safetensors", data: "events.csv", backend: "synthetic",
            binnings: RecoilReport.binnings(table: table, truthX: truthX, truthY: truthY))
        let network = RecoilComponents(
            name: "network", x: stride(from: 0, to: predictions.count, by: 2).map { predictions[$0] },
            y: stride(from: 1, to: predictions.count, by: 2).map { predictions[$0] })
        let raw = comparisons.map {
            RecoilComponents(
                name: Evaluation.recoilName($0), x: table.column(table.columnIndex($0[0])!),
                y: table.column(table.columnIndex($0[1])!))
        }
        let input = ReportInput(
            title: "Synthetic report", history: history, lossUnit: "GeV²", evaluation: evaluation, truthX: truthX,
            truthY: truthY,
            components: [network] + raw,
            provenance: [("data file", "events.csv"), ("note", "a <synthetic> & escaped value")])
        return RecoilReport(input)
    }
}

/// The elements of an XML document (attributes, enclosing `<svg>` id, text of `<title>`s) and all its text;
/// parsing fails the test's `try` unless the document is well-formed.
private final class XMLDocumentSummary: NSObject, XMLParserDelegate {
    struct Element {
        var name: String
        var attributes: [String: String]
        var svg: String?
        var title: String = ""
    }

    private(set) var all: [Element] = []
    private(set) var text = ""
    private var stack: [Int] = []
    private var svgStack: [String] = []

    init(_ xml: String) throws {
        super.init()
        let parser = XMLParser(data: Data(xml.utf8))
        parser.delegate = self
        guard parser.parse() else {
            throw NSError(
                domain: "XML", code: 1,
                userInfo: [
                    NSLocalizedDescriptionKey:
                        "not well-formed XML at line \(parser.lineNumber): \(parser.parserError.map { "\($0)" } ?? "?")"
                ])
        }
    }

    var attributeValues: [String] { all.flatMap { $0.attributes.values } }
    func elements(named name: String) -> [Element] { all.filter { $0.name == name } }
    func elements(class name: String) -> [Element] {
        all.filter { $0.attributes["class"]?.split(separator: " ").contains(Substring(name)) == true }
    }
    func elements(inSVG id: String) -> [Element] { all.filter { $0.svg == id } }
    /// The tooltips of the markers of a plot.
    func titles(inSVG id: String) -> [String] {
        all.filter { $0.svg == id && $0.attributes["class"] == "marker" }.map(\.title)
    }

    func parser(
        _ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
        attributes: [String: String] = [:]
    ) {
        if name == "svg" { svgStack.append(attributes["id"] ?? "") }
        all.append(Element(name: name, attributes: attributes, svg: svgStack.last))
        stack.append(all.count - 1)
    }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        let index = stack.removeLast()
        if name == "svg" { svgStack.removeLast() }
        if name == "title", let parent = stack.last { all[parent].title = all[index].title }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        text += string
        if let current = stack.last, all[current].name == "title" { all[current].title += string }
    }
}

/// Whether text holds `nan` or `inf` as a word (any case), as a non-finite number would be written.
private func holdsNonFiniteNumber(_ text: String) -> Bool {
    text.range(of: "(^|[^A-Za-z])(nan|inf|infinity)([^A-Za-z]|$)", options: [.regularExpression, .caseInsensitive])
        != nil
}

/// The full path of `name` on $PATH, or nil.
private func executableOnPath(_ name: String) -> String? {
    for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}

/// Runs a program (killed after `timeout` seconds); returns (exit status, stdout, stderr).
private func runProcess(_ path: String, _ arguments: [String], timeout: TimeInterval = 180) throws -> (
    status: Int32, out: String, err: String
) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    // stderr goes to a file, so that neither pipe can fill up and block the process while the other is read.
    let errURL = FileManager.default.temporaryDirectory.appendingPathComponent("hrtrain-stderr-\(UUID().uuidString)")
    _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)  // FileHandle below throws if not
    defer { try? FileManager.default.removeItem(at: errURL) }
    let errHandle = try FileHandle(forWritingTo: errURL)
    defer { try? errHandle.close() }
    let out = Pipe()
    process.standardOutput = out
    process.standardError = errHandle
    try process.run()
    let deadline = DispatchWorkItem { if process.isRunning { process.terminate() } }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: deadline)
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    deadline.cancel()
    let errText = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self), errText)
}

/// Decodes an 8-bit, non-interlaced RGB(A) PNG with Python's zlib and prints the number of distinct colours
/// and the fraction of pixels that differ from the top-left (background) pixel.
private let pngStatisticsScript = #"""
    import struct, sys, zlib
    data = open(sys.argv[1], "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert depth == 8 and colour in (2, 6) and interlace == 0, "unsupported PNG layout"
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    previous = bytearray(stride)
    colours, differing, background = set(), 0, None
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            if kind == 1: line[i] = (line[i] + a) & 255
            elif kind == 2: line[i] = (line[i] + b) & 255
            elif kind == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        previous = line
        if y % 4 == 0:
            for x in range(0, width, 2):
                pixel = bytes(line[x * bpp:x * bpp + 3])
                if background is None: background = pixel
                colours.add(pixel)
                differing += pixel != background
    print(len(colours), differing / ((height + 3) // 4 * ((width + 1) // 2)))
    """#
