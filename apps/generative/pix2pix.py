"""pix2pix (Isola, Zhu, Zhou & Efros, "Image-to-Image Translation with Conditional Adversarial
Networks", CVPR 2017): a conditional GAN that turns a drawing of a Fashion-MNIST item (its edge map, or
its silhouette) into the item.

  generator      a U-Net: strided convolutions down (28 -> 14 -> 7), transposed convolutions up, and skip
                 connections that hand each decoder level the encoder's features of the same size, so the
                 input's edges can reach the output without squeezing through the bottleneck;
  discriminator  a PatchGAN conditioned on the input: it sees the pair (input, image) stacked as two
                 channels and gives one logit per overlapping patch (`cyclegan.patch_discriminator` on the
                 pair: 7x7 logits, each judging an 18x18 patch, see `patch_geometry`), so it judges local
                 texture and sharpness and leaves the global layout to the L1 term;
  loss           G: λ·‖y - G(x)‖₁ + non-saturating adversarial loss of D(x, G(x));
                 D: ½ (cross-entropy of D(x, y) as real + of D(x, G(x)) as fake) (the paper halves it).
                 λ = 10 on images in [0, 1] (the paper: 100 on [-1, 1], where L1 is twice as large, over
                 ~200 epochs; in a few hundred steps the adversarial term needs a larger share to show).

The L1 term alone already learns the mapping, but it is minimized by the median of all plausible images,
which is blurry; the adversarial term penalizes blur because blurry patches are easy to tell from real
ones. `run` trains both (same generator, same steps) and reports the validation L1 of each, a sharpness
figure (mean Sobel gradient magnitude of the outputs over that of the targets: 1 is as sharp as the
real items) and a PNG grid, then exports the pix2pix generator (SavedModel + TFLite, parity-checked).
"""

import os

import keras
import numpy as np
import tensorflow as tf
from keras import layers

import losses as L
from apps.basics.common import print_table
from apps.basics.convolution import receptive_field
from apps.generative.common import AdversarialModel, arrays
from apps.generative.cyclegan import patch_discriminator
from core import data, export, plots, training

EDGE_THRESHOLD = 0.5  # Sobel magnitude (pixels in [0, 1]; a unit step edge gives 4)


# --------------------------------------------------------------------------
# The inputs: what a user would draw.


def edge_map(images):
    """Binary edges of [0, 1] images (N, H, W, 1): Sobel gradient magnitude above EDGE_THRESHOLD."""
    gradients = tf.image.sobel_edges(tf.convert_to_tensor(images, tf.float32))  # (N, H, W, 1, [dy, dx])
    magnitude = tf.norm(gradients, axis=-1)
    return tf.cast(magnitude > EDGE_THRESHOLD, tf.float32)


def silhouette(images):
    """Binary silhouettes: the pixels of the item (brighter than 5% of white)."""
    return tf.cast(tf.convert_to_tensor(images, tf.float32) > 0.05, tf.float32)


CONDITIONS = {"edges": edge_map, "silhouette": silhouette}


def load_pairs(condition="edges", limit=None, seed=0, val_fraction=0.1):
    """{train, val}: (inputs, targets) as float32 arrays (N, 28, 28, 1) in [0, 1] from Fashion-MNIST."""
    images = data.load_dataset("fashion_mnist", val_fraction=val_fraction, seed=seed, limit=limit)
    pairs = {}
    for split in ("train", "val"):
        targets, _ = arrays(getattr(images, split))
        pairs[split] = (np.asarray(CONDITIONS[condition](targets)), targets)
    return pairs


# --------------------------------------------------------------------------
# The networks.


def unet_generator(image_shape=(28, 28, 1), filters=16, name="generator"):
    """Input drawing [0, 1] -> image [0, 1]. Encoder: conv 4x4 stride 2 + LeakyReLU (28 -> 14 -> 7) and a 3x3
    bottleneck; decoder: transposed conv 4x4 stride 2 + ReLU, each followed by the encoder's features of
    its size (concatenated). No batch norm: the exported generator computes what training saw."""
    height, width, channels = image_shape
    if height % 4 or width % 4:
        raise ValueError(f"the U-Net needs a height and width divisible by 4, got {image_shape}")
    drawing = keras.Input(shape=image_shape, name="drawing")
    x0 = layers.Rescaling(2.0, offset=-1.0)(drawing)
    x1 = layers.LeakyReLU(0.2)(layers.Conv2D(filters, 4, strides=2, padding="same", name="down1")(x0))  # 14
    x2 = layers.LeakyReLU(0.2)(layers.Conv2D(2 * filters, 4, strides=2, padding="same", name="down2")(x1))  # 7
    x = layers.Conv2D(4 * filters, 3, padding="same", activation="relu", name="bottleneck")(x2)
    x = layers.Concatenate(name="skip2")([x, x2])
    x = layers.Conv2DTranspose(2 * filters, 4, strides=2, padding="same", activation="relu", name="up1")(x)  # 14
    x = layers.Concatenate(name="skip1")([x, x1])
    x = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", activation="relu", name="up2")(x)  # 28
    x = layers.Concatenate(name="skip0")([x, x0])
    x = layers.Conv2D(channels, 3, padding="same", activation="tanh", name="to_image")(x)
    return keras.Model(drawing, layers.Rescaling(0.5, offset=0.5, name="image")(x), name=name)


def conditional_patch_discriminator(image_shape=(28, 28, 1), filters=16, name="discriminator"):
    """[drawing, image] -> patch logits: the CycleGAN PatchGAN on the two stacked as channels."""
    drawing = keras.Input(shape=image_shape, name="drawing")
    image = keras.Input(shape=image_shape, name="image")
    pair = layers.Concatenate(name="pair")([drawing, image])
    patches = patch_discriminator((*image_shape[:2], 2 * image_shape[2]), filters, name="patchgan")(pair)
    return keras.Model([drawing, image], patches, name=name)


def patch_geometry(discriminator, side=28):
    """(logits per side, receptive field in pixels, pixels between neighbouring patches) of a PatchGAN,
    from its convolutions' kernel sizes and strides: r = 1 + Σ (k_l - 1) Π_{m<l} s_m, jump = Π s_l,
    and with 'same' padding each convolution's output side is ⌈input / stride⌉."""
    stack = [(layer.kernel_size[0], layer.strides[0]) for layer in _convolutions(discriminator)]
    for _, stride in stack:
        side = -(-side // stride)
    return side, receptive_field(stack), int(np.prod([stride for _, stride in stack]))


def _convolutions(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _convolutions(layer)
        elif isinstance(layer, layers.Conv2D):
            yield layer


# --------------------------------------------------------------------------
# The model.


@keras.saving.register_keras_serializable(package="generative")
class Pix2Pix(AdversarialModel):
    """Trained on batches of (drawing, image) by a custom `train_step`; `adversarial=False` trains the
    same generator on the L1 term alone (the baseline). `test_step` reports the L1 error."""

    def __init__(self, generator, discriminator, l1_weight=10.0, adversarial=True, **kwargs):
        super().__init__(**kwargs)
        self.generator, self.discriminator = generator, discriminator
        self.l1_weight, self.adversarial = float(l1_weight), bool(adversarial)
        names = ("l1", "g_adversarial", "d_loss")
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.built = True

    def generator_variables(self):
        return self.generator.trainable_variables

    def discriminator_variables(self):
        return self.discriminator.trainable_variables

    def call(self, drawings, training=False):
        return self.generator(drawings, training=training)

    def losses_of(self, drawings, images, training=True):
        """(generator loss, discriminator loss, L1, adversarial term) of one batch."""
        fake = self.generator(drawings, training=training)
        l1 = tf.reduce_mean(tf.abs(images - fake))
        if not self.adversarial:
            zero = tf.zeros_like(l1)
            return self.l1_weight * l1, zero, l1, zero
        real_logits = self.discriminator([drawings, images], training=training)
        fake_logits = self.discriminator([drawings, fake], training=training)
        adversarial = L.generator_loss_non_saturating(fake_logits)
        d_loss = 0.5 * L.discriminator_loss_minimax(real_logits, fake_logits)
        return adversarial + self.l1_weight * l1, d_loss, l1, adversarial

    def train_step(self, data):
        drawings, images = data[0], data[1]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync  # the strategy sums replica gradients
        g_vars, d_vars = self.generator.trainable_variables, self.discriminator.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            g_loss, d_loss, l1, adversarial = self.losses_of(drawings, images)
            g_scaled, d_scaled = g_loss / replicas, d_loss / replicas
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_scaled, g_vars), g_vars))
        if self.adversarial:  # D's gradient flows through G(x) only into D's weights: fake is an input to D here
            self.d_optimizer.apply_gradients(zip(tape.gradient(d_scaled, d_vars), d_vars))
        del tape
        return self._update(l1, adversarial, d_loss)

    def test_step(self, data):
        _, d_loss, l1, adversarial = self.losses_of(data[0], data[1], training=False)
        return self._update(l1, adversarial, d_loss)

    def _update(self, l1, adversarial, d_loss):
        for tracker, value in zip(self.trackers.values(), (l1, adversarial, d_loss)):
            tracker.update_state(value)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        return {**super().get_config(), "generator": keras.saving.serialize_keras_object(self.generator),
                "discriminator": keras.saving.serialize_keras_object(self.discriminator),
                "l1_weight": self.l1_weight, "adversarial": self.adversarial}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("generator", "discriminator"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def build(image_shape=(28, 28, 1), *, l1_weight=10.0, adversarial=True, filters=16, learning_rate=1e-3, seed=0):
    """A compiled `Pix2Pix`: Adam with β₁ = 0.5 as in the paper, whose step 2e-4 is raised here for a budget
    of hundreds of steps instead of ~200 epochs."""
    keras.utils.set_random_seed(seed)
    net = Pix2Pix(unet_generator(image_shape, filters), conditional_patch_discriminator(image_shape, filters),
                  l1_weight=l1_weight, adversarial=adversarial, name="pix2pix" if adversarial else "l1_only")
    net.compile(g_optimizer=keras.optimizers.Adam(learning_rate, beta_1=0.5),
                d_optimizer=keras.optimizers.Adam(learning_rate, beta_1=0.5))
    return net


def train(net, pairs, *, epochs, batch_size=32, seed=0, verbose=0):
    """`fit` on the training pairs; returns the validation L1 after the last epoch."""
    train_ds = tf.data.Dataset.from_tensor_slices(pairs["train"]).shuffle(len(pairs["train"][0]), seed=seed)
    net.fit(train_ds.batch(batch_size, drop_remainder=True), epochs=epochs, shuffle=False, verbose=verbose)
    return validation_l1(net.generator, *pairs["val"])


# --------------------------------------------------------------------------
# Measures, baselines, pictures, export.


def validation_l1(generator, drawings, images):
    return float(np.mean(np.abs(np.asarray(generator.predict(drawings, batch_size=500, verbose=0)) - images)))


def baselines(drawings, images, train_images):
    """L1 of answers that need no learning: the input itself, a blank (black) image, the mean training image."""
    mean_image = train_images.mean(axis=0, keepdims=True)
    return {"identity (the input)": float(np.mean(np.abs(drawings - images))),
            "blank": float(np.mean(np.abs(images))),
            "mean training image": float(np.mean(np.abs(mean_image - images)))}


def sharpness(images):
    """Mean Sobel gradient magnitude: blur lowers it."""
    return float(tf.reduce_mean(tf.norm(tf.image.sobel_edges(tf.convert_to_tensor(images, tf.float32)), axis=-1)))


def grid_png(drawings, outputs, images, path, count=8):
    """Columns: examples; rows: input, each model's output, target."""
    rows = [drawings[:count], *[o[:count] for o in outputs.values()], images[:count]]
    titles = ["input"] * count + [n for n in outputs for _ in range(count)] + ["target"] * count
    return plots.image_grid(np.clip(np.concatenate(rows), 0, 1), titles, path, columns=count,
                            title="pix2pix: input drawing, outputs, target (validation images)")


def export_generator(generator, export_root, sample_drawings, calibration_drawings, version=None):
    """The generator (drawing -> image) as SavedModel + float/dynamic/int8 TFLite (int8 calibrated on
    `calibration_drawings`, training drawings), parity-checked by `core.export` (each TFLite output within its
    tolerance of the SavedModel's, int8 too)."""
    calibration = np.asarray(calibration_drawings, np.float32)
    return export.export_model(generator, export.export_folder("generative", "pix2pix", export_root),
                               input_names=["drawing"], output_names=["image"],
                               sample_inputs={"drawing": np.asarray(sample_drawings, np.float32)},
                               representative_data=[calibration[i:i + 16] for i in range(0, len(calibration), 16)],
                               version=version)


def run(*, folder=os.path.join("runs", "generative", "pix2pix"), small=False, seed=0, condition="edges",
        l1_weight=10.0, epochs=None, limit=None, export_root="saved_models"):
    folder = training.make_output_dir(folder)
    limit = limit or (1600 if small else 6000)
    epochs = epochs or 2
    pairs = load_pairs(condition, limit, seed)
    pairs["val"] = tuple(a[:1000] for a in pairs["val"])
    drawings, images = pairs["val"]
    print(f"pix2pix on Fashion-MNIST {condition} -> item: {len(pairs['train'][0])} training pairs, {epochs} epochs "
          f"of batch 32, λ = {l1_weight:g}; validation on {len(images)} pairs")
    nets, figures = {}, {}
    for adversarial in (True, False):
        net = build(images.shape[1:], l1_weight=l1_weight, adversarial=adversarial, seed=seed)
        l1 = train(net, pairs, epochs=epochs, seed=seed, verbose=2)
        outputs = np.asarray(net.generator.predict(drawings, batch_size=500, verbose=0))
        nets[net.name], figures[net.name] = net, {"l1": l1, "sharpness": sharpness(outputs) / sharpness(images),
                                                  "outputs": outputs}
    rows = [[f"{name}" + (f" (λ = {l1_weight:g} + adversarial)" if name == "pix2pix" else " (λ·L1 alone)"),
             f["l1"], f["sharpness"]] for name, f in figures.items()]
    rows += [[f"baseline: {name}", value, ""] for name, value in baselines(drawings, images, pairs["train"][1]).items()]
    print_table(f"validation ({len(images)} pairs): mean absolute error per pixel, and sharpness (mean Sobel "
                f"gradient magnitude relative to the targets': 1 = as sharp as real items)",
                ["model", "L1", "sharpness"], rows)
    png = grid_png(drawings, {n: f["outputs"] for n, f in figures.items()}, images,
                   os.path.join(folder, "translations.png"))
    print(f"wrote {png}")
    report = export_generator(nets["pix2pix"].generator, export_root, drawings[:32], pairs["train"][0][:64])
    print(f"wrote SavedModel {report['saved_model']} (signature '{export.SIGNATURE}': drawing -> image)")
    for kind, path in report["tflite"].items():
        print(f"wrote TFLite {path} (max |difference| vs SavedModel {report['max_abs_diff'][kind]:.2g}, "
              f"tolerance {export.TOLERANCES[kind]})")
    return {"figures": {n: {k: v for k, v in f.items() if k != "outputs"} for n, f in figures.items()},
            "baselines": baselines(drawings, images, pairs["train"][1]), "export": report, "pngs": [png],
            "generator": nets["pix2pix"].generator}
