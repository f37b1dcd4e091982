/// The hrtrain version, written into model files and reports.
public enum HRTrainVersion {
    /// Semantic version string.
    public static let string = "0.1.0"
}
