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
///   `N·dy − Σdy − x̂·Σdy·x̂`, where terms cancel);
/// - running statistics and parameters after the Adam step: 1e-4 (the step moves each parameter by
///   about the learning rate, so their errors inherit the gradients' only through `m/√v`);
/// - loss trajectory over several steps: 1e-3 (the errors compound step by step).
/// The finite-difference check runs in Double only: `(L(θ+h) − L(θ−h))/2h` with `h = 1e-6`, accepted when
/// `|fd − analytic| ≤ 1e-5·max(|fd|, |analytic|) + 1e-9`.
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
        public var passed: Bool
    }

    /// Everything `verify` found.
    public struct Report: Codable, Sendable {
        public var device: String
        public var options: Options
        public var program: ProgramBuildReport?
        public var tensors: [TensorComparison]
        public var finiteDifferences: [FiniteDifference]
        public var trajectory: [TensorComparison]
        public var seconds: Double
        /// True when every row passed.
        public var passed: Bool {
            tensors.allSatisfy(\.passed) && finiteDifferences.allSatisfy(\.passed) && trajectory.allSatisfy(\.passed)
        }
    }

    static let activationLimit = 1e-4
    static let gradientLimit = 1e-3
    static let stateLimit = 1e-4
    static let trajectoryLimit = 1e-3

    /// Runs the verification of `device` against the reference.
    public static func run<D: Backend>(device: D, options: Options, program: ProgramBuildReport? = nil) throws -> Report {
        let start = DispatchTime.now()
        let spec = options.spec
        let reference = ReferenceBackend()
        var rng = SplitMix64(seed: options.seed)
        let (parameters, running) = randomState(spec: spec, profile: options.profile, rng: &rng)
        let input = (0..<options.batch * spec.inputSize).map { _ in rng.normal() }
        let target = (0..<options.batch * spec.outputSize).map { _ in 10 * rng.normal() }

        let dev = try Network(backend: device, spec: spec, profile: options.profile, parameters: parameters, runningStatistics: running)
        let ref = try Network(backend: reference, spec: spec, profile: options.profile, parameters: parameters, runningStatistics: running)
        let xd = try device.tensor(input, shape: [options.batch, spec.inputSize])
        let yd = try device.tensor(target, shape: [options.batch, spec.outputSize])
        let xr = try reference.tensor(input, shape: [options.batch, spec.inputSize])
        let yr = try reference.tensor(target, shape: [options.batch, spec.outputSize])
        let lossD = try device.tensor([0.0], shape: [1])
        let lossR = try reference.tensor([0.0], shape: [1])

        var rows: [TensorComparison] = []
        func compare(_ name: String, _ a: D.Tensor, _ b: ReferenceBackend.Tensor, _ limit: Double) throws {
            rows.append(TensorComparison(name: name, shape: b.shape, device: try device.read(a), reference: try reference.read(b), limit: limit))
        }

        // Inference-mode forward (batch norm with the running statistics).
        try dev.forward(xd, training: false)
        try ref.forward(xr, training: false)
        let inferD = try device.read(dev.activations().last!.tensor)
        rows.append(TensorComparison(name: "output (inference mode)", shape: [options.batch, spec.outputSize], device: inferD, reference: try reference.read(ref.activations().last!.tensor), limit: activationLimit))

        // One full training step, every intermediate compared.
        for net in [0, 1] {
            if net == 0 { try dev.forward(xd, training: true); try dev.loss(target: yd, into: lossD); try dev.backward() }
            else { try ref.forward(xr, training: true); try ref.loss(target: yr, into: lossR); try ref.backward() }
        }
        for (a, b) in zip(dev.activations(), ref.activations()) { try compare(a.name, a.tensor, b.tensor, activationLimit) }
        try compare("loss", lossD, lossR, activationLimit)
        for entry in ref.layout.parameters { try compare("∂L/∂" + entry.name, dev.gradient(entry.name), ref.gradient(entry.name), gradientLimit) }
        for entry in ref.layout.runningStatistics { try compare(entry.name + " (after step)", dev.running(entry.name), ref.running(entry.name), stateLimit) }
        try dev.applyAdam(learningRate: options.learningRate)
        try ref.applyAdam(learningRate: options.learningRate)
        for entry in ref.layout.parameters { try compare(entry.name + " (after Adam)", dev.parameter(entry.name), ref.parameter(entry.name), stateLimit) }

        let probes = try finiteDifferences(spec: spec, profile: options.profile, parameters: parameters, running: running, input: input, target: target, batch: options.batch, count: options.finiteDifferenceProbes, rng: &rng)

        // Loss trajectory: continue both networks for a few steps on fresh batches.
        var lossesD: [Double] = [], lossesR: [Double] = []
        for _ in 0..<options.trajectorySteps {
            let x = (0..<options.batch * spec.inputSize).map { _ in rng.normal() }
            let y = (0..<options.batch * spec.outputSize).map { _ in 10 * rng.normal() }
            try device.write(x, to: xd); try device.write(y, to: yd)
            try reference.write(x, to: xr); try reference.write(y, to: yr)
            try dev.trainStep(input: xd, target: yd, learningRate: options.learningRate, loss: lossD)
            try ref.trainStep(input: xr, target: yr, learningRate: options.learningRate, loss: lossR)
            lossesD.append(try device.read(lossD)[0])
            lossesR.append(try reference.read(lossR)[0])
        }
        let trajectory = options.trajectorySteps == 0 ? [] : [TensorComparison(name: "loss over \(options.trajectorySteps) steps", shape: [options.trajectorySteps], device: lossesD, reference: lossesR, limit: trajectoryLimit)]
        return Report(device: device.name, options: options, program: program, tensors: rows, finiteDifferences: probes, trajectory: trajectory, seconds: elapsed(since: start))
    }

    /// Initial values with every parameter and statistic moved off its trivial start (γ ≠ 1, β ≠ 0,
    /// biases ≠ 0, running statistics ≠ (0, 1)), so that each term of every formula is exercised.
    static func randomState(spec: NetworkSpec, profile: NumericsProfile, rng: inout SplitMix64) -> ([Double], [Double]) {
        var (parameters, running) = Network<ReferenceBackend>.initialValues(spec: spec, profile: profile, seed: rng.next())
        let layout = ParameterLayout(spec)
        for e in layout.parameters {
            let range = e.offset..<e.offset + e.count
            if e.name.hasSuffix(".gamma") { for i in range { parameters[i] = rng.uniform(0.5, 1.5) } }
            if e.name.hasSuffix(".beta") || e.name.hasSuffix(".bias") { for i in range { parameters[i] = rng.uniform(-0.2, 0.2) } }
        }
        for e in layout.runningStatistics {
            let range = e.offset..<e.offset + e.count
            for i in range { running[i] = e.name.hasSuffix("running_var") ? rng.uniform(0.5, 1.5) : rng.uniform(-0.3, 0.3) }
        }
        return (parameters, running)
    }

    /// Central differences of the Double loss against the analytic gradients, on random parameters and inputs.
    static func finiteDifferences(spec: NetworkSpec, profile: NumericsProfile, parameters: [Double], running: [Double], input: [Double], target: [Double], batch: Int, count: Int, rng: inout SplitMix64) throws -> [FiniteDifference] {
        guard count > 0 else { return [] }
        let backend = ReferenceBackend()
        let net = try Network(backend: backend, spec: spec, profile: profile, parameters: parameters, runningStatistics: running)
        let x = try backend.tensor(input, shape: [batch, spec.inputSize])
        let y = try backend.tensor(target, shape: [batch, spec.outputSize])
        let loss = try backend.tensor([0.0], shape: [1])
        func evaluate() throws -> Double {
            try net.forward(x, training: true)
            try net.loss(target: y, into: loss)
            return loss[0]
        }
        _ = try evaluate()
        try net.backward()
        let analyticParameters = try backend.read(net.gradients)
        let analyticInput = try backend.read(try net.inputGradient())
        let h = 1e-6
        var probes: [FiniteDifference] = []
        func probe(_ name: String, _ index: Int, _ tensor: ReferenceBackend.Tensor, _ flat: Int, _ analytic: Double) throws {
            let saved = tensor[flat]
            tensor[flat] = saved + h
            let plus = try evaluate()
            tensor[flat] = saved - h
            let minus = try evaluate()
            tensor[flat] = saved
            let numeric = (plus - minus) / (2 * h)
            let ok = abs(numeric - analytic) <= 1e-5 * max(abs(numeric), abs(analytic)) + 1e-9
            probes.append(FiniteDifference(tensor: name, index: index, analytic: analytic, numeric: numeric, passed: ok))
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
