#!/usr/bin/env python3
"""Runs an hrtrain model file's inference with numpy alone, from what the file says about itself.

    python3 scripts/predict-numpy.py [--no-calibration] MODEL.safetensors EVENTS OUTPUT

EVENTS: .csv (header row) or .npy (with its EVENTS.npy.columns, one name per line) or, with h5py installed,
.h5/.hdf5 (a 2-D dataset "data" with a "columns" attribute); the model's feature columns are picked by name.
OUTPUT: .csv or .npy (+ .columns), one column per target. Needs numpy and safetensors; computes in float64
what `hrtrain predict --backend reference` computes:

    x = (features - feature_scaler.mean) / feature_scaler.scale
    per hidden block l:  z = x @ dense<l>.weight + dense<l>.bias          (weight stored [in, out])
        BN(t) = bn<l>.gamma * (t - running_mean) / sqrt(running_var + eps) + bn<l>.beta
        dense-tanh-bn:  x = BN(tanh(z))        dense-bn-tanh:  x = tanh(BN(z))
    y = x @ output.weight + output.bias;  with a target scaler: y = y * target_scaler.scale + target_scaler.mean
    residual models ("baseline": one feature column per target):  y = y + features[:, baseline]   (raw values)
    calibrated models ("calibration", method isotonic-log-linear or inverted-log-linear, unless --no-calibration):
        m = |y| (per event, over x and y);  R = interpolation of the knots (magnitudes, responses) linear in ln m,
        constant beyond the outermost knots;  y = y / R   (events with m = 0 are left as they are)

eps, the activations, the layer order and the weight orientation come from the model's "inference" metadata
(hrtrain >= the version that writes it); for older files, eps comes from the numerics profile (keras 1e-3,
pytorch 1e-5). A model whose metadata holds a transform this script does not know (another calibration method,
another activation, ...) is refused rather than predicted wrong.
"""
import json
import sys

import numpy as np
from safetensors import safe_open

EPSILON = {"keras": 1e-3, "pytorch": 1e-5}
KNOWN_KEYS = {"format", "formatVersion", "hrtrainVersion", "spec", "profile", "featureNames", "targetNames",
              "training", "epochsTrained", "dataFile", "device", "initialization", "inference", "baseline",
              "calibration"}
# The stored calibration: method, magnitudes and responses define it; the rest records how it was fitted.
CALIBRATION_KEYS = {"method", "magnitudes", "responses", "edges", "counts", "measured", "events", "sample",
                    "cappedKnots", "binning", "iterations", "closure"}
# Two ways of fitting the knots, one way of applying them.
CALIBRATION_METHODS = {"isotonic-log-linear", "inverted-log-linear"}
# What this script computes, in the words of the model file's "inference" conventions.
CONVENTIONS = {"activation": "tanh", "outputActivation": "linear",
               "weightLayout": "[in, out], row-major: y = x · W + b",
               "featureScaling": "z = (x - feature_scaler.mean) / feature_scaler.scale",
               "batchNorm": "y = gamma * (x - running_mean) / sqrt(running_var + epsilon) + beta"}
LAYER_ORDERS = {"dense-tanh-bn": "dense -> tanh -> batch norm", "dense-bn-tanh": "dense -> batch norm -> tanh"}


def load_model(path):
    with safe_open(path, "np") as f:
        meta = f.metadata() or {}
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    if meta.get("format") != "hrtrain-model":
        sys.exit(f"{path}: not an hrtrain model file")
    info = json.loads(meta["hrtrain"])
    unknown = sorted(set(info) - KNOWN_KEYS)
    if unknown or info.get("formatVersion") not in (1, 2):
        sys.exit(f"{path}: metadata {unknown or info.get('formatVersion')} not understood by this script; refusing")
    baseline = info.get("baseline")
    if baseline is not None and (not isinstance(baseline, list) or len(baseline) != len(info["targetNames"])
                                 or any(name not in info["featureNames"] for name in baseline)):
        sys.exit(f"{path}: baseline {baseline} must name one feature column per target; refusing")
    calibration = info.get("calibration")
    if calibration is not None:
        if not isinstance(calibration, dict) or len(info["targetNames"]) != 2:
            sys.exit(f"{path}: calibration {calibration!r:.60} is not one of the recoil's (x, y); refusing")
        unknown = sorted(set(calibration) - CALIBRATION_KEYS)
        if unknown or calibration.get("method") not in CALIBRATION_METHODS:
            sys.exit(f"{path}: calibration {unknown or calibration.get('method')} not understood by this script; "
                     "refusing")
    stated = info.get("inference")
    if stated is not None:
        expected = dict(CONVENTIONS, layerOrder=LAYER_ORDERS.get(info["spec"]["layerOrder"]))
        differ = sorted(k for k, v in expected.items() if stated.get(k) != v)
        if differ:
            sys.exit(f"{path}: inference conventions {differ} = {[stated.get(k) for k in differ]} are not what this "
                     "script computes; refusing")
    return info, tensors


def read_events(path, names):
    if path.endswith(".npy"):
        data = np.load(path)
        with open(path + ".columns") as f:
            columns = f.read().split("\n")
    elif path.endswith((".h5", ".hdf5")):
        import h5py
        with h5py.File(path, "r") as f:
            data = f["data"][...]
            columns = [c.decode() if isinstance(c, bytes) else c for c in f["data"].attrs["columns"]]
    else:
        with open(path) as f:
            columns = f.readline().strip().split(",")
        data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float32)
    missing = [n for n in names if n not in columns]
    if missing:
        sys.exit(f"{path}: lacks the model's feature columns {missing}")
    # hrtrain reads every value as float32, then computes in float64 (reference) or float32 (devices).
    return data[:, [columns.index(n) for n in names]].astype(np.float32).astype(np.float64)


def predict(info, t, x):
    spec = info["spec"]
    eps = info["inference"]["batchNormEpsilon"] if "inference" in info else EPSILON[info["profile"]]
    x = (x - t["feature_scaler.mean"]) / t["feature_scaler.scale"]
    for l in range(1, len(spec["hiddenSizes"]) + 1):
        z = x @ t[f"dense{l}.weight"].astype(np.float64) + t[f"dense{l}.bias"]

        def bn(v):
            g, b, m, var = (t[f"bn{l}.{k}"].astype(np.float64)
                            for k in ("gamma", "beta", "running_mean", "running_var"))
            return g * (v - m) / np.sqrt(var + eps) + b

        x = bn(np.tanh(z)) if spec["layerOrder"] == "dense-tanh-bn" else np.tanh(bn(z))
    y = x @ t["output.weight"].astype(np.float64) + t["output.bias"]
    if "target_scaler.mean" in t:
        y = y * t["target_scaler.scale"] + t["target_scaler.mean"]
    return y


def add_baseline(info, y, features):
    """Residual models: the raw baseline columns (one per target) added to the network's prediction."""
    if info.get("baseline"):
        y = y + features[:, [info["featureNames"].index(name) for name in info["baseline"]]]
    return y


def calibrate(info, y):
    """y / R(|y|), R linear in ln|y| between the knots and constant beyond them; |y| = 0 stays 0."""
    calibration = info.get("calibration")
    if calibration is None:
        return y
    m = np.hypot(y[:, 0], y[:, 1])
    positive = m > 0
    response = np.ones_like(m)
    response[positive] = np.interp(np.log(m[positive]), np.log(calibration["magnitudes"]), calibration["responses"])
    return y / response[:, None]


def main():
    arguments = sys.argv[1:]
    calibrated = "--no-calibration" not in arguments
    arguments = [a for a in arguments if a != "--no-calibration"]
    if len(arguments) != 3:
        sys.exit(__doc__)
    model, events, output = arguments
    info, tensors = load_model(model)
    features = read_events(events, info["featureNames"])
    # hrtrain rounds the network's output to float32 before the baseline and the calibration.
    y = add_baseline(info, predict(info, tensors, features).astype(np.float32).astype(np.float64), features)
    if calibrated:
        y = calibrate(info, y.astype(np.float32).astype(np.float64))
    y = y.astype(np.float32)
    if output.endswith(".npy"):
        np.save(output, y)
        with open(output + ".columns", "w") as f:
            f.write("".join(name + "\n" for name in info["targetNames"]))
    else:
        np.savetxt(output, y, delimiter=",", header=",".join(info["targetNames"]), comments="", fmt="%.9g")
    steps = [info["profile"], info["spec"]["layerOrder"]]
    if info.get("baseline"):
        steps.append("baseline " + ",".join(info["baseline"]) + " added")
    if info.get("calibration") is not None:
        steps.append("response calibration " + ("applied" if calibrated else "left out (--no-calibration)"))
    print(f"predicted {len(y)} events with {model} ({', '.join(steps)}) -> {output}")


if __name__ == "__main__":
    main()
