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
