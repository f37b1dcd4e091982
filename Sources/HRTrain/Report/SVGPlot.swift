import Foundation

// A small SVG plotting layer for the report: axes with nice linear or log10 ticks, titles, legends, series of
// markers with error bars, step histograms and 2-D density maps. Text and axes use `currentColor`, so a plot
// takes the colours of the page around it (light, dark or print); series colours come from the Okabe–Ito
// palette as presentation attributes that the page's style sheet may override for a dark background.
// Non-finite values never reach an attribute: such points are skipped and counted, and the plot says so.

/// How an axis maps values to positions.
public enum AxisScale: Sendable, Equatable {
    case linear
    /// Logarithmic; values ≤ 0 cannot be shown.
    case log10
}

/// One axis of a plot: its quantity, unit and scale.
public struct PlotAxis: Sendable, Equatable {
    /// The quantity, with `_{…}` for subscripts and `^{…}` for superscripts.
    public var label: String
    /// The unit (`GeV`), shown in brackets after the label; nil for dimensionless quantities.
    public var unit: String?
    public var scale: AxisScale
    /// A fixed range; nil to fit the data.
    public var range: ClosedRange<Double>?
    /// The quantity is a count (epochs, vertices): ticks at whole numbers only.
    public var integer: Bool

    /// Creates an axis.
    public init(
        _ label: String, unit: String? = nil, scale: AxisScale = .linear, range: ClosedRange<Double>? = nil,
        integer: Bool = false
    ) {
        self.label = label
        self.unit = unit
        self.scale = scale
        self.range = range
        self.integer = integer
    }

    /// The label with its unit: `|u_{t}| [GeV]`.
    public var title: String { unit.map { "\(label) [\($0)]" } ?? label }
}

/// One point of a series, with an optional symmetric vertical error and a tooltip.
public struct PlotPoint: Sendable, Equatable {
    public var x: Double
    public var y: Double
    /// The vertical error (half the bar's length); nil for none.
    public var error: Double?
    /// Shown when the pointer rests on the marker.
    public var note: String?

    /// Creates a point.
    public init(x: Double, y: Double, error: Double? = nil, note: String? = nil) {
        self.x = x
        self.y = y
        self.error = error
        self.note = note
    }
}

/// A named series drawn as markers (each series its own shape) joined by lines, with error bars.
public struct PlotSeries: Sendable, Equatable {
    public var name: String
    public var points: [PlotPoint]
    /// Index into the palette (and the marker shapes).
    public var style: Int
    /// Join the markers with a line.
    public var connected: Bool

    /// Creates a series.
    public init(name: String, points: [PlotPoint], style: Int, connected: Bool = true) {
        self.name = name
        self.points = points
        self.style = style
        self.connected = connected
    }
}

/// A named histogram drawn as a step line: `values[i]` over `[edges[i], edges[i+1])`.
public struct HistogramSeries: Sendable, Equatable {
    public var name: String
    public var edges: [Double]
    public var values: [Double]
    /// Index into the palette.
    public var style: Int

    /// Creates a histogram; `edges` has one element more than `values`.
    public init(name: String, edges: [Double], values: [Double], style: Int) {
        precondition(
            edges.count == values.count + 1, "HistogramSeries: \(edges.count) edges for \(values.count) values")
        self.name = name
        self.edges = edges
        self.values = values
        self.style = style
    }
}

/// Binned counts over a 2-D grid, drawn as a heat map with a logarithmic colour scale and a colour bar.
public struct DensityGrid: Sendable, Equatable {
    public var xEdges: [Double]
    public var yEdges: [Double]
    /// Row-major counts: `counts[j * (xEdges.count - 1) + i]` for x bin i and y bin j.
    public var counts: [Int]

    /// Creates a grid.
    public init(xEdges: [Double], yEdges: [Double], counts: [Int]) {
        precondition(
            counts.count == (xEdges.count - 1) * (yEdges.count - 1), "DensityGrid: counts do not match the edges")
        self.xEdges = xEdges
        self.yEdges = yEdges
        self.counts = counts
    }

    /// Counts the pairs `(x[k], y[k])` falling inside the edges (equally spaced edges are not required).
    public init(x: [Float], y: [Float], xEdges: [Double], yEdges: [Double]) {
        let nx = xEdges.count - 1
        let ny = yEdges.count - 1
        var counts = [Int](repeating: 0, count: nx * ny)
        for (a, b) in zip(x, y) {
            if let i = binIndex(Double(a), edges: xEdges), let j = binIndex(Double(b), edges: yEdges) {
                counts[j * nx + i] += 1
            }
        }
        self.init(xEdges: xEdges, yEdges: yEdges, counts: counts)
    }
}

/// A guide line drawn behind the data.
public enum ReferenceLine: Sendable, Equatable {
    /// y = value across the plot (e.g. a response of 1).
    case horizontal(Double)
    /// y = x.
    case diagonal
}

/// What a rendered plot holds: its SVG element and how many data points were drawn or skipped.
public struct RenderedPlot: Sendable, Equatable {
    /// The `<svg>` element, well-formed XML.
    public var svg: String
    /// Markers, histogram bins with a value, or heat-map cells drawn.
    public var drawnPoints: Int
    /// Points not drawn: NaN or ±Inf, or ≤ 0 on a logarithmic axis.
    public var skippedPoints: Int
}

/// A plot: title, axes, and series, histograms or a density map.
public struct SVGPlot: Sendable, Equatable {
    /// Unique within a page: the prefix of the SVG element ids.
    public var id: String
    /// The heading, with `_{…}` for subscripts and `^{…}` for superscripts.
    public var title: String
    public var x: PlotAxis
    public var y: PlotAxis
    public var series: [PlotSeries] = []
    public var histograms: [HistogramSeries] = []
    public var density: DensityGrid?
    public var referenceLines: [ReferenceLine] = []
    /// Size of the view box.
    public var width = 480.0
    public var height = 360.0

    /// Creates an empty plot; add series, histograms or a density grid.
    public init(id: String, title: String, x: PlotAxis, y: PlotAxis) {
        self.id = id
        self.title = title
        self.x = x
        self.y = y
    }

    /// The palette: Okabe–Ito (colour-blind safe), as used on a light background.
    public static let colours = ["#D55E00", "#0072B2", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#6F6F6F"]
    /// The same palette on a dark background: the dark blue becomes sky blue, sky blue paler, grey lighter.
    public static let darkColours = ["#E8731F", "#56B4E9", "#12B886", "#E69F00", "#D98CB5", "#A6D8F5", "#B0B0B0"]

    /// The CSS the page needs for plots: fonts, and the palette for light, dark and print.
    public static var styleSheet: String {
        var css = """
            svg.plot { display: block; width: 100%; height: auto; font-family: "DejaVu Sans", "Helvetica Neue", Arial, \
            sans-serif; font-size: 14px; }
            svg.plot text { fill: currentColor; }
            svg.plot .title { font-size: 16px; font-weight: bold; }
            svg.plot .legend text { font-size: 13px; }
            svg.plot .note { font-size: 11px; font-style: italic; }

            """
        func palette(_ colours: [String], indent: String) -> String {
            colours.indices.map { "\(indent)svg.plot .c\($0), .swatch.c\($0) { color: \(colours[$0]); }" }.joined(
                separator: "\n") + "\n"
        }
        css += palette(colours, indent: "")
        css += "@media (prefers-color-scheme: dark) {\n" + palette(darkColours, indent: "  ") + "}\n"
        css += "@media print {\n" + palette(colours, indent: "  ") + "}\n"
        return css
    }

    // MARK: Rendering

    /// Renders the plot as an `<svg>` element.
    public func render() -> RenderedPlot {
        var out = SVGWriter()
        var drawn = 0
        var skipped = 0
        let legend = legendEntries()
        let legendLayout = LegendLayout(entries: legend.map(\.name), width: width - 24)
        let top = 34 + legendLayout.height
        let right = density == nil ? 16.0 : 86.0
        let frame = Frame(left: 80, top: top, right: width - right, bottom: height - 50)
        let (xRange, yRange) = dataRanges()
        let xAxis = AxisLayout(axis: x, data: xRange, extent: (frame.left, frame.right))
        let yAxis = AxisLayout(axis: y, data: yRange, extent: (frame.bottom, frame.top))
        let clip = "\(id)-clip"

        out.open(
            "svg",
            [
                "xmlns": "http://www.w3.org/2000/svg", "class": "plot", "id": id,
                "viewBox": "0 0 \(svgNumber(width)) \(svgNumber(height))", "role": "img",
                "aria-labelledby": "\(id)-title",
            ])
        out.element("title", ["id": "\(id)-title"], text: plainText(title))
        out.open("defs")
        out.open("clipPath", ["id": clip])
        out.element(
            "rect",
            [
                "x": svgNumber(frame.left), "y": svgNumber(frame.top), "width": svgNumber(frame.width),
                "height": svgNumber(frame.height),
            ])
        out.close("clipPath")
        out.close("defs")
        out.text(title, x: width / 2, y: 20, attributes: ["class": "title", "text-anchor": "middle"])
        drawLegend(legend, layout: legendLayout, into: &out)
        drawGrid(xAxis, yAxis, frame: frame, into: &out)

        out.open("g", ["clip-path": "url(#\(clip))"])
        if let density {
            let result = drawDensity(density, xAxis, yAxis, into: &out)
            drawn += result.drawn
            skipped += result.skipped
        }
        drawReferenceLines(xAxis, yAxis, frame: frame, into: &out)
        for h in histograms {
            let result = drawHistogram(h, xAxis, yAxis, frame: frame, into: &out)
            drawn += result.drawn
            skipped += result.skipped
        }
        for s in series {
            let result = drawSeries(s, xAxis, yAxis, frame: frame, into: &out)
            drawn += result.drawn
            skipped += result.skipped
        }
        out.close("g")

        drawAxes(xAxis, yAxis, frame: frame, into: &out)
        if let density { drawColourBar(density, frame: frame, into: &out) }
        if drawn == 0 {
            out.text(
                "no data", x: (frame.left + frame.right) / 2, y: (frame.top + frame.bottom) / 2,
                attributes: ["class": "note", "text-anchor": "middle"])
        }
        if skipped > 0 {
            out.text(
                "\(skipped) point\(skipped == 1 ? "" : "s") not shown (NaN, ±Inf, or ≤ 0 on a log axis)", x: 6,
                y: height - 6, attributes: ["class": "note"])
        }
        out.close("svg")
        return RenderedPlot(svg: out.text, drawnPoints: drawn, skippedPoints: skipped)
    }

    /// The plot area in view-box coordinates (y grows downwards).
    private struct Frame {
        var left, top, right, bottom: Double
        var width: Double { right - left }
        var height: Double { bottom - top }
    }

    /// The data extent along x and y of everything drawn (finite values only; > 0 on log axes).
    private func dataRanges() -> (x: (Double, Double)?, y: (Double, Double)?) {
        var xs = Extent(scale: x.scale)
        var ys = Extent(scale: y.scale)
        for s in series {
            for p in s.points where xs.accepts(p.x) && ys.accepts(p.y) {
                xs.add(p.x)
                ys.add(p.y)
                if let e = p.error, e.isFinite {
                    ys.add(p.y - e)
                    ys.add(p.y + e)
                }
            }
        }
        for h in histograms {
            xs.add(h.edges.first!)
            xs.add(h.edges.last!)
            for v in h.values { ys.add(v) }
            if y.scale == .linear { ys.add(0) }
        }
        if let d = density {
            xs.add(d.xEdges.first!)
            xs.add(d.xEdges.last!)
            ys.add(d.yEdges.first!)
            ys.add(d.yEdges.last!)
        }
        for case .horizontal(let v) in referenceLines where ys.range != nil { ys.add(v) }
        return (xs.range, ys.range)
    }

    /// One legend entry: a series (line and marker) or a histogram (line only).
    private struct LegendEntry {
        var name: String
        var style: Int
        var marker: Bool
    }

    private func legendEntries() -> [LegendEntry] {
        series.map { LegendEntry(name: $0.name, style: $0.style, marker: true) }
            + histograms.map { LegendEntry(name: $0.name, style: $0.style, marker: false) }
    }

    private func drawLegend(_ entries: [LegendEntry], layout: LegendLayout, into out: inout SVGWriter) {
        guard !entries.isEmpty else { return }
        out.open("g", ["class": "legend"])
        for (entry, position) in zip(entries, layout.positions) {
            let x0 = 12 + position.x
            let y0 = 34 + position.y + 8
            out.open("g", styleAttributes(entry.style))
            out.element(
                "line",
                [
                    "x1": svgNumber(x0), "y1": svgNumber(y0), "x2": svgNumber(x0 + 20), "y2": svgNumber(y0),
                    "stroke": "currentColor", "stroke-width": "2",
                ])
            if entry.marker {
                out.element("path", ["d": markerPath(style: entry.style, x: x0 + 10, y: y0), "fill": "currentColor"])
            }
            out.close("g")
            out.text(entry.name, x: x0 + 26, y: y0 + 4.5, attributes: [:])
        }
        out.close("g")
    }

    private func drawGrid(_ xAxis: AxisLayout, _ yAxis: AxisLayout, frame: Frame, into out: inout SVGWriter) {
        out.open("g", ["class": "grid", "stroke": "currentColor", "stroke-opacity": "0.14", "stroke-width": "1"])
        for t in xAxis.ticks {
            out.element(
                "line",
                [
                    "x1": svgNumber(t.position), "y1": svgNumber(frame.top), "x2": svgNumber(t.position),
                    "y2": svgNumber(frame.bottom),
                ])
        }
        for t in yAxis.ticks {
            out.element(
                "line",
                [
                    "x1": svgNumber(frame.left), "y1": svgNumber(t.position), "x2": svgNumber(frame.right),
                    "y2": svgNumber(t.position),
                ])
        }
        out.close("g")
    }

    private func drawAxes(_ xAxis: AxisLayout, _ yAxis: AxisLayout, frame: Frame, into out: inout SVGWriter) {
        out.open("g", ["class": "axes"])
        out.element(
            "rect",
            [
                "x": svgNumber(frame.left), "y": svgNumber(frame.top), "width": svgNumber(frame.width),
                "height": svgNumber(frame.height), "fill": "none", "stroke": "currentColor", "stroke-width": "1",
            ])
        var ticks = ""
        for t in xAxis.ticks { ticks += "M\(svgNumber(t.position)) \(svgNumber(frame.bottom))v-6" }
        for t in yAxis.ticks { ticks += "M\(svgNumber(frame.left)) \(svgNumber(t.position))h6" }
        if !ticks.isEmpty { out.element("path", ["d": ticks, "stroke": "currentColor", "stroke-width": "1"]) }
        for t in xAxis.ticks {
            out.text(t.label, x: t.position, y: frame.bottom + 18, attributes: ["text-anchor": "middle"])
        }
        for t in yAxis.ticks {
            out.text(t.label, x: frame.left - 6, y: t.position + 4.5, attributes: ["text-anchor": "end"])
        }
        out.text(
            x.title, x: (frame.left + frame.right) / 2, y: frame.bottom + 40,
            attributes: ["text-anchor": "middle", "class": "axis-title"])
        let yMiddle = (frame.top + frame.bottom) / 2
        out.text(
            y.title, x: 0, y: 0,
            attributes: [
                "text-anchor": "middle", "class": "axis-title",
                "transform": "translate(15 \(svgNumber(yMiddle))) rotate(-90)",
            ])
        out.close("g")
    }

    private func drawReferenceLines(_ xAxis: AxisLayout, _ yAxis: AxisLayout, frame: Frame, into out: inout SVGWriter) {
        let attributes = [
            "stroke": "currentColor", "stroke-opacity": "0.6", "stroke-width": "1", "stroke-dasharray": "5 4",
            "class": "reference",
        ]
        for line in referenceLines {
            switch line {
            case .horizontal(let v):
                guard let py = yAxis.position(v) else { continue }
                out.element(
                    "line",
                    attributes.merging([
                        "x1": svgNumber(frame.left), "y1": svgNumber(py), "x2": svgNumber(frame.right),
                        "y2": svgNumber(py),
                    ]) { $1 })
            case .diagonal:
                // Sampled, so that it is the line y = x on any pair of scales.
                let lower = max(xAxis.lower, yAxis.lower)
                let upper = min(xAxis.upper, yAxis.upper)
                guard lower < upper else { continue }
                let points = (0...32).compactMap { k -> String? in
                    let v =
                        xAxis.scale == .log10
                        ? lower * pow(upper / lower, Double(k) / 32) : lower + (upper - lower) * Double(k) / 32
                    guard let px = xAxis.position(v), let py = yAxis.position(v) else { return nil }
                    return "\(svgNumber(px)),\(svgNumber(py))"
                }
                out.element(
                    "polyline", attributes.merging(["points": points.joined(separator: " "), "fill": "none"]) { $1 })
            }
        }
    }

    private func drawSeries(
        _ s: PlotSeries, _ xAxis: AxisLayout, _ yAxis: AxisLayout, frame: Frame, into out: inout SVGWriter
    ) -> (drawn: Int, skipped: Int) {
        var visible: [(x: Double, y: Double, point: PlotPoint)] = []
        for p in s.points {
            if let px = xAxis.position(p.x), let py = yAxis.position(p.y) { visible.append((px, py, p)) }
        }
        out.open(
            "g",
            styleAttributes(s.style).merging(["class": "series c\(s.style % Self.colours.count)", "data-name": s.name])
            { $1 })
        if s.connected && visible.count > 1 {
            let points = visible.map { "\(svgNumber($0.x)),\(svgNumber($0.y))" }.joined(separator: " ")
            out.element(
                "polyline",
                [
                    "points": points, "fill": "none", "stroke": "currentColor", "stroke-width": "1.5",
                    "stroke-opacity": "0.8",
                ])
        }
        var bars = ""
        for v in visible {
            guard let e = v.point.error, e.isFinite, e > 0 else { continue }
            let top = yAxis.position(v.point.y + e) ?? frame.top
            let bottom = yAxis.position(v.point.y - e) ?? frame.bottom  // below zero on a log axis: to the frame
            bars += "M\(svgNumber(v.x)) \(svgNumber(bottom))V\(svgNumber(top))"
            bars += "M\(svgNumber(v.x - 3)) \(svgNumber(bottom))h6M\(svgNumber(v.x - 3)) \(svgNumber(top))h6"
        }
        if !bars.isEmpty {
            out.element(
                "path",
                ["class": "error-bars", "d": bars, "stroke": "currentColor", "stroke-width": "1.3", "fill": "none"])
        }
        for v in visible {
            out.open(
                "path", ["class": "marker", "d": markerPath(style: s.style, x: v.x, y: v.y), "fill": "currentColor"])
            out.element(
                "title", [:], text: v.point.note ?? "\(s.name): (\(plainNumber(v.point.x)), \(plainNumber(v.point.y)))")
            out.close("path")
        }
        out.close("g")
        return (visible.count, s.points.count - visible.count)
    }

    private func drawHistogram(
        _ h: HistogramSeries, _ xAxis: AxisLayout, _ yAxis: AxisLayout, frame: Frame, into out: inout SVGWriter
    ) -> (drawn: Int, skipped: Int) {
        // Runs of drawable bins, each a step line that starts and ends on the bottom of the frame.
        var runs: [[(x0: Double, x1: Double, y: Double)]] = [[]]
        var drawn = 0
        var skipped = 0
        for i in h.values.indices {
            let v = h.values[i]
            // An empty bin sits on the bottom of the frame (also on a log axis, where 0 has no position).
            let py = v == 0 && yAxis.scale == .log10 ? frame.bottom : yAxis.position(v)
            guard let x0 = xAxis.position(h.edges[i]), let x1 = xAxis.position(h.edges[i + 1]), let py else {
                skipped += 1
                if !runs[runs.count - 1].isEmpty { runs.append([]) }
                continue
            }
            if v != 0 { drawn += 1 }
            runs[runs.count - 1].append((x0, x1, py))
        }
        let bottom = svgNumber(frame.bottom)
        let path = runs.filter { !$0.isEmpty }.map { run in
            "M\(svgNumber(run[0].x0)) \(bottom)" + run.map { "V\(svgNumber($0.y))H\(svgNumber($0.x1))" }.joined()
                + "V\(bottom)"
        }.joined()
        out.element(
            "path",
            styleAttributes(h.style).merging([
                "class": "hist c\(h.style % Self.colours.count)", "data-name": h.name, "data-bins": String(drawn),
                "d": path, "fill": "none", "stroke": "currentColor", "stroke-width": h.style == 0 ? "2.2" : "1.6",
            ]) { $1 })
        return (drawn, skipped)
    }

    private func drawDensity(_ d: DensityGrid, _ xAxis: AxisLayout, _ yAxis: AxisLayout, into out: inout SVGWriter) -> (
        drawn: Int, skipped: Int
    ) {
        let nx = d.xEdges.count - 1
        let maxCount = d.counts.max() ?? 0
        var drawn = 0
        var skipped = 0
        out.open("g", ["class": "density"])
        for (k, count) in d.counts.enumerated() where count > 0 {
            let i = k % nx
            let j = k / nx
            guard let x0 = xAxis.position(d.xEdges[i]), let x1 = xAxis.position(d.xEdges[i + 1]),
                let y0 = yAxis.position(d.yEdges[j]), let y1 = yAxis.position(d.yEdges[j + 1])
            else {
                skipped += 1
                continue
            }
            let t = maxCount > 1 ? log(Double(count)) / log(Double(maxCount)) : 1
            // Slightly oversized cells: no hairline gaps between neighbours when rasterised.
            out.element(
                "rect",
                [
                    "class": "cell", "x": svgNumber(min(x0, x1)), "y": svgNumber(min(y0, y1)),
                    "width": svgNumber(abs(x1 - x0) + 0.3), "height": svgNumber(abs(y1 - y0) + 0.3), "fill": viridis(t),
                ])
            drawn += 1
        }
        out.close("g")
        return (drawn, skipped)
    }

    private func drawColourBar(_ d: DensityGrid, frame: Frame, into out: inout SVGWriter) {
        let maxCount = Double(max(d.counts.max() ?? 1, 2))
        let x0 = frame.right + 14
        let barWidth = 14.0
        let gradient = "\(id)-colours"
        out.open("defs")
        out.open("linearGradient", ["id": gradient, "x1": "0", "y1": "1", "x2": "0", "y2": "0"])
        for k in 0...10 {
            out.element("stop", ["offset": svgNumber(Double(k) / 10), "stop-color": viridis(Double(k) / 10)])
        }
        out.close("linearGradient")
        out.close("defs")
        out.element(
            "rect",
            [
                "class": "colour-bar", "x": svgNumber(x0), "y": svgNumber(frame.top), "width": svgNumber(barWidth),
                "height": svgNumber(frame.height), "fill": "url(#\(gradient))", "stroke": "currentColor",
                "stroke-width": "0.8",
            ])
        let axis = AxisLayout(
            axis: PlotAxis("events", scale: .log10, range: 1...maxCount), data: nil, extent: (frame.bottom, frame.top))
        for t in axis.ticks {
            out.element(
                "line",
                [
                    "x1": svgNumber(x0 + barWidth), "y1": svgNumber(t.position), "x2": svgNumber(x0 + barWidth + 4),
                    "y2": svgNumber(t.position), "stroke": "currentColor",
                ])
            out.text(t.label, x: x0 + barWidth + 6, y: t.position + 4.5, attributes: ["font-size": "11"])
        }
        out.text(
            "events / bin", x: 0, y: 0,
            attributes: [
                "text-anchor": "middle", "font-size": "11",
                "transform":
                    "translate(\(svgNumber(width - 6)) \(svgNumber((frame.top + frame.bottom) / 2))) rotate(-90)",
            ])
    }

    /// The presentation colour of a palette entry (the page's style sheet may override it).
    private func styleAttributes(_ style: Int) -> [String: String] {
        let k = style % Self.colours.count
        return ["class": "c\(k)", "color": Self.colours[k]]
    }
}

// MARK: - Axes and ticks

/// "Nice" tick values (steps of 1, 2, 2.5 or 5 × 10ⁿ; whole steps with `integer`) covering `lower...upper` with
/// about `target` intervals; the first and last ticks enclose the range.
public func niceTicks(lower: Double, upper: Double, target: Int = 6, integer: Bool = false) -> [Double] {
    precondition(lower.isFinite && upper.isFinite && lower <= upper, "niceTicks: invalid range \(lower)...\(upper)")
    var (lower, upper) = (lower, upper)
    if upper - lower < 1e-12 * max(abs(lower), abs(upper), 1e-300) {
        let pad = lower == 0 ? 1 : abs(lower) * 0.1
        (lower, upper) = (lower - pad, upper + pad)
    }
    var step = niceStep((upper - lower) / Double(max(target, 1)))
    if integer { step = max(1, step.rounded(.up)) }
    let first = (lower / step + 1e-9).rounded(.down)
    let last = (upper / step - 1e-9).rounded(.up)
    return stride(from: first, through: last, by: 1).map { $0 * step == 0 ? 0 : $0 * step }
}

/// Ticks of a log10 axis inside `lower...upper` (both > 0): powers of ten, with 2 and 5 (or every digit) between
/// them when the range spans few decades.
public func logTicks(lower: Double, upper: Double) -> [Double] {
    precondition(lower > 0 && upper >= lower && upper.isFinite, "logTicks: invalid range \(lower)...\(upper)")
    let decades = Foundation.log10(upper / lower)
    func ticks(_ mantissas: [Double]) -> [Double] {
        let first = Int(Foundation.log10(lower).rounded(.down))
        let last = Int(Foundation.log10(upper).rounded(.up))
        var values: [Double] = []
        for e in first...last {
            let power: Double = pow(10, Double(e))
            for m in mantissas where m * power >= lower * (1 - 1e-9) && m * power <= upper * (1 + 1e-9) {
                values.append(m * power)
            }
        }
        return values
    }
    let candidates = decades > 4 ? ticks([1]) : decades > 1.2 ? ticks([1, 2, 5]) : ticks([1, 2, 3, 5])
    if candidates.count >= 3 { return candidates }
    let all = ticks(Array(stride(from: 1.0, through: 9, by: 1)))
    return all.count >= 2 ? all : [lower, upper]
}

/// 1, 2, 2.5 or 5 × 10ⁿ, the smallest at least `raw`.
func niceStep(_ raw: Double) -> Double {
    let exponent = Foundation.log10(raw).rounded(.down)
    let magnitude = pow(10, exponent)
    let fraction = raw / magnitude
    let mantissa: Double =
        fraction <= 1 + 1e-9
        ? 1 : fraction <= 2 + 1e-9 ? 2 : fraction <= 2.5 + 1e-9 ? 2.5 : fraction <= 5 + 1e-9 ? 5 : 10
    return mantissa * magnitude
}

/// The extent of values accepted on an axis of a given scale.
private struct Extent {
    let scale: AxisScale
    var range: (Double, Double)?

    init(scale: AxisScale) { self.scale = scale }

    func accepts(_ v: Double) -> Bool { v.isFinite && (scale == .linear || v > 0) }

    mutating func add(_ v: Double) {
        guard accepts(v) else { return }
        range = range.map { (min($0.0, v), max($0.1, v)) } ?? (v, v)
    }
}

/// An axis placed on the page: range, ticks with labels, and the map from values to view-box positions.
private struct AxisLayout {
    let scale: AxisScale
    let lower: Double, upper: Double
    /// View-box positions of `lower` and `upper`.
    let extent: (Double, Double)
    let ticks: [(position: Double, label: String)]

    init(axis: PlotAxis, data: (Double, Double)?, extent: (Double, Double)) {
        scale = axis.scale
        self.extent = extent
        let values: [Double]
        let labels: [String]
        switch axis.scale {
        case .linear:
            if let fixed = axis.range {
                let (a, b) = (fixed.lowerBound, fixed.upperBound)
                (lower, upper) = (a, b)
                let slack = 1e-9 * max(abs(a), abs(b), 1)
                values = niceTicks(lower: a, upper: b, integer: axis.integer).filter {
                    $0 >= a - slack && $0 <= b + slack
                }
            } else {
                let (a, b) = data ?? (0, 1)
                let pad = (b - a) * 0.04
                // Positive data starting near zero starts at zero.
                values = niceTicks(lower: a >= 0 && a < pad ? 0 : a - pad, upper: b + pad, integer: axis.integer)
                (lower, upper) = (values.first!, values.last!)
            }
            let step = values.count > 1 ? values[1] - values[0] : max(abs(upper - lower), 1)
            labels = values.map { linearLabel($0, step: step) }
        case .log10:
            if let fixed = axis.range {
                (lower, upper) = (fixed.lowerBound, fixed.upperBound)
            } else {
                let (a, b) = data ?? (0.1, 10)
                var (la, lb) = (Foundation.log10(a), Foundation.log10(b))
                if lb - la < 0.6 {
                    let middle = (la + lb) / 2
                    (la, lb) = (middle - 0.3, middle + 0.3)
                }
                let pad = (lb - la) * 0.05
                (lower, upper) = (pow(10, la - pad), pow(10, lb + pad))
            }
            values = logTicks(lower: lower, upper: upper)
            // With a tick at every digit, only 1, 2 and 5 are labelled.
            let crowded = values.count > 5
            labels = values.map { v in
                let mantissa = (v / pow(10, Foundation.log10(v).rounded(.down))).rounded()
                return crowded && ![1, 2, 5].contains(mantissa) ? "" : logLabel(v)
            }
        }
        let (lower, upper, scale) = (lower, upper, scale)
        ticks = zip(values, labels).compactMap { v, label in
            Self.position(v, scale: scale, lower: lower, upper: upper, extent: extent).map { ($0, label) }
        }
    }

    /// The view-box position of `v`, or nil when it cannot be shown (non-finite, or ≤ 0 on a log axis).
    func position(_ v: Double) -> Double? {
        Self.position(v, scale: scale, lower: lower, upper: upper, extent: extent)
    }

    private static func position(_ v: Double, scale: AxisScale, lower: Double, upper: Double, extent: (Double, Double))
        -> Double?
    {
        guard v.isFinite, upper > lower else { return nil }
        let t: Double
        switch scale {
        case .linear: t = (v - lower) / (upper - lower)
        case .log10:
            guard v > 0 else { return nil }
            t = Foundation.log10(v / lower) / Foundation.log10(upper / lower)
        }
        // Far outside the frame: clamp (the clip path hides it) so that coordinates stay small numbers.
        let p = extent.0 + min(max(t, -10), 11) * (extent.1 - extent.0)
        return p.isFinite ? p : nil
    }
}

/// A tick label on a linear axis with as many decimals as the step needs (a true minus sign).
private func linearLabel(_ v: Double, step: Double) -> String {
    if abs(v) < step * 1e-6 { return "0" }
    var decimals = max(0, Int(-Foundation.log10(step).rounded(.down)))
    if abs(step / pow(10, Foundation.log10(step).rounded(.down)) - 2.5) < 1e-6 { decimals += 1 }
    return String(format: "%.\(decimals)f", v).replacingOccurrences(of: "-", with: "−")
}

/// A tick label on a log axis: decimals for 0.01…1000, else `10^{n}` or `m×10^{n}`.
private func logLabel(_ v: Double) -> String {
    let exponent = Int(Foundation.log10(v).rounded(.down))
    let mantissa = (v / pow(10, Double(exponent))).rounded()
    if (-2...3).contains(exponent) { return String(format: "%.\(max(0, -exponent))f", v) }
    let power = "10^{\(String(exponent).replacingOccurrences(of: "-", with: "−"))}"
    return mantissa == 1 ? power : "\(Int(mantissa))×\(power)"
}

/// Text without the sub- and superscript markup: `u_{x}^{true}` → `u_x^true`.
func plainText(_ text: String) -> String {
    text.replacingOccurrences(of: "_{", with: "_").replacingOccurrences(of: "^{", with: "^").replacingOccurrences(
        of: "}", with: "")
}

/// A number for tooltips: four significant digits.
func plainNumber(_ v: Double) -> String { String(format: "%.4g", v) }

// MARK: - Legend, markers, colours

/// Legend entries flowed left to right in rows under the title.
private struct LegendLayout {
    var positions: [(x: Double, y: Double)] = []
    var height = 0.0

    init(entries: [String], width: Double) {
        guard !entries.isEmpty else { return }
        var x = 0.0
        var y = 0.0
        for name in entries {
            let w = 26 + approximateTextWidth(name, fontSize: 13) + 10
            if x > 0 && x + w > width {
                x = 0
                y += 18
            }
            positions.append((x, y))
            x += w
        }
        height = y + 22
    }
}

/// A rough width of text in the sans-serif font (no layout engine here): 0.58 em per character.
private func approximateTextWidth(_ text: String, fontSize: Double) -> Double {
    Double(text.count) * fontSize * 0.58
}

/// The marker of a style: circle, square, triangle up, diamond, triangle down, cross-like star, in turn.
private func markerPath(style: Int, x: Double, y: Double) -> String {
    let (cx, cy) = (svgNumber(x), svgNumber(y))
    switch style % 6 {
    case 0: return "M\(cx) \(cy)m-4 0a4 4 0 1 0 8 0a4 4 0 1 0-8 0Z"
    case 1: return "M\(cx) \(cy)m-3.5-3.5h7v7h-7Z"
    case 2: return "M\(cx) \(cy)m0-4.6l4.2 7.3h-8.4Z"
    case 3: return "M\(cx) \(cy)m0-4.8l4.4 4.8l-4.4 4.8l-4.4-4.8Z"
    case 4: return "M\(cx) \(cy)m0 4.6l4.2-7.3h-8.4Z"
    default: return "M\(cx) \(cy)m-1.5-4.5h3v3h3v3h-3v3h-3v-3h-3v-3h3Z"
    }
}

/// Viridis at `t` in [0, 1] (from 0.08, so that the lowest counts still show on a dark background).
func viridis(_ t: Double) -> String {
    let stops: [(Double, Double, Double)] = [
        (68, 1, 84), (72, 36, 117), (65, 68, 135), (53, 95, 141), (42, 120, 142), (33, 145, 140),
        (34, 168, 132), (68, 191, 112), (122, 209, 81), (189, 223, 38), (253, 231, 37),
    ]
    let u = 0.08 + 0.92 * min(max(t.isFinite ? t : 0, 0), 1)
    let position = u * Double(stops.count - 1)
    let k = min(Int(position), stops.count - 2)
    let f = position - Double(k)
    let (a, b) = (stops[k], stops[k + 1])
    func channel(_ p: Double, _ q: Double) -> Int { Int((p + (q - p) * f).rounded()) }
    return String(format: "#%02X%02X%02X", channel(a.0, b.0), channel(a.1, b.1), channel(a.2, b.2))
}

/// The index of the bin `[edges[i], edges[i+1])` holding `v`, or nil outside the edges.
func binIndex(_ v: Double, edges: [Double]) -> Int? {
    guard v.isFinite, let first = edges.first, let last = edges.last, v >= first, v < last else { return nil }
    var low = 0
    var high = edges.count - 1
    while high - low > 1 {
        let middle = (low + high) / 2
        if v >= edges[middle] { low = middle } else { high = middle }
    }
    return low
}

// MARK: - SVG text

/// A number for an SVG attribute: at most two decimals, no exponent. Callers pass finite values only (the
/// plot skips the others); a non-finite value is written as 0 rather than as NaN.
func svgNumber(_ v: Double) -> String {
    guard v.isFinite else { return "0" }
    let rounded = (v * 100).rounded() / 100
    if rounded == rounded.rounded(), abs(rounded) < 1e15 { return String(Int(rounded)) }
    var text = String(format: "%.2f", rounded)
    while text.hasSuffix("0") { text.removeLast() }
    return text
}

/// Escapes text for XML content and attribute values.
public func xmlEscaped(_ text: String) -> String {
    var out = ""
    out.reserveCapacity(text.count)
    for c in text {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&#39;"
        default: out.append(c)
        }
    }
    return out
}

/// Builds SVG markup: elements with sorted, escaped attributes, and text with `_{…}`/`^{…}` sub- and superscripts.
struct SVGWriter {
    private(set) var text = ""

    /// `<name a="…">`.
    mutating func open(_ name: String, _ attributes: [String: String] = [:]) {
        text += "<\(name)\(Self.attributes(attributes))>"
    }

    /// `</name>`.
    mutating func close(_ name: String) {
        text += "</\(name)>\n"
    }

    /// `<name a="…"/>`, or with escaped text content.
    mutating func element(_ name: String, _ attributes: [String: String], text content: String? = nil) {
        if let content {
            text += "<\(name)\(Self.attributes(attributes))>\(xmlEscaped(content))</\(name)>\n"
        } else {
            text += "<\(name)\(Self.attributes(attributes))/>\n"
        }
    }

    /// A `<text>` at (x, y) with sub- and superscripts as shifted, smaller `<tspan>`s.
    mutating func text(_ content: String, x: Double, y: Double, attributes: [String: String]) {
        var all = attributes
        all["x"] = svgNumber(x)
        all["y"] = svgNumber(y)
        text += "<text\(Self.attributes(all))>\(Self.rich(content))</text>\n"
    }

    private static func attributes(_ attributes: [String: String]) -> String {
        attributes.sorted { $0.key < $1.key }.map { " \($0.key)=\"\(xmlEscaped($0.value))\"" }.joined()
    }

    /// `u_{∥}` → `u<tspan dy="0.3em" font-size="75%">∥</tspan>`, `10^{3}` likewise raised; other `_` and `^`
    /// are plain text.
    static func rich(_ content: String) -> String {
        var out = ""
        var shift = 0.0
        var plain = ""
        var rest = Substring(content)
        while let first = rest.first {
            if first == "_" || first == "^", rest.dropFirst().first == "{", let end = rest.firstIndex(of: "}") {
                if !plain.isEmpty { out += shifted(plain, from: &shift, to: 0, small: false) }
                plain = ""
                out += shifted(
                    String(rest[rest.index(rest.startIndex, offsetBy: 2)..<end]), from: &shift,
                    to: first == "_" ? 0.3 : -0.45, small: true)
                rest = rest[rest.index(after: end)...]
            } else {
                plain.append(first)
                rest = rest.dropFirst()
            }
        }
        if !plain.isEmpty { out += shifted(plain, from: &shift, to: 0, small: false) }
        return out
    }

    private static func shifted(_ content: String, from shift: inout Double, to target: Double, small: Bool) -> String {
        defer { shift = target }
        if target == shift && !small { return xmlEscaped(content) }
        var attributes: [String: String] = [:]
        if target != shift { attributes["dy"] = "\(svgNumber(target - shift))em" }
        if small { attributes["font-size"] = "75%" }
        return "<tspan\(Self.attributes(attributes))>\(xmlEscaped(content))</tspan>"
    }
}
