"""A toy localisation problem with a known answer, for checking the methods:
a square or an X drawn at a random place on a noisy background. The class
depends only on the object, so an explanation that works must point at it.
"""

import numpy as np

from apps.visualize.common import Classifier

CLASSES = ["square", "cross"]


def shapes(count, *, size=32, object_size=8, seed=0):
    """Images (N, size, size, 1) in [0, 255], labels (N,), and each object's
    top-left corner (N, 2)."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 60, (count, size, size, 1)).astype(np.float32)
    labels = rng.integers(0, 2, count)
    corners = rng.integers(0, size - object_size + 1, (count, 2))
    k = np.arange(object_size)
    square = np.zeros((object_size, object_size), bool)
    square[[0, -1], :] = square[:, [0, -1]] = True
    cross = np.zeros((object_size, object_size), bool)
    cross[k, k] = cross[k, object_size - 1 - k] = True
    for image, label, (top, left) in zip(images, labels, corners):
        mask = square if label == 0 else cross
        patch = image[top:top + object_size, left:left + object_size, 0]
        patch[mask] = 255.0
    return images, labels.astype(np.int64), corners


def build_model(size=32):
    """conv-relu-pool-conv-relu-GAP-softmax: Grad-CAM's favourite shape."""
    import keras
    from keras import layers

    images = keras.Input((size, size, 1), name="images")
    x = layers.Rescaling(1 / 255.0, name="scale")(images)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    probabilities = layers.Dense(2, activation="softmax", name="probabilities")(x)
    return keras.Model(images, probabilities, name="toy_shapes")


def train_toy(count=2000, epochs=4, seed=0):
    """A trained toy classifier wrapped as a `Classifier` (accuracy near 1)."""
    import keras

    keras.utils.set_random_seed(seed)
    x, y, _ = shapes(count, seed=seed)
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return Classifier(name="toy_shapes", class_names=CLASSES, image_shape=(32, 32, 1), dataset=None, model=model)
