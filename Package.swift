// swift-tools-version:5.10
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
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0")
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
            ]
        ),
        .target(
            name: "HRTrain",
            dependencies: ["CLShim", "CPUShim", "CHDF5", "HRTrainKernels"]
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
            dependencies: ["HRTrain", "HRTrainKernels", "hrtrain"]
        ),
    ]
)
