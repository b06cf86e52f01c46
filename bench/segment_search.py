"""Recipe search for the segment app's default, on the validation split only.

The suite's own models (apps/segment/models.py) trained with Keras 3 on the torch backend, one process per
config, on the GPU machine lent through `device` (which has PyTorch, no TensorFlow); the scenes travel as a
NumPy file written here by `python bench/segment_search.py --dump` (train and validation splits only).
Each output line: the config, the epoch, the training loss, the validation mIoU (11 classes) and per-class IoU.
bench/results/segment_search.jsonl holds the search that chose apps/segment/config.py's recipe: 24 configs in
two sittings (the second: more epochs, wider models, second seeds), Adam at batch 16 unless `bs` says otherwise;
`schedule` cosine decays to 0 over the run, onecycle warms up over a tenth of it from lr/10, none keeps lr; `hflip`
flips half the scenes left-right each epoch.

    python bench/segment_search.py --dump    # here: .devdata/scenes96.npz (22 MB)
    KERAS_BACKEND=torch python bench/segment_search.py '{"model": "unet", "epochs": 3, "schedule": "cosine"}'
"""

import json
import math
import os
import sys
import time

import numpy as np

DATA = os.path.join(".devdata", "scenes96.npz")
NUM_CLASSES = 11


def dump():
    sys.path.insert(0, os.getcwd())
    from core import scenes

    arrays = {}
    for split in ("train", "validation"):
        examples = list(scenes.load(split, "fashion_mnist_96", None).as_numpy_iterator())
        arrays[f"{split}_images"] = np.stack([e["image"] for e in examples])
        arrays[f"{split}_masks"] = np.stack([e["semantic"] for e in examples])
    os.makedirs(os.path.dirname(DATA), exist_ok=True)
    np.savez_compressed(DATA, **arrays)


def mean_iou(net, images, masks):
    """The mIoU and per-class IoU that `apps.segment evaluate` reports (apps/segment/metrics.py: NumPy only)."""
    import keras

    from apps.segment import metrics

    predicted = np.concatenate([keras.ops.convert_to_numpy(net.predict(images[i:i + 200], verbose=0)).argmax(-1)
                                for i in range(0, len(images), 200)])
    report = metrics.segmentation_report(metrics.confusion_matrix(masks, predicted, NUM_CLASSES))
    return report["mean_iou"], [round(float(v), 3) for v in report["iou"]]


def search(config):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    sys.path.insert(0, os.getcwd())
    from apps.segment import models

    keras.utils.set_random_seed(config.get("seed", 0))
    data = np.load(DATA, allow_pickle=False)
    train_images, train_masks = data["train_images"], data["train_masks"]
    net = models.build_model(config["model"], (96, 96, 1), NUM_CLASSES, width=config.get("width", 1.0))
    batch, epochs, lr = config.get("bs", 16), config["epochs"], config.get("lr", 2e-3)
    steps = epochs * math.ceil(len(train_images) / batch)
    if config.get("schedule") == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, steps)
    elif config.get("schedule") == "onecycle":
        lr = keras.optimizers.schedules.CosineDecay(lr / 10, steps - steps // 10, warmup_target=lr,
                                                    warmup_steps=steps // 10)

    def loss(y_true, y_pred):  # sparse cross-entropy of 4-D outputs fails under torch ("grad_input must be contiguous")
        shape = keras.ops.shape(y_pred)[:-1]
        return keras.losses.categorical_crossentropy(
            keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, shape), "int32"), NUM_CLASSES), y_pred)

    net.compile(optimizer=keras.optimizers.Adam(lr), loss=loss)
    start = time.time()
    for epoch in range(1, epochs + 1):
        images, masks = train_images, train_masks
        if config.get("hflip"):
            flip = np.random.rand(len(images)) < 0.5
            images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
            masks = np.where(flip[:, None, None], masks[:, :, ::-1], masks)
        history = net.fit(images.astype("float32"), masks.astype("int32"), batch_size=batch, epochs=1,
                          shuffle=True, verbose=0)
        value, per_class = mean_iou(net, data["validation_images"], data["validation_masks"])
        print(json.dumps({"cfg": config, "epoch": epoch, "loss": round(history.history["loss"][-1], 4),
                          "val_miou": round(value, 4), "per_class": per_class, "s": round(time.time() - start, 1)}),
              flush=True)


if __name__ == "__main__":
    dump() if sys.argv[1:] == ["--dump"] else search(json.loads(sys.argv[1]))
