"""Experiment 7: greedy layer-wise pre-training vs direct training.

A deep sigmoid MLP (784-256-128-64-10) is trained on few labels two ways:

  direct       random (Glorot) initialization, then supervised training
  pre-trained  each hidden layer is first trained as the encoder of a one-layer autoencoder on
               the previous layer's codes of many unlabeled images (Bengio et al. 2007, stacked
               autoencoders), then the stack plus a fresh softmax layer is fine-tuned with the labels

Both get the same supervised optimizer, epochs and labelled images, so the
difference is the starting point.
"""

import os

import keras
import numpy as np

from apps.basics.common import experiment_folder, load_arrays, print_table, save

HIDDEN = (256, 128, 64)


def pretrain_layers(x_unlabeled, hidden=HIDDEN, *, epochs=3, seed=0):
    """Greedy stacked-autoencoder pre-training; returns the encoder Dense layers and the
    reconstruction MSE (first, last epoch) of each autoencoder."""
    keras.utils.set_random_seed(seed)
    encoders, losses, codes = [], [], x_unlabeled
    for i, units in enumerate(hidden):
        encoder = keras.layers.Dense(units, activation="sigmoid", name=f"hidden{i + 1}")
        # the pixels live in [0, 1] and so do sigmoid codes: a sigmoid decoder fits both
        decoder = keras.layers.Dense(codes.shape[1], activation="sigmoid")
        autoencoder = keras.Sequential([keras.Input((codes.shape[1],)), encoder, decoder])
        autoencoder.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        history = autoencoder.fit(codes, codes, epochs=epochs, batch_size=64, verbose=0).history["loss"]
        losses.append((float(history[0]), float(history[-1])))
        encoders.append(encoder)
        codes = encoder(codes).numpy()
    return encoders, losses


def classifier(encoders=None, hidden=HIDDEN, input_dim=784, classes=10):
    """The deep sigmoid MLP; with `encoders` its hidden layers start from the pre-trained weights."""
    layers = [keras.Input((input_dim,))]
    for i, units in enumerate(hidden):
        dense = keras.layers.Dense(units, activation="sigmoid", name=f"hidden{i + 1}")
        layers.append(dense)
    layers.append(keras.layers.Dense(classes, name="logits"))
    model = keras.Sequential(layers)
    if encoders is not None:
        for dense, encoder in zip(model.layers[:-1], encoders):
            dense.set_weights(encoder.get_weights())
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def compare(*, labelled=1000, unlabeled=10000, pretrain_epochs=3, epochs=20, seed=0):
    arrays = load_arrays("fashion_mnist", limit=max(labelled, unlabeled), seed=seed)
    (x, y), (x_val, y_val), (x_test, y_test) = arrays["train"], arrays["val"], arrays["test"]
    encoders, ae_losses = pretrain_layers(x[:unlabeled], epochs=pretrain_epochs, seed=seed)
    results = {"autoencoder_losses": ae_losses}
    for name, start in (("direct", None), ("pre-trained", encoders)):
        keras.utils.set_random_seed(seed)
        model = classifier(start, input_dim=x.shape[1])
        history = model.fit(x[:labelled], y[:labelled], validation_data=(x_val[:2000], y_val[:2000]),
                            epochs=epochs, batch_size=32, verbose=0).history
        results[name] = {"history": history,
                         "test_accuracy": float(model.evaluate(x_test, y_test, verbose=0, batch_size=1024)[1])}
    return results


def run(*, folder=None, small=False, seed=0):
    import matplotlib.pyplot as plt

    folder = experiment_folder(folder, "pretraining")
    settings = (dict(labelled=300, unlabeled=3000, pretrain_epochs=2, epochs=8) if small
                else dict(labelled=1000, unlabeled=20000, pretrain_epochs=5, epochs=30))
    results = compare(seed=seed, **settings)

    print_table(f"layer-wise pre-training: sigmoid MLP 784-{'-'.join(map(str, HIDDEN))}-10, "
                f"{settings['labelled']} labels, {settings['unlabeled']} unlabeled images",
                ["training", "val acc (epoch 1)", "best val acc", "final val acc", "test acc"],
                [[name, r["history"]["val_accuracy"][0], max(r["history"]["val_accuracy"]),
                  r["history"]["val_accuracy"][-1], r["test_accuracy"]]
                 for name, r in results.items() if name != "autoencoder_losses"])
    print("  autoencoder reconstruction MSE per layer (first -> last epoch): " +
          ", ".join(f"{a:.4f} -> {b:.4f}" for a, b in results["autoencoder_losses"]))

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for name in ("direct", "pre-trained"):
        h = results[name]["history"]
        epochs = np.arange(1, len(h["loss"]) + 1)
        axes[0].plot(epochs, h["loss"], "--", label=f"{name}: train")
        axes[0].plot(epochs, h["val_loss"], "-", label=f"{name}: validation")
        axes[1].plot(epochs, h["val_accuracy"], "o-", ms=3,
                     label=f"{name} (test acc {results[name]['test_accuracy']:.3f})")
    axes[0].set_title("cross-entropy", fontsize=10)
    axes[1].set_title(f"validation accuracy, {settings['labelled']} labelled images", fontsize=10)
    for ax in axes:
        ax.set_xlabel("supervised epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    png = save(fig, os.path.join(folder, "pretraining_vs_direct.png"))
    print(f"wrote {png}")
    return {"results": results, "pngs": [png]}
