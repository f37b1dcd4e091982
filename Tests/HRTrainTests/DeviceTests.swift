import HRTrainKernels
import XCTest

@testable import HRTrain

/// The device layer: discovery, selection errors, the program cache, build failures, allocation errors.
final class DeviceTests: XCTestCase {
    func testDeviceListAndSelection() throws {
        _ = try SharedDevice.backend()
        let devices = try DeviceCatalog.list()
        XCTAssertFalse(devices.isEmpty)
        XCTAssertEqual(devices.map(\.index), Array(0..<devices.count))
        XCTAssertTrue(
            devices.allSatisfy { $0.computeUnits > 0 && $0.globalMemoryBytes > 0 && $0.maxAllocationBytes > 0 })
        let chosen = try DeviceCatalog.select(nil, environment: [:])
        XCTAssertEqual(chosen.info, devices.first { $0.kind == .gpu } ?? devices[0])
        XCTAssertEqual(try DeviceCatalog.select(nil, environment: ["HRTRAIN_DEVICE": "0"]).info.index, 0)
    }

    func testUnknownDeviceIndexIsAClearError() throws {
        _ = try SharedDevice.backend()
        XCTAssertThrowsError(try DeviceCatalog.select(99, environment: [:])) { error in
            XCTAssertTrue("\(error)".contains("device index 99 does not exist"), "\(error)")
        }
        XCTAssertThrowsError(try DeviceCatalog.select(nil, environment: ["HRTRAIN_DEVICE": "gpu"])) { error in
            XCTAssertTrue("\(error)".contains("HRTRAIN_DEVICE=gpu is not a device index"), "\(error)")
        }
        let result = try runHRTrain(["verify", "--device", "42", "--batch", "8", "--hidden", "4"])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.err.contains("device index 42 does not exist"), result.err)
    }

    func testMissingOpenCLPlatformIsAClearError() throws {
        // The ICD loader reads its vendor list from OCL_ICD_VENDORS: an empty folder means no platform.
        let empty = try temporaryDirectory(self)
        let result = try runHRTrain(["devices"], environment: ["OCL_ICD_VENDORS": empty.path])
        // The CPU backend still runs: listed, the default, exit status 0; the missing platform is said.
        XCTAssertEqual(result.status, 0, result.err)
        XCTAssertTrue(result.out.contains("hrtrain CPU backend"), result.out)
        XCTAssertTrue(result.out.contains("default backend: cpu (no OpenCL device)"), result.out)
        XCTAssertTrue(result.err.contains("no OpenCL platform found"), result.err)
        XCTAssertFalse(result.err.contains("Fatal error"), "must not trap")
        let opencl = try runHRTrain(
            ["verify", "--backend", "opencl", "--batch", "8", "--hidden", "4"],
            environment: ["OCL_ICD_VENDORS": empty.path])
        XCTAssertEqual(opencl.status, 1)
        XCTAssertTrue(opencl.err.contains("no OpenCL platform found"), opencl.err)
    }

    func testDevicesCommandListsTheDevice() throws {
        let device = try SharedDevice.backend()
        let table = try runHRTrain(["devices"])
        XCTAssertEqual(table.status, 0, table.err)
        XCTAssertTrue(table.out.contains(device.context.device.name), table.out)
        for column in ["platform", "type", "CUs", "clock", "global mem", "max alloc", "OpenCL C", "fp64"] {
            XCTAssertTrue(table.out.contains(column), "missing column \(column)")
        }
        let json = try runHRTrain(["devices", "--json"])
        let decoded = try JSONDecoder().decode([DeviceInfo].self, from: Data(json.out.utf8))
        XCTAssertEqual(decoded.first?.name, device.context.device.name)
    }

    func testProgramCacheSkipsCompilationOnTheSecondRun() throws {
        _ = try SharedDevice.backend()
        let dir = try temporaryDirectory(self)
        let cache = ProgramCache(directory: dir)
        let first = try ComputeContext(handle: DeviceCatalog.select(nil), cache: cache)
        XCTAssertEqual(first.programBuild.origin, "compiled")
        let second = try ComputeContext(handle: DeviceCatalog.select(nil), cache: cache)
        XCTAssertEqual(second.programBuild.origin, "cached")
        XCTAssertEqual(second.programBuild.cacheFile, first.programBuild.cacheFile)
        // The cached program really works.
        let backend = OpenCLBackend(context: second)
        let x = try backend.tensor([0.5, -1], shape: [2])
        try backend.tanh(x, into: x)
        XCTAssertEqual(try backend.read(x)[0], Foundation.tanh(0.5), accuracy: 1e-6)
        // A corrupted cache file is rebuilt, not trusted.
        try Data("HRTPROG1garbage".utf8).write(to: URL(fileURLWithPath: second.programBuild.cacheFile!))
        XCTAssertEqual(
            try ComputeContext(handle: DeviceCatalog.select(nil), cache: cache).programBuild.origin, "compiled")
    }

    func testBuildFailureShowsTheBuildLog() throws {
        _ = try SharedDevice.backend()
        let dir = try temporaryDirectory(self)
        for file in KernelSources.files {
            let text =
                file.name == "adam.cl"
                ? file.source + "\n__kernel void broken(__global float *x) { x[0] = undeclared_name; }\n" : file.source
            try text.write(to: dir.appendingPathComponent(file.name), atomically: true, encoding: .utf8)
        }
        let result = try runHRTrain(
            ["verify", "--backend", "opencl", "--batch", "8", "--hidden", "4"],
            environment: ["HRTRAIN_KERNELS_DIR": dir.path, "HRTRAIN_CACHE_DIR": dir.path])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.err.contains("clBuildProgram failed with CL_BUILD_PROGRAM_FAILURE"), result.err)
        XCTAssertTrue(result.err.contains("undeclared_name"), "the build log names the problem: \(result.err)")
    }

    func testAllocationBeyondTheDeviceLimitSaysHowMuch() throws {
        let device = try SharedDevice.backend()
        let limit = device.context.device.maxAllocationBytes
        XCTAssertThrowsError(try device.scratch([limit / 4 + 1024])) { error in
            let text = "\(error)"
            XCTAssertTrue(
                text.contains("cannot allocate") && text.contains(device.context.device.name)
                    && text.contains("largest single allocation"), text)
        }
    }

    func testStatusNamesAreSymbolic() {
        let e = OpenCLError(call: "clCreateBuffer", code: -4, detail: "", location: "x")
        XCTAssertEqual(e.codeName, "CL_MEM_OBJECT_ALLOCATION_FAILURE")
        XCTAssertEqual(
            OpenCLError(call: "CLBlastSgemm", code: -1009, detail: "", location: "x").codeName,
            "CLBlastInsufficientMemoryC")
    }
}

/// `hrtrain verify` end to end: passes on the real kernels, fails with a non-zero exit on a broken one.
final class VerifyCommandTests: XCTestCase {
    func testVerifyPassesAndPrintsEveryRow() throws {
        _ = try SharedDevice.backend()
        let result = try runHRTrain([
            "verify", "--backend", "opencl", "--batch", "50", "--hidden", "16,16", "--fd-probes", "8",
        ])
        XCTAssertEqual(result.status, 0, result.out + result.err)
        for row in [
            "bn1 output", "loss", "∂L/∂dense1.weight", "∂L/∂output.bias", "bn2.running_var (after step)",
            "output.weight (after Adam)", "loss over 5 steps", "finite differences",
        ] {
            XCTAssertTrue(result.out.contains(row), "missing row \(row)")
        }
        XCTAssertTrue(result.out.contains("PASS: all"))
    }

    func testVerifyFailsWhenAKernelIsBroken() throws {
        _ = try SharedDevice.backend()
        let dir = try temporaryDirectory(self)
        var broken = 0
        // A 1 % error in tanh's derivative, wherever a kernel computes it (the elementwise kernel and the fused
        // block kernels of both variants): only the gradients are wrong.
        let sites = ["dy[dy_off + i] * (1.0f - t * t)", "dx * (1.0f - tv * tv)"]
        for file in KernelSources.files {
            var text = file.source
            for site in sites where text.contains(site) {
                text = text.replacingOccurrences(of: site, with: site + " * 1.01f")
                broken += 1
            }
            try text.write(to: dir.appendingPathComponent(file.name), atomically: true, encoding: .utf8)
        }
        XCTAssertEqual(broken, 3, "elementwise.cl, columns.cl and fused.cl")
        let result = try runHRTrain(
            ["verify", "--backend", "opencl", "--batch", "50", "--hidden", "16,16", "--fd-probes", "4", "--json"],
            environment: ["HRTRAIN_KERNELS_DIR": dir.path, "HRTRAIN_CACHE_DIR": dir.path])
        XCTAssertEqual(result.status, 1, "verify must exit non-zero")
        let report = try JSONDecoder().decode(Verification.Report.self, from: Data(result.out.utf8))
        let failed = report.tensors.filter { !$0.passed }.map(\.name)
        XCTAssertTrue(failed.contains("∂L/∂dense1.weight"), "\(failed)")
        XCTAssertFalse(failed.contains("bn1 output"), "the forward pass is still right")
    }
}
