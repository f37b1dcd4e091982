import Foundation

/// `hrtrain verify`: one full training step of the network on a device backend and on the Double reference,
/// every tensor compared; the reference's gradients against central finite differences; and a few steps'
/// loss trajectories.
///
/// Tolerances (relative L2 error, device Float32 vs reference Double). Float32 carries 24 bits (ε ≈ 6e-8);
/// a dot product of length K accumulates a relative error that grows like √K·ε in practice, and the errors
/// of each layer feed the next:
/// - layer outputs and the loss: 1e-4 (observed ~1e-6 at the default sizes);
/// - gradients: 1e-3 (backward chains through every layer and through batch norm's
///   `N·dy − Σdy − x̂·Σdy·x̂`, where terms cancel), relative to `max(‖ref‖₂, 1e-3·G)` with `G` the
///   largest gradient norm of the network: a gradient that cancels to (nearly) zero — the bias before a batch norm,
///   everything below a batch norm of two rows — is held to an absolute error of 1e-6·G;
/// - running statistics and parameters after the Adam step: 1e-4 (the step moves each parameter by
///   about the learning rate, so their errors inherit the gradients' only through `m/√v`); for a
///   parameter whose gradient is at rounding level (see above), Adam's first step `≈ lr·sign(g)` has an
///   arbitrary direction on both sides, so the limit is the absolute `max|dev − ref| ≤ 2·lr`;
/// - loss trajectory over several steps: 1e-3 (the errors compound step by step).
/// The finite-difference check runs in Double only: `fd = (L(θ+h) − L(θ−h))/2h` with `h = 1e-5`, accepted
/// when `|fd − analytic| ≤ 1e-4·max(|fd|, |analytic|) + 1e-9·(1 + L)`: the truncation error is O(h²) ≈ 1e-10
/// and the rounding error about 1e-16·L/h, while a wrong formula is off by far more than 1e-4. Each probe
/// reports its margin, `|fd − analytic|` over the allowance (≤ 1 passes).
public struct Verification {
    /// What to verify.
    public struct Options: Codable, Sendable {
        public var batch = 4000
        public var seed: UInt64 = 20_190_417
        public var profile: NumericsProfile = .keras
        public var spec = NetworkSpec()
        public var learningRate = 1e-3
        /// Parameters and inputs probed by finite differences.
        public var finiteDifferenceProbes = 24
        /// Consecutive training steps in the loss-trajectory comparison.
        public var trajectorySteps = 5
        /// Creates the defaults (the thesis network at batch 4000, Keras profile).
        public init() {}
    }

    /// One finite-difference probe.
    public struct FiniteDifference: Codable, Sendable, Equatable {
        public var tensor: String
        public var index: Int
        public var analytic: Double
        public var numeric: Double
        /// `|numeric − analytic|` divided by the allowance; ≤ 1 passes.
        public var margin: Double
        public var passed: Bool
    }

    /// Everything `verify` found.
    public struct Report: Codable, Sendable {
        public var device: String
        public var options: Options
        public var program: ProgramBuildReport?
        /// The CPU backend's BLAS, with the kernels the library reports running when verify ran (a mismatch
        /// with the kernels chosen from the CPU's features fails).
        public var blas: BLASSelection?
        public var tensors: [TensorComparison]
        public var finiteDifferences: [FiniteDifference]
        public var trajectory: [TensorComparison]
        public var seconds: Double
        /// True when every row passed.
        public var passed: Bool {
            tensors.allSatisfy(\.passed) && finiteDifferences.allSatisfy(\.passed) && trajectory.allSatisfy(\.passed)
                && (blas?.kernelsMatch ?? true)
        }
    }

    static let activationLimit = 1e-4
    static let gradientLimit = 1e-3
    static let stateLimit = 1e-4
    static let trajectoryLimit = 1e-3

    /// Runs the verification of `device` against the reference.
    public static func run<D: Backend>(device: D, options: Options, program: ProgramBuildReport? = nil) throws -> Report
    {
        let start = DispatchTime.now()
        let spec = options.spec
        let reference = ReferenceBackend()
        var rng = SplitMix64(seed: options.seed)
        let (parameters, running) = randomState(spec: spec, profile: options.profile, rng: &rng)
        let input = (0..<options.batch * spec.inputSize).map { _ in rng.normal() }
        let target = (0..<options.batch * spec.outputSize).map { _ in 10 * rng.normal() }

        let dev = try Network(
            backend: device, spec: spec, profile: options.profile, parameters: parameters, runningStatistics: running)
        let ref = try Network(
            backend: reference, spec: spec, profile: options.profile, parameters: parameters, runningStatistics: running
        )
        let xd = try device.tensor(input, shape: [options.batch, spec.inputSize])
        let yd = try device.tensor(target, shape: [options.batch, spec.outputSize])
        let xr = try reference.tensor(input, shape: [options.batch, spec.inputSize])
        let yr = try reference.tensor(target, shape: [options.batch, spec.outputSize])
        let lossD = try device.tensor([0.0], shape: [1])
        let lossR = try reference.tensor([0.0], shape: [1])

        var rows: [TensorComparison] = []
        func compare(_ name: String, _ a: D.Tensor, _ b: ReferenceBackend.Tensor, _ limit: Double) throws {
            rows.append(
                TensorComparison(
                    name: name, shape: b.shape, device: try device.read(a), reference: try reference.read(b),
                    limit: limit))
        }

        // Inference-mode forward (batch norm with the running statistics).
        try dev.forward(xd, training: false)
        try ref.forward(xr, training: false)
        let inferD = try device.read(dev.activations().last!.tensor)
        rows.append(
            TensorComparison(
                name: "output (inference mode)", shape: [options.batch, spec.outputSize], device: inferD,
                reference: try reference.read(ref.activations().last!.tensor), limit: activationLimit))

        // One full training step, every intermediate compared.
        for net in [0, 1] {
            if net == 0 {
                try dev.forward(xd, training: true)
                try dev.loss(target: yd, into: lossD)
                try dev.backward()
            } else {
                try ref.forward(xr, training: true)
                try ref.loss(target: yr, into: lossR)
                try ref.backward()
            }
        }
        for (a, b) in zip(dev.activations(), ref.activations()) {
            try compare(a.name, a.tensor, b.tensor, activationLimit)
        }
        try compare("loss", lossD, lossR, activationLimit)
        let gradientNorms = try ref.layout.parameters.map { e in
            try reference.read(ref.gradient(e.name)).reduce(0) { $0 + $1 * $1 }.squareRoot()
        }
        let floor = 1e-3 * (gradientNorms.max() ?? 0)
        var roundingLevel: Set<String> = []
        for (entry, norm) in zip(ref.layout.parameters, gradientNorms) {
            let note =
                norm < floor
                ? "gradient cancels to rounding level: error relative to 1e-3 of the largest gradient norm" : nil
            if note != nil { roundingLevel.insert(entry.name) }
            rows.append(
                TensorComparison(
                    name: "∂L/∂" + entry.name, shape: entry.shape,
                    device: try device.read(dev.gradient(entry.name)),
                    reference: try reference.read(ref.gradient(entry.name)), limit: gradientLimit, floor: floor,
                    note: note))
        }
        for entry in ref.layout.runningStatistics {
            try compare(entry.name + " (after step)", dev.running(entry.name), ref.running(entry.name), stateLimit)
        }
        try dev.applyAdam(learningRate: options.learningRate)
        try ref.applyAdam(learningRate: options.learningRate)
        for entry in ref.layout.parameters {
            let (d, r) = (try device.read(dev.parameter(entry.name)), try reference.read(ref.parameter(entry.name)))
            if roundingLevel.contains(entry.name) {
                var c = TensorComparison(
                    name: entry.name + " (after Adam)", shape: entry.shape, device: d, reference: r, limit: stateLimit,
                    note: "rounding-level gradient: Adam's step direction is arbitrary, |Δ| ≤ 2·lr")
                c.absolute = true
                c.error = c.maxAbsoluteError
                c.limit = 2 * options.learningRate
                c.passed = !c.nonFinite && c.error <= c.limit
                rows.append(c)
            } else {
                rows.append(
                    TensorComparison(
                        name: entry.name + " (after Adam)", shape: entry.shape, device: d, reference: r,
                        limit: stateLimit))
            }
        }

        // The weighted loss (event weights, `--weights` / `--flatten-target-magnitude`): a fresh training-mode
        // pass from the same state, the weighted MSE with random weights, its gradient and the backward pass.
        var weightRandom = SplitMix64(seed: options.seed ^ 0x5745_4947_4854)
        let weights = (0..<options.batch).map { _ in weightRandom.uniform(0.1, 10) }
        let devWeighted = try Network(
            backend: device, spec: spec, profile: options.profile, parameters: parameters, runningStatistics: running)
        let refWeighted = try Network(
            backend: reference, spec: spec, profile: options.profile, parameters: parameters, runningStatistics: running
        )
        let weightsD = try device.tensor(weights, shape: [options.batch])
        let weightsR = try reference.tensor(weights, shape: [options.batch])
        try devWeighted.forward(xd, training: true)
        try devWeighted.loss(target: yd, weights: weightsD, into: lossD)
        try devWeighted.backward()
        try refWeighted.forward(xr, training: true)
        try refWeighted.loss(target: yr, weights: weightsR, into: lossR)
        try refWeighted.backward()
        try compare("weighted loss", lossD, lossR, activationLimit)
        for entry in ref.layout.parameters where entry.name == "output.weight" || entry.name == "dense1.weight" {
            rows.append(
                TensorComparison(
                    name: "∂L/∂" + entry.name + " (weighted loss)", shape: entry.shape,
                    device: try device.read(devWeighted.gradient(entry.name)),
                    reference: try reference.read(refWeighted.gradient(entry.name)), limit: gradientLimit, floor: floor)
            )
        }

        // The probes check the reference's formulas, which do not depend on the batch size: the first
        // (at most) 256 rows keep the 2·probes Double forward passes quick.
        let fdRows = min(options.batch, 256)
        let probes =
            try finiteDifferences(
                spec: spec, profile: options.profile, parameters: parameters, running: running,
                input: Array(input.prefix(fdRows * spec.inputSize)),
                target: Array(target.prefix(fdRows * spec.outputSize)),
                batch: fdRows, count: options.finiteDifferenceProbes, rng: &rng)
            + finiteDifferences(
                spec: spec, profile: options.profile, parameters: parameters, running: running,
                input: Array(input.prefix(fdRows * spec.inputSize)),
                target: Array(target.prefix(fdRows * spec.outputSize)), weights: Array(weights.prefix(fdRows)),
                batch: fdRows, count: options.finiteDifferenceProbes == 0 ? 0 : 4, rng: &weightRandom)

        // Loss trajectory: continue both networks for a few steps on fresh batches.
        var lossesD: [Double] = []
        var lossesR: [Double] = []
        for _ in 0..<options.trajectorySteps {
            let x = (0..<options.batch * spec.inputSize).map { _ in rng.normal() }
            let y = (0..<options.batch * spec.outputSize).map { _ in 10 * rng.normal() }
            try device.write(x, to: xd)
            try device.write(y, to: yd)
            try reference.write(x, to: xr)
            try reference.write(y, to: yr)
            try dev.trainStep(input: xd, target: yd, learningRate: options.learningRate, loss: lossD)
            try ref.trainStep(input: xr, target: yr, learningRate: options.learningRate, loss: lossR)
            lossesD.append(try device.read(lossD)[0])
            lossesR.append(try reference.read(lossR)[0])
        }
        let trajectory =
            options.trajectorySteps == 0
            ? []
            : [
                TensorComparison(
                    name: "loss over \(options.trajectorySteps) steps", shape: [options.trajectorySteps],
                    device: lossesD, reference: lossesR, limit: trajectoryLimit)
            ]
        return Report(
            device: device.name, options: options, program: program,
            blas: (device as? CPUBackend).map { $0.blas.reportingNow() }, tensors: rows, finiteDifferences: probes,
            trajectory: trajectory, seconds: elapsed(since: start))
    }

    /// Initial values with every parameter and statistic moved off its trivial start (γ ≠ 1, β ≠ 0,
    /// biases ≠ 0, running statistics ≠ (0, 1)), so that each term of every formula is exercised.
    static func randomState(spec: NetworkSpec, profile: NumericsProfile, rng: inout SplitMix64) -> ([Double], [Double])
    {
        var (parameters, running) = Network<ReferenceBackend>.initialValues(
            spec: spec, profile: profile, seed: rng.next())
        let layout = ParameterLayout(spec)
        for e in layout.parameters {
            let range = e.offset..<e.offset + e.count
            if e.name.hasSuffix(".gamma") { for i in range { parameters[i] = rng.uniform(0.5, 1.5) } }
            if e.name.hasSuffix(".beta") || e.name.hasSuffix(".bias") {
                for i in range { parameters[i] = rng.uniform(-0.2, 0.2) }
            }
        }
        for e in layout.runningStatistics {
            let range = e.offset..<e.offset + e.count
            for i in range {
                running[i] = e.name.hasSuffix("running_var") ? rng.uniform(0.5, 1.5) : rng.uniform(-0.3, 0.3)
            }
        }
        return (parameters, running)
    }

    /// Central differences of the Double loss against the analytic gradients, on random parameters and inputs.
    static func finiteDifferences(
        spec: NetworkSpec, profile: NumericsProfile, parameters: [Double], running: [Double], input: [Double],
        target: [Double], weights: [Double]? = nil, batch: Int, count: Int, rng: inout SplitMix64
    ) throws -> [FiniteDifference] {
        guard count > 0 else { return [] }
        let backend = ReferenceBackend()
        let net = try Network(
            backend: backend, spec: spec, profile: profile, parameters: parameters, runningStatistics: running)
        let x = try backend.tensor(input, shape: [batch, spec.inputSize])
        let y = try backend.tensor(target, shape: [batch, spec.outputSize])
        let loss = try backend.tensor([0.0], shape: [1])
        let w = try weights.map { try backend.tensor($0, shape: [batch]) }
        func evaluate() throws -> Double {
            try net.forward(x, training: true)
            try net.loss(target: y, weights: w, into: loss)
            return loss[0]
        }
        let baseLoss = try evaluate()
        try net.backward()
        let analyticParameters = try backend.read(net.gradients)
        let analyticInput = try backend.read(try net.inputGradient())
        let h = 1e-5
        var probes: [FiniteDifference] = []
        func probe(_ name: String, _ index: Int, _ tensor: ReferenceBackend.Tensor, _ flat: Int, _ analytic: Double)
            throws
        {
            let saved = tensor[flat]
            tensor[flat] = saved + h
            let plus = try evaluate()
            tensor[flat] = saved - h
            let minus = try evaluate()
            tensor[flat] = saved
            let numeric = (plus - minus) / (2 * h)
            let allowance = 1e-4 * max(abs(numeric), abs(analytic)) + 1e-9 * (1 + abs(baseLoss))
            let margin = abs(numeric - analytic) / allowance
            probes.append(
                FiniteDifference(
                    tensor: weights == nil ? name : name + " (weighted loss)", index: index, analytic: analytic,
                    numeric: numeric, margin: margin,
                    passed: margin <= 1))
        }
        let entries = net.layout.parameters
        for p in 0..<count {
            if p % 4 == 3 {  // every fourth probe is an input element
                let i = Int(rng.next() % UInt64(input.count))
                try probe("input", i, x, i, analyticInput[i])
            } else {
                let e = entries[p % entries.count == 0 ? 0 : Int(rng.next() % UInt64(entries.count))]
                let i = Int(rng.next() % UInt64(e.count))
                try probe(e.name, i, net.parameters, e.offset + i, analyticParameters[e.offset + i])
            }
        }
        return probes
    }
}
