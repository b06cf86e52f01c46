"""A small `core.training.fit` run to preempt: 64 points in 8 batches of 8 per epoch, printing
`epoch E batch B` (0-based) as each batch ends and then sleeping `--delay` seconds, so that a
test knows where the run is when it sends SIGTERM. Ends by printing the epochs this call
trained and the optimizer's step count (8 per epoch when no batch was trained twice or skipped).

Run as a script by test_preemption.py (through `run_cli`: exit 143 when preempted), or call
`main(argv)` in the test's own process for the rerun. `--strategy multiworker` (one process per
worker, the cluster in TF_CONFIG) splits each batch of 8 across the workers.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BATCHES = 8


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--strategy", default="default")
    args = parser.parse_args(argv)

    from core import distribute

    strategy = distribute.get_strategy(args.strategy)  # first: multi-worker must set up before TF starts

    import keras
    import numpy as np
    import tensorflow as tf

    from core import training

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(8 * BATCHES, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")

    class Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            print(f"epoch {self.epoch} batch {batch}", flush=True)
            time.sleep(args.delay)

    history = training.fit(model, data, data, epochs=args.epochs, run_dir=args.out, extra_callbacks=[Progress()],
                           writes_files=distribute.is_chief(strategy))
    print(f"trained epochs {history.epoch}, optimizer step {int(model.optimizer.iterations.numpy())}", flush=True)


if __name__ == "__main__":
    from core.errors import run_cli

    run_cli(main, prog="preemptible")
