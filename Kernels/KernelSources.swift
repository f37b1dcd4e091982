/// The OpenCL C sources of hrtrain's kernels, embedded in the binary at build time.
///
/// The order matters: `batchnorm.cl` uses `tree_sum` from `reduce.cl`.
public enum KernelSources {
    /// (file name, source text) for every kernel file, in build order.
    public static let files: [(name: String, source: String)] = [
        ("elementwise.cl", String(decoding: PackageResources.elementwise_cl, as: UTF8.self)),
        ("reduce.cl", String(decoding: PackageResources.reduce_cl, as: UTF8.self)),
        ("batchnorm.cl", String(decoding: PackageResources.batchnorm_cl, as: UTF8.self)),
        ("loss.cl", String(decoding: PackageResources.loss_cl, as: UTF8.self)),
        ("adam.cl", String(decoding: PackageResources.adam_cl, as: UTF8.self)),
        ("columns.cl", String(decoding: PackageResources.columns_cl, as: UTF8.self)),
        ("fused.cl", String(decoding: PackageResources.fused_cl, as: UTF8.self)),
    ]
}
