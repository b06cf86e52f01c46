"""The offline datasets: real files, correct splits, tf.data pipelines, clear errors."""

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

from core import data
from core.errors import UserError


def test_fashion_mnist_idx_files_are_read_whole():
    (x_train, y_train), (x_test, y_test) = data.load_fashion_mnist_arrays()
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert x_train.dtype == np.uint8 and 0 < x_train.mean() < 255
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10


def test_validation_is_carved_from_training_only():
    images = data.load_dataset("fashion_mnist", val_fraction=0.1, seed=3)
    assert images.num_train == 54000 and images.num_classes == 10 and images.image_shape == (28, 28, 1)
    (x_train, _), (x_test, _) = data.load_fashion_mnist_arrays()
    train_rows = {row.tobytes() for row in x_train.reshape(len(x_train), -1).astype(np.float32)}
    val = np.stack([x for x, _ in images.val.as_numpy_iterator()])
    assert len(val) == 6000
    assert all(row.tobytes() in train_rows for row in val.reshape(len(val), -1))
    first_test = next(images.test.as_numpy_iterator())[0]
    np.testing.assert_array_equal(first_test, x_test[0].astype(np.float32))


@pytest.mark.parametrize("name, n_train, n_test", [("mnist5k", 3600, 1000), ("digits", 1293, 360)])
def test_small_offline_datasets(name, n_train, n_test):
    images = data.load_dataset(name)
    assert images.image_shape == (28, 28, 1) and images.num_classes == 10
    assert images.num_train == n_train
    labels = np.array([y for _, y in images.test.as_numpy_iterator()])
    assert len(labels) == n_test and set(labels) == set(range(10))  # stratified: every class in test
    pixels = np.stack([x for x, _ in images.train.take(50).as_numpy_iterator()])
    assert pixels.dtype == np.float32 and pixels.max() > 100 and pixels.min() >= 0 and pixels.max() <= 255


def test_batched_pipeline_shapes_and_seeded_shuffle():
    images = data.load_dataset("digits", limit=200)
    pipeline = data.batched(images.train, 32, shuffle=True, seed=7)
    x, y = next(iter(pipeline))
    assert x.shape == (32, 28, 28, 1) and x.dtype == tf.float32 and y.dtype == tf.int32
    # A fresh pipeline with the same seed yields the same first epoch.
    first_epoch = np.concatenate(
        [y for _, y in data.batched(images.train, 32, shuffle=True, seed=7).as_numpy_iterator()]
    )
    again = np.concatenate([y for _, y in data.batched(images.train, 32, shuffle=True, seed=7).as_numpy_iterator()])
    np.testing.assert_array_equal(first_epoch, again)
    assert sorted(first_epoch) == sorted(y for _, y in images.train.as_numpy_iterator())


def test_unknown_and_unreachable_datasets_give_one_line_errors():
    with pytest.raises(UserError, match="unknown dataset 'cifar'.*fashion_mnist"):
        data.load_dataset("cifar")
    with pytest.raises(UserError, match="unknown tensorflow-datasets dataset 'no_such_dataset'"):
        data.load_dataset("tfds:no_such_dataset")


def test_tfds_dataset_without_network_names_the_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    if data._network_reachable():  # a machine with the network downloads it instead
        assert data.load_dataset("tfds:mnist", limit=10).image_shape == (28, 28, 1)
        return
    with pytest.raises(UserError, match="'mnist'.*offline datasets: digits, fashion_mnist, mnist5k"):
        data.load_dataset("tfds:mnist")


def test_missing_debian_package_says_how_to_install(tmp_path):
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist_arrays(str(tmp_path / "nowhere"))


def test_corrupt_idx_file_is_reported(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x01" * 100)
    with pytest.raises(UserError, match="corrupt IDX file.*expected 7840 bytes"):
        data.read_idx(str(path))
    path.write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="corrupt IDX file"):
        data.read_idx(str(path))
    with pytest.raises(UserError, match="file not found"):
        data.read_idx(os.path.join(tmp_path, "missing.gz"))


def test_a_shuffled_pipelines_order_is_a_function_of_the_epoch_not_of_its_passes():
    """The order of epoch E depends on (seed, E) only: an extra pass (Keras 3's `fit` makes one to build the
    model under a distribution strategy) or a new process (a resume) does not shift it, once the epoch counter
    is set as `core.training.fit` sets it."""
    images = data.load_dataset("digits", limit=96)

    def one_pass(pipeline):
        return np.concatenate([y for _, y in pipeline.as_numpy_iterator()])

    pipeline = data.batched(images.train, 32, shuffle=True, seed=7)
    epochs = [one_pass(pipeline) for _ in range(3)]  # outside `fit`: each pass the next epoch
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    assert sorted(epochs[1]) == sorted(epochs[0])
    counter = data.shuffle_epoch_counter(pipeline)
    counter.assign(1 - 1)  # as `fit` does before epoch 1: the next pass is epoch 1, whatever passes came before
    np.testing.assert_array_equal(one_pass(pipeline), epochs[1])
    again = data.batched(images.train, 32, shuffle=True, seed=7)  # a resumed run's fresh pipeline
    data.shuffle_epoch_counter(again).assign(2 - 1)
    np.testing.assert_array_equal(one_pass(again.skip(1)), epochs[2][32:])  # resumed after batch 1 of epoch 2
    other_seed = data.batched(images.train, 32, shuffle=True, seed=8)
    assert not np.array_equal(one_pass(other_seed), epochs[0])
    assert data.shuffle_epoch_counter(data.batched(images.train, 32)) is None


def test_a_run_resumed_mid_epoch_on_a_shuffled_pipeline_ends_with_the_uninterrupted_runs_weights(tmp_path):
    """A SIGTERM in epoch 2, then a rerun with a fresh pipeline (as a new process has): the rest of epoch 2 and
    epoch 3 see the batches an uninterrupted run sees, so the weights are the same to the last bit."""
    import signal

    import keras

    from core import training
    from core.errors import Preempted

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    examples = tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0).astype("int32")))

    def run(run_dir, extra=()):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
        training.fit(model, data.batched(examples, 8, shuffle=True, seed=3), data.batched(examples, 8), epochs=3,
                     run_dir=str(run_dir), extra_callbacks=extra, monitor=None)
        return model.get_weights()

    class TerminateInSecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    uninterrupted = run(tmp_path / "whole")
    with pytest.raises(Preempted, match="at epoch 2, batch 3"):
        run(tmp_path / "resumed", [TerminateInSecondEpoch()])
    resumed = run(tmp_path / "resumed")
    for w, u in zip(resumed, uninterrupted):
        np.testing.assert_array_equal(w, u)
