#!/usr/bin/env python3
"""Keras (TensorFlow backend) peer of `hrtrain bench`: the same MLP, model.fit on the CPU.

38 inputs -> [Dense(256, tanh) -> BatchNormalization] x3 -> Dense(2); loss "mse"; Adam(lr
1e-3, beta_1 0.9, beta_2 0.999, epsilon 1e-7); Keras defaults for init (Glorot uniform,
zero bias) and BatchNormalization (momentum 0.99, epsilon 1e-3). Trained the way a Keras
user does: model.compile(...) then model.fit(x, y, batch_size=4000) on NumPy arrays
(Keras' own tf.data pipeline with its default per-epoch shuffle; jit_compile="auto",
which Keras resolves to no XLA on a CPU-only machine; --jit-compile forces XLA).

Timed: a first fit() of --warmup-steps batches traces the train function (untimed);
then one fit() epoch of exactly --steps full batches, timed from on_epoch_begin to
on_epoch_end (so fit()'s setup is excluded, the input pipeline is included, as it is
for a Keras user). Prints one JSON line.
"""

from peer_common import pin_threads_from_argv

threads = pin_threads_from_argv()

import os  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import time  # noqa: E402

import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402

import peer_common as pc  # noqa: E402


def build(inputs, hidden, outputs, layout):
    layers = [keras.Input(shape=(inputs,))]
    for h in hidden:
        if layout == "dense-tanh-bn":
            layers += [keras.layers.Dense(h, activation="tanh"), keras.layers.BatchNormalization()]
        else:  # dense-bn-tanh
            layers += [keras.layers.Dense(h), keras.layers.BatchNormalization(), keras.layers.Activation("tanh")]
    layers.append(keras.layers.Dense(outputs))
    return keras.Sequential(layers)


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.elapsed = time.perf_counter() - self.start
        self.loss = logs.get("loss") if logs else None


def main():
    p = pc.parser(__doc__.splitlines()[0])
    p.add_argument("--jit-compile", action="store_true", help='compile(jit_compile=True) (XLA); default "auto"')
    args = p.parse_args()
    if args.threads != threads:
        raise SystemExit("internal: thread count mismatch")
    if args.warmup_steps < 1:
        raise SystemExit("--warmup-steps must be >= 1 (the first fit traces the train function)")
    keras.utils.set_random_seed(args.seed)

    x_np, y_np = pc.load_data(args)
    b = args.batch
    warm = pc.batch_order(len(x_np), b, args.warmup_steps, args.seed)
    timed = pc.batch_order(len(x_np), b, args.steps, args.seed + 1)
    xw, yw = x_np[warm], y_np[warm]
    xt, yt = x_np[timed], y_np[timed]

    model = build(x_np.shape[1], pc.parse_hidden(args.hidden), y_np.shape[1], args.layout)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7),
        loss="mse",
        jit_compile=True if args.jit_compile else "auto",
    )

    t_warm = time.perf_counter()
    model.fit(xw, yw, batch_size=b, epochs=1, verbose=0)
    warmup_s = time.perf_counter() - t_warm

    timer = EpochTimer()
    model.fit(xt, yt, batch_size=b, epochs=1, verbose=0, callbacks=[timer])
    elapsed = timer.elapsed

    pc.emit({
        "framework": "keras",
        "version": f"{keras.__version__} (tensorflow {tf.__version__})",
        "events_per_second": b * args.steps / elapsed,
        "ms_per_step": 1e3 * elapsed / args.steps,
        "batch": b,
        "steps": args.steps,
        "threads": args.threads,
        "layout": args.layout,
        "device": "cpu",
        # fit()'s "loss" log is the running mean over the epoch (what Keras prints), not the last batch
        "final_loss": float(timer.loss) if timer.loss is not None else None,
        "mode": "fit-xla" if model.jit_compile else "fit",
        "hidden": args.hidden,
        "warmup_steps": args.warmup_steps,
        "warmup_s": warmup_s,
        "data": pc.data_label(args),
    })


if __name__ == "__main__":
    main()
