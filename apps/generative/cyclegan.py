"""CycleGAN (Zhu et al., "Unpaired Image-to-Image Translation using
Cycle-Consistent Adversarial Networks", 2017) between two image domains
without paired examples, e.g. two Fashion-MNIST classes (sneakers <-> ankle
boots) or digits <-> fashion items.

Two generators G: A -> B and F: B -> A, two discriminators D_A and D_B. The
adversarial terms are least squares (LSGAN, as in the paper), plus the
cycle-consistency loss λ (||F(G(a)) - a||₁ + ||G(F(b)) - b||₁) and the
identity loss ½λ (||G(b) - b||₁ + ||F(a) - a||₁) of Sec. 5.2. Images in [0, 1].
"""

import os

import keras
import numpy as np
import tensorflow as tf
from keras import layers

import losses as L
from apps.generative.common import AdversarialModel
from core import precision
from core.errors import UserError
from layers import ResidualBlock


def translator(image_shape, filters=32, residual_blocks=2, name="generator"):
    """Image -> image: conv, stride-2 conv, residual blocks, transposed conv, tanh (a small Johnson et al. net)."""
    images = keras.Input(shape=image_shape, name="images")
    x = layers.Rescaling(2.0, offset=-1.0)(images)
    x = layers.Conv2D(filters, 5, padding="same", activation="relu")(x)
    x = layers.Conv2D(2 * filters, 3, strides=2, padding="same", activation="relu")(x)
    for i in range(residual_blocks):
        x = ResidualBlock(2 * filters, use_batchnorm=False, name=f"res{i + 1}")(x)
    x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(image_shape[-1], 5, padding="same", activation="tanh")(x)
    return keras.Model(images, layers.Rescaling(0.5, offset=0.5, dtype=precision.output_dtype())(x), name=name)


def patch_discriminator(image_shape, filters=32, name="discriminator"):
    """A PatchGAN discriminator: one score per receptive-field patch."""
    images = keras.Input(shape=image_shape, name="images")
    x = layers.Rescaling(2.0, offset=-1.0)(images)
    x = layers.Conv2D(filters, 4, strides=2, padding="same")(x)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.Conv2D(2 * filters, 4, strides=2, padding="same")(x)
    x = layers.LeakyReLU(0.2)(x)
    return keras.Model(images, layers.Conv2D(1, 3, padding="same", dtype=precision.output_dtype())(x), name=name)


@keras.saving.register_keras_serializable(package="generative")
class CycleGAN(AdversarialModel):
    """Trained on batches of unpaired (a, b) images by a custom `train_step`."""

    def __init__(self, g_ab, g_ba, d_a, d_b, cycle_weight=10.0, identity_weight=5.0, **kwargs):
        super().__init__(**kwargs)
        self.g_ab, self.g_ba, self.d_a, self.d_b = g_ab, g_ba, d_a, d_b
        self.cycle_weight, self.identity_weight = float(cycle_weight), float(identity_weight)
        names = ("loss", "g_loss", "d_loss", "cycle_loss", "identity_loss")
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.built = True

    def generator_variables(self):
        return self.g_ab.trainable_variables + self.g_ba.trainable_variables

    def discriminator_variables(self):
        return self.d_a.trainable_variables + self.d_b.trainable_variables

    def call(self, inputs, training=False):
        return self.g_ab(inputs, training=training)

    def losses_of(self, a, b, training=True):
        """All terms for one batch: dict of scalars."""
        fake_b, fake_a = self.g_ab(a, training=training), self.g_ba(b, training=training)
        cycled_a, cycled_b = self.g_ba(fake_b, training=training), self.g_ab(fake_a, training=training)
        adversarial = (L.generator_loss_least_squares(self.d_b(fake_b, training=training))
                       + L.generator_loss_least_squares(self.d_a(fake_a, training=training)))
        cycle = (L.cycle_consistency_loss(a, cycled_a, self.cycle_weight)
                 + L.cycle_consistency_loss(b, cycled_b, self.cycle_weight))
        identity = (L.cycle_consistency_loss(b, self.g_ab(b, training=training), self.identity_weight)
                    + L.cycle_consistency_loss(a, self.g_ba(a, training=training), self.identity_weight))
        d_loss = (L.discriminator_loss_least_squares(self.d_a(a, training=training),
                                                     self.d_a(tf.stop_gradient(fake_a), training=training))
                  + L.discriminator_loss_least_squares(self.d_b(b, training=training),
                                                       self.d_b(tf.stop_gradient(fake_b), training=training)))
        g_loss = adversarial + cycle + identity
        return {"loss": g_loss + d_loss, "g_loss": g_loss, "d_loss": d_loss, "cycle_loss": cycle,
                "identity_loss": identity}

    def _update(self, terms):
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name])
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        a, b = data[0], data[1]  # train_on_batch(a, b) adds a sample weight
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape(persistent=True) as tape:
            terms = self.losses_of(a, b)
            g_scaled, d_scaled = terms["g_loss"] / replicas, terms["d_loss"] / replicas
        g_vars, d_vars = self.generator_variables(), self.discriminator_variables()
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_scaled, g_vars), g_vars))
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_scaled, d_vars), d_vars))
        del tape
        return self._update(terms)

    def test_step(self, data):
        a, b = data[0], data[1]
        return self._update(self.losses_of(a, b, training=False))

    # What app.py asks of every model family (see apps/generative/figures.py).

    def compile_for_run(self, learning_rate):
        self.compile(g_optimizer=keras.optimizers.Adam(learning_rate, beta_1=0.5),
                     d_optimizer=keras.optimizers.Adam(learning_rate, beta_1=0.5))

    def fit_data(self, images, config, global_batch):
        """Unpaired (a, b) batches of the two domains' images; the run keeps the best validation cycle loss."""
        from apps.generative.common import to_unit

        a_id, b_id = config.domains
        for class_id in (a_id, b_id):
            if not 0 <= class_id < images.num_classes:
                raise UserError(f"--domains: class {class_id} is not one of 0..{images.num_classes - 1} "
                                f"({', '.join(images.class_names)})")
        if a_id == b_id:
            raise UserError("--domains needs two different classes")
        train, val = images.train.map(to_unit), images.val.map(to_unit)
        train_pairs = unpaired(domain(train, [a_id]), domain(train, [b_id]), global_batch, config.seed)
        val_pairs = unpaired(domain(val, [a_id]), domain(val, [b_id]), global_batch, config.seed)
        return train_pairs, val_pairs, {"monitor": "val_cycle_loss"}

    def epoch_figures(self, folder, images, config):
        from apps.generative import figures
        from apps.generative.common import arrays

        fixed_a, _ = arrays(domain(images.test, [config.domains[0]]), 8)
        return figures.EpochTranslations(folder, fixed_a)

    def sampler(self):
        return None, False  # it translates images: no latent space to sample from

    def serving_model(self, config, test_images):
        """The A -> B translator, checked on test images (`test_images()`: the run's test arrays)."""
        x, _ = test_images()
        return self.g_ab, {"images": x[:32]}, "translated"

    def judge_scores(self, config, scorer, x_test, y_test, num_samples):
        """The share of translated A images the judge classifies as B."""
        a_id, b_id = config["domains"]
        _, probabilities = scorer(np.asarray(self.g_ab.predict(x_test[y_test == a_id], verbose=0)))
        share = float(np.mean(probabilities.argmax(axis=1) == b_id))
        print(f"judge: {100 * share:.1f}% of translated {config['class_names'][a_id]} images are classified "
              f"{config['class_names'][b_id]}")
        return {"translated_classified_as_target": share}

    def evaluation_figures(self, config, images, x_test, y_test, out):
        """Test cycle, identity and discriminator losses; translations and their cycles back as a PNG."""
        from apps.generative import figures
        from core import plots

        a_id, b_id = config["domains"]
        a, b = x_test[y_test == a_id], x_test[y_test == b_id]
        n = min(len(a), len(b))
        if n == 0:
            raise UserError("the test split has no images of one of the two domains; raise --limit")
        terms = self.evaluate(tf.data.Dataset.from_tensor_slices((a[:n], b[:n])).batch(200), verbose=0,
                              return_dict=True)
        fake_b = np.asarray(self.g_ab.predict(a[:8], verbose=0))
        fake_a = np.asarray(self.g_ba.predict(b[:8], verbose=0))
        back_a = np.asarray(self.g_ba.predict(fake_b, verbose=0))
        back_b = np.asarray(self.g_ab.predict(fake_a, verbose=0))
        names = config["class_names"]
        grid = np.concatenate([a[:8], fake_b, back_a, b[:8], fake_a, back_b])
        titles = ([names[a_id]] * 8 + [f"-> {names[b_id]}"] * 8 + ["cycled back"] * 8
                  + [names[b_id]] * 8 + [f"-> {names[a_id]}"] * 8 + ["cycled back"] * 8)
        figures.say(plots.image_grid(np.clip(grid, 0, 1), titles, os.path.join(out, "translations.png"),
                                     title=f"CycleGAN {names[a_id]} <-> {names[b_id]}"))
        print(f"cyclegan test: cycle loss {terms['cycle_loss']:.4f} (λ-weighted L1), identity "
              f"{terms['identity_loss']:.4f}")
        return {"test_cycle_loss": terms["cycle_loss"], "test_identity_loss": terms["identity_loss"],
                "test_d_loss": terms["d_loss"]}

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {**super().get_config(), "g_ab": serialize(self.g_ab), "g_ba": serialize(self.g_ba),
                "d_a": serialize(self.d_a), "d_b": serialize(self.d_b), "cycle_weight": self.cycle_weight,
                "identity_weight": self.identity_weight}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("g_ab", "g_ba", "d_a", "d_b"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def build_cyclegan(image_shape, cycle_weight=10.0, identity_weight=5.0):
    return CycleGAN(translator(image_shape, name="g_ab"), translator(image_shape, name="g_ba"),
                    patch_discriminator(image_shape, name="d_a"), patch_discriminator(image_shape, name="d_b"),
                    cycle_weight=cycle_weight, identity_weight=identity_weight, name="cyclegan")


def unpaired(dataset_a, dataset_b, batch_size, seed=0):
    """Batches of (a, b): each domain shuffled on its own (afresh every epoch), so the pairs carry no
    correspondence. An epoch is one pass over the smaller domain: `zip` stops at the shorter one (with
    `repeat()` on both, `fit` would never end an epoch)."""
    a = dataset_a.map(lambda x, y: x).cache().shuffle(10_000, seed=seed)
    b = dataset_b.map(lambda x, y: x).cache().shuffle(10_000, seed=seed + 1)
    return tf.data.Dataset.zip((a, b)).batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def domain(dataset, class_ids):
    """The examples of `dataset` whose label is in class_ids."""
    class_ids = tf.constant(np.asarray(class_ids, np.int32))
    return dataset.filter(lambda x, y: tf.reduce_any(tf.equal(y, class_ids)))
