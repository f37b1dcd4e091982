// swift-tools-version:5.10
import Foundation
import PackageDescription

let package = Package(
    name: "hrtrain",
    platforms: [.macOS(.v13)],
    // MARK: - Public API
    products: [
        .executable(name: "hrtrain", targets: ["hrtrain"]),
        .library(name: "HRTrain", targets: ["HRTrain"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    ],
    targets: [
        // MARK: - Implementation
        /// OpenCL 1.2 + CLBlast C API, and the few helpers Swift cannot import directly.
        .target(
            name: "CLShim",
            linkerSettings: [.linkedLibrary("OpenCL"), .linkedLibrary("clblast")]
        ),
        /// The CPU backend's C side: cpuid, the BLAS opened with dlopen, a parallel-for on libgomp's threads.
        .target(
            name: "CPUShim",
            linkerSettings: [.linkedLibrary("dl")]
        ),
        /// HDF5 (Debian's serial build): the type and property-list macros exported as functions.
        .target(
            name: "CHDF5",
            linkerSettings: [.linkedLibrary("hdf5_serial")]
        ),
        /// MPI loaded at run time (dlopen, Open MPI's ABI): the binary runs where no MPI is installed.
        .target(
            name: "CMPIShim",
            linkerSettings: [.linkedLibrary("dl")]
        ),
        /// The OpenCL C sources, embedded in the binary so a copied executable needs no source tree.
        .target(
            name: "HRTrainKernels",
            path: "Kernels",
            exclude: [],
            resources: [
                .embedInCode("elementwise.cl"),
                .embedInCode("reduce.cl"),
                .embedInCode("batchnorm.cl"),
                .embedInCode("loss.cl"),
                .embedInCode("adam.cl"),
                .embedInCode("columns.cl"),
                .embedInCode("fused.cl"),
            ]
        ),
        /// The ONNX protobuf messages, generated from onnx.proto by scripts/generate-onnx-proto.sh and committed.
        /// Machine-written code lives in Generated/, outside the Sources/ and Tests/ that the format and
        /// line-length checks read.
        .target(
            name: "ONNXProto",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
            path: "Generated/ONNXProto",
            exclude: ["onnx.proto"]
        ),
        .target(
            name: "HRTrain",
            dependencies: [
                "CLShim", "CPUShim", "CHDF5", "CMPIShim", "HRTrainKernels", "ONNXProto",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .executableTarget(
            name: "hrtrain",
            dependencies: [
                "HRTrain",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // MARK: - Tests
        .testTarget(
            name: "HRTrainTests",
            dependencies: ["HRTrain", "HRTrainKernels", "hrtrain", "ONNXProto"]
        ),
    ]
)

// MARK: - Fuzzing
/// The libFuzzer targets (Fuzz/run.sh): only with HRTRAIN_FUZZ=1, since they link against libFuzzer's main.
if ProcessInfo.processInfo.environment["HRTRAIN_FUZZ"] == "1" {
    package.targets.append(
        .executableTarget(name: "hrtrain-fuzz", dependencies: ["HRTrain"], path: "Fuzz/Sources/hrtrain-fuzz"))
    package.products.append(.executable(name: "hrtrain-fuzz", targets: ["hrtrain-fuzz"]))
}
