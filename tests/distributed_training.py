"""Train LeNet-5 for a few steps under one tf.distribute strategy and save the weights.

Run as a script by test_distribute.py, one process per worker, because the
device layout and the cluster must be set before TensorFlow starts. With
--app-run DIR the training goes through the classify app's own `train` verb
(its data pipeline, callbacks and checkpoints) into the run folder DIR.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GLOBAL_BATCH = 64


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--logical-cpus", type=int, default=0)
    parser.add_argument("--weights", required=True, help="where the chief writes the trained weights (.npz)")
    parser.add_argument("--app-run", default=None, help="train with `python -m apps.classify train` into this folder")
    args = parser.parse_args()

    from core import distribute

    if args.logical_cpus:
        distribute.split_cpu(args.logical_cpus)

    import keras
    import numpy as np

    # float64: the strategies sum gradients in a different order than one
    # device (per-replica partial sums, then an all-reduce), and oneDNN and
    # Eigen kernels order their sums differently again. In float32 those
    # rounding differences (~1e-7 relative per sum) grow through 16 SGD steps
    # to ~1e-4; in float64 they stay ~1e-13, so a tight tolerance can only be
    # missed by a real difference (a wrong batch split or a missing all-reduce).
    # oneDNN has no float64 kernels, so this also runs the same Eigen code on
    # every CPU.
    keras.config.set_floatx("float64")

    if args.app_run:
        return train_with_the_app(args)

    from apps.classify.models import build_model
    from core import data

    strategy = distribute.get_strategy(args.strategy)  # first: multi-worker must set up before TF starts
    keras.utils.set_random_seed(0)
    images = data.load_dataset("digits", limit=512)
    with strategy.scope():
        model = build_model("lenet5", images.image_shape, images.num_classes)
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    # The same global batches in the same order for every strategy: the
    # strategy splits each one across its replicas.
    model.fit(data.batched(images.train, GLOBAL_BATCH), epochs=2, verbose=0, shuffle=False)
    if distribute.is_chief(strategy):
        np.savez(args.weights, *model.get_weights())
    print(f"replicas={strategy.num_replicas_in_sync}")


def train_with_the_app(args):
    """The app's `train` with the global batch of the script above: 64 per step (per replica 64 / replicas),
    SGD at a constant rate, no augmentation."""
    import json

    import numpy as np

    from apps.classify.__main__ import main as classify
    from core import training

    replicas = 2 if args.strategy == "mirrored" else 1
    classify(["train", "--model", "lenet5", "--dataset", "digits", "--limit", "512", "--epochs", "2",
              "--batch-size", str(GLOBAL_BATCH // replicas), "--optimizer", "sgd", "--learning-rate", "0.05",
              "--lr-schedule", "constant", "--warmup-epochs", "0", "--label-smoothing", "0", "--augment", "",
              "--strategy", args.strategy, "--run", args.app_run])
    with open(f"{args.app_run}/config.json") as f:
        recorded = json.load(f)
    np.savez(args.weights, *training.load_trained_model(args.app_run).get_weights())
    print(f"replicas={recorded['replicas']} strategy={recorded['strategy']}")


if __name__ == "__main__":
    main()
