"""Image captioning (one-to-many): a CNN encoder and a GRU decoder with additive attention.

  data      scenes of one or two Fashion-MNIST items and their one right caption
            ("a sneaker left of a bag"), as word ids: apps/sequence/caption_data.py.
  model     a small CNN (3 x conv-BN-ReLU-maxpool, then one conv-BN-ReLU that widens
            each cell's view to a whole item) turns the image into an h x w
            feature map; each position gets its (x, y) coordinates appended
            (`GridCoordinates`: convolutions are translation-equivariant, and the
            relation words need to know *where* the attended item is) and the
            h*w positions are the memory. A GRU decoder (the suite's `GRUCell`)
            starts from a projection of the mean feature; at each word its output
            attends over the memory with additive (Bahdanau) scores
            (`layers.AdditiveAttention`) and [output; context] feeds the softmax
            (the arrangement of `seq2seq.Bahdanau`). Teacher forcing in training.
  decoding  greedy (batched) or beam search through `decoding.py`'s step-function API.
  evaluate  exact match, per-token accuracy and per-slot accuracy (both item names
            right, relation right) against the most frequent training caption;
            a PNG of images with their generated captions and, for every word,
            the attention map over the image.
  export    SavedModel whose `serving_default` takes uint8 images and returns
            caption strings (greedy decoding and the word lookup inside); TFLite:
            uint8 images -> greedy word ids (apps/sequence/exports.py).
"""

import collections
import dataclasses
import json
import os

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from apps.sequence import decoding
from apps.sequence.caption_data import (
    CAPTION_LENGTH,
    END_WORD,
    START_WORD,
    CaptionedScenes,
    adapt_vocabulary,
    caption_scores,
    load_split,
    make_vectorizer,
    mirrored,
    teacher_forcing_arrays,
)
from apps.sequence.config import CaptionConfig
from apps.sequence.models import copy_weights, load_run
from core import distribute, export, optimizers, precision, results, scenes, training
from core.cli import run_config
from core.data import batched
from core.errors import UserError
from layers import AdditiveAttention, GRUCell

APP = "sequence"


# -------------------------------------------------------------------- model
@keras.saving.register_keras_serializable(package="sequence")
class GridCoordinates(layers.Layer):
    """Append each position's (x, y) in [-1, 1] to a feature map (batch, h, w, c) -> (batch, h, w, c + 2),
    as in CoordConv (Liu et al. 2018): the attention context then says where the attended item is."""

    def call(self, features):
        h, w = features.shape[1], features.shape[2]
        xs, ys = ops.meshgrid(ops.linspace(-1.0, 1.0, w), ops.linspace(-1.0, 1.0, h), indexing="xy")
        grid = ops.cast(ops.stack([xs, ys], axis=-1), features.dtype)[None]
        return ops.concatenate([features, ops.broadcast_to(grid, (ops.shape(features)[0], h, w, 2))], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] + 2,)


# The default sizes, recorded in each run so a later change of them still loads the run.
CAPTIONER_SIZES = dict(units=128, embed_dim=32, filters=(32, 64, 128), context_filters=128)


class Captioner:
    """The training model plus the encoder and one-step decoder that decoding needs, sharing weights."""

    def __init__(self, vocab_size, image_size, units, embed_dim, filters, context_filters):
        self.units = units
        image = keras.Input(shape=(image_size, image_size, 1), name="image")   # raw pixels in [0, 255]
        caption_in = keras.Input(shape=(None,), dtype="int32", name="caption_in")
        cnn = keras.Sequential([layers.Rescaling(1 / 255.0)], name="cnn")

        def conv_bn_relu(f, name):
            cnn.add(layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{name}"))
            cnn.add(layers.BatchNormalization(momentum=0.9, name=f"bn{name}"))  # few steps: stats must settle fast
            cnn.add(layers.ReLU())

        for i, f in enumerate(filters):
            conv_bn_relu(f, i)
            cnn.add(layers.MaxPooling2D(2))
        if context_filters:
            # After three 3x3 convolutions and poolings a cell sees 22 pixels, less than a 28-pixel item; one more
            # convolution on the pooled map widens that to 38, so each cell can name the item it lies on.
            conv_bn_relu(context_filters, "_context")
        coordinates = GridCoordinates(name="coordinates")
        bridge = layers.Dense(units, activation="tanh", name="bridge")
        embed = layers.Embedding(vocab_size, embed_dim, name="embed_words")
        decoder = layers.RNN(GRUCell(units), return_sequences=True, return_state=True, name="decoder")
        attention = AdditiveAttention(units, return_attention=True, name="attention")
        combine = layers.Dense(units, activation="tanh", name="combine")
        logits = layers.Dense(vocab_size, name="logits", dtype=precision.output_dtype())

        def encode(pixels):
            features = cnn(pixels)
            grid = coordinates(features)
            h, w, c = grid.shape[1:]
            memory = layers.Reshape((h * w, c), name="positions")(grid)
            return memory, bridge(layers.GlobalAveragePooling2D()(features))

        def attend(outputs, memory):
            context, weights = attention([outputs, memory])
            return logits(combine(layers.Concatenate()([outputs, context]))), weights

        def decode(tokens, state, memory):
            outputs, _ = decoder(embed(tokens), initial_state=state)
            return attend(outputs, memory)[0]

        def decode_step(token, state, memory):
            # One step is one call of the decoder's cell: an RNN loop over one step would hold a TensorList
            # of unknown batch size, which TFLite cannot convert.
            state, _ = decoder.cell(ops.squeeze(embed(token), 1), [state])
            step_logits, weights = attend(ops.expand_dims(state, 1), memory)
            return step_logits, state, weights

        memory, state = encode(image)
        self.grid = tuple(cnn.compute_output_shape((None, image_size, image_size, 1))[1:3])
        out = decode(caption_in, state, memory)
        self.model = keras.Model([image, caption_in], out, name="captioner")
        self.encoder = keras.Model(image, [memory, state], name="captioner_encoder")
        token = keras.Input(shape=(1,), dtype="int32", name="token")
        state_in = keras.Input(shape=(units,), name="state")
        memory_in = keras.Input(shape=memory.shape[1:], name="memory")
        self.decoder = keras.Model([token, state_in, memory_in], list(decode_step(token, state_in, memory_in)),
                                   name="captioner_step")
        self._encode = tf.function(lambda x: self.encoder(x, training=False), reduce_retracing=True)
        self._decode = tf.function(lambda t, h, m: self.decoder([t, h, m], training=False), reduce_retracing=True)

    def step_states(self, images):
        memory, state = self._encode(tf.constant(np.asarray(images, np.float32)))
        return [memory.numpy(), state.numpy()]

    def step(self, tokens, states, with_attention=False):
        """`decoding.py`'s step function: (batch,) tokens -> (batch, vocab) logits, new states."""
        memory, state = states
        step_logits, state, weights = self._decode(tf.constant(np.asarray(tokens, np.int32)[:, None]),
                                                   tf.constant(state), tf.constant(memory))
        result = step_logits.numpy()[:, 0], [memory, state.numpy()]
        return result + (weights.numpy()[:, 0],) if with_attention else result


# -------------------------------------------------------------------- train
def _check_positive(**values):
    for name, value in values.items():
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def train(config: CaptionConfig, *, run, strategy="default", spec=None, sizes=None):
    """Train on the captioned training split, validate on the validation split (teacher forcing).
    `spec`: a `core.scenes.SceneSpec` to generate scenes in memory instead of the tfds dataset;
    `sizes`: keyword arguments of `Captioner` (units, embed_dim, filters); both recorded in the run."""
    c = config
    distribution = distribute.get_strategy(strategy)
    training.set_seed(c.seed)
    source = dict(scenes_config=c.scenes_config, data_dir=c.data_dir, spec=spec, max_objects=c.max_objects)
    train_set = load_split("train", limit=c.limit, **source)
    val_set = load_split("validation", limit=c.limit and max(c.limit // 4, 1), **source)
    scene_count = len(train_set.captions)
    if c.mirror:
        mirror_set = mirrored(train_set)
        train_set = CaptionedScenes(np.concatenate([train_set.images, mirror_set.images]),
                                    train_set.captions + mirror_set.captions)
    vocab = adapt_vocabulary(train_set.captions)
    vectorizer = make_vectorizer(vocab)

    def dataset(split, shuffle):
        caption_in, targets, weights = teacher_forcing_arrays(vectorizer, split.captions)
        ds = tf.data.Dataset.from_tensor_slices(((split.images.astype(np.float32), caption_in), targets, weights))
        return batched(ds, c.batch_size, shuffle=shuffle, seed=c.seed, what="the scenes")

    image_size = int(train_set.images.shape[1])
    sizes = {**CAPTIONER_SIZES, **(sizes or {})}
    learning_rate = c.learning_rate
    if c.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(  # the batches below hold batch_size scenes
            learning_rate, decay_steps=c.epochs * -(-len(train_set.captions) // c.batch_size))
    with distribution.scope(), precision.policy(c.precision):
        net = Captioner(len(vocab), image_size, **sizes)
        net.model.compile(optimizer=optimizers.Adam(learning_rate, clipnorm=1.0),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          weighted_metrics=["accuracy"], jit_compile=precision.xla(c.jit))
    counts = collections.Counter(train_set.captions)
    training.save_config(run, run_config(
        c, APP, task="caption", spec=dataclasses.asdict(spec) if spec else None, image_size=image_size, vocab=vocab,
        sizes=sizes, most_frequent_caption=counts.most_common(1)[0][0], train_scenes=scene_count,
        distinct_captions=len(counts), strategy=strategy, replicas=distribution.num_replicas_in_sync),
        identity_keys=("task", "scenes_config", "spec"))
    print(f"training the captioner on {scene_count} scenes{' and their mirror images' if c.mirror else ''} with "
          f"1-{c.max_objects} items "
          f"({len(counts)} distinct captions, vocabulary {len(vocab)} words, feature map {net.grid[0]}x{net.grid[1]})")
    return training.fit(net.model, dataset(train_set, True), dataset(val_set, False), epochs=c.epochs, run_dir=run,
                        patience=c.patience)


# ------------------------------------------------------------ trained model
class CaptionModel:
    """A trained run: the captioner with the best checkpoint's weights, its vocabulary and data source."""

    def __init__(self, out):
        self.config, trained = load_run(out, "caption", "image-captioning")
        config = self.config
        self.vocab = config["vocab"]
        self.net = Captioner(len(self.vocab), config["image_size"], **config["sizes"])
        copy_weights(trained, self.net.model, out)
        self.start, self.end = self.vocab.index(START_WORD), self.vocab.index(END_WORD)

    def load_split(self, split, limit=None):
        spec = self.config.get("spec")
        return load_split(split, scenes_config=self.config.get("scenes_config"), data_dir=self.config.get("data_dir"),
                          spec=scenes.SceneSpec(**spec) if spec else None, max_objects=self.config["max_objects"],
                          limit=limit)

    def words(self, ids):
        return " ".join(self.vocab[i] for i in ids)

    def check_images(self, images):
        images = np.asarray(images)
        size = self.config["image_size"]
        if images.ndim != 4 or images.shape[1:] != (size, size, 1):
            raise UserError(f"the captioner takes images of shape (N, {size}, {size}, 1), got {images.shape}")
        return images.astype(np.float32)

    def first_logits(self, images):
        """Logits of the first word (after <s>) and the decoder states there."""
        states = self.net.step_states(images)
        return self.net.step(np.full(len(images), self.start, np.int32), states)[:2]

    def greedy_batch(self, images):
        """Batched greedy decoding: a caption for every image (the SavedModel's loop, in NumPy)."""
        logits, states = self.first_logits(self.check_images(images))
        tokens = []
        for _ in range(CAPTION_LENGTH):
            token = logits.argmax(axis=-1).astype(np.int32)
            tokens.append(token)
            logits, states = self.net.step(token, states)
        return [self.words(row[:list(row).index(self.end)] if self.end in row else row)
                for row in np.stack(tokens, axis=1)]

    def caption(self, image, width=1):
        """One image (S, S, 1) -> its caption, greedy (width 1) or by beam search."""
        if width < 1:
            raise UserError(f"--width must be at least 1, got {width}")
        logits, states = self.first_logits(self.check_images(np.asarray(image)[None]))
        if width == 1:
            ids = decoding.greedy(self.net.step, logits[0], states, CAPTION_LENGTH, end_token=self.end)
        else:
            ids = decoding.beam_search(self.net.step, logits[0], states, CAPTION_LENGTH, width=width,
                                       end_token=self.end)
        return self.words(ids)

    def attention(self, image):
        """Greedy caption of one image with each word's attention map (h, w)."""
        states = self.net.step_states(self.check_images(np.asarray(image)[None]))
        token, words, maps = np.array([self.start], np.int32), [], []
        for _ in range(CAPTION_LENGTH):
            logits, states, weights = self.net.step(token, states, with_attention=True)
            token = logits.argmax(axis=-1).astype(np.int32)
            words.append(self.vocab[token[0]])
            maps.append(weights[0].reshape(self.net.grid))
            if token[0] == self.end:
                break
        return words, maps


def attention_figure(model, images, png_path, references=None):
    """One row per image: the image with its generated caption, then each generated word (and
    </s>) with its attention weights over the feature map, drawn over the image."""
    import matplotlib.pyplot as plt

    from core.plots import save_figure

    rows = [model.attention(image) for image in images]
    columns = 1 + max(len(words) for words, _ in rows)
    fig, axes = plt.subplots(len(images), columns, figsize=(1.5 * columns, 1.7 * len(images)), squeeze=False)
    size = images.shape[1]
    for r, (image, (words, maps)) in enumerate(zip(images, rows)):
        for ax in axes[r]:
            ax.axis("off")
        caption = " ".join(w for w in words if w != END_WORD)
        axes[r, 0].imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
        title = caption if references is None else f"{caption}\n(true: {references[r]})"
        axes[r, 0].set_title(title, fontsize=6, loc="left")
        for c, (word, weights) in enumerate(zip(words, maps), start=1):
            axes[r, c].imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
            # Each feature-map cell covers a size/h x size/w block of pixels.
            axes[r, c].imshow(weights, cmap="inferno", alpha=0.6, extent=(0, size, size, 0),
                              interpolation="nearest", vmin=0, vmax=max(float(weights.max()), 1e-6))
            axes[r, c].set_title(word, fontsize=8)
    return save_figure(fig, png_path)


# ----------------------------------------------------------------- evaluate
def evaluate(*, out, split="test", width=1, limit=None, figure_count=4):
    model = CaptionModel(out)
    _check_positive(width=width, limit=limit)
    data = model.load_split(split, limit=limit)
    if width == 1:
        predictions = model.greedy_batch(data.images)
    else:
        predictions = [model.caption(image, width=width) for image in data.images]
    report = {"split": split, "width": width, "num_scenes": len(data.captions),
              **caption_scores(predictions, data.captions)}
    baseline_caption = model.config["most_frequent_caption"]
    baseline = caption_scores([baseline_caption] * len(data.captions), data.captions)
    report["baseline_caption"] = baseline_caption
    report["baseline"] = baseline
    decoder = "greedy" if width == 1 else f"beam width {width}"
    print(f"captioner on {len(data.captions)} {split} scenes ({decoder}); baseline: always '{baseline_caption}'")
    print(f"  {'':>18} {'captioner':>10} {'baseline':>10}")
    for key in ("exact_match", "token_accuracy", "names_accuracy", "relation_accuracy"):
        print(f"  {key:>18} {report[key]:>10.3f} {baseline[key]:>10.3f}")
    for predicted, reference in [(p, r) for p, r in zip(predictions, data.captions) if p != r][:5]:
        print(f"  wrong: '{predicted}' (true: '{reference}')")
    count = min(figure_count, len(data.captions))
    report["attention_png"] = attention_figure(model, data.images[:count], os.path.join(out, "captions.png"),
                                               references=data.captions[:count])
    print(f"wrote {report['attention_png']}")
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(report, f, indent=2)
    keys = ("exact_match", "token_accuracy", "names_accuracy", "relation_accuracy")
    config = model.config
    results.write_results(out, app="sequence", model="caption", dataset=config.get("dataset", "scenes"), split=split,
                          metrics={k: report[k] for k in keys},
                          baselines={f"most_frequent_caption_{k}": baseline[k] for k in keys},
                          budget=results.budget_of(config), seed=config.get("seed"))
    return report


# ------------------------------------------------------------------ predict
def read_images(paths, size):
    """Image files -> (N, size, size, 1) uint8 grayscale (resized to the captioner's input)."""
    from PIL import Image, UnidentifiedImageError

    from core.images import check_finite_pixels  # a float image with NaN: refused, not captioned

    images = []
    for path in paths:
        if not os.path.isfile(path):
            raise UserError(f"image not found: {path}")
        try:
            with Image.open(path) as image:
                image = check_finite_pixels(image, path).convert("L").resize((size, size), Image.BILINEAR)
        except (UnidentifiedImageError, OSError) as error:
            raise UserError(f"cannot read the image {path}: {error}") from None
        images.append(np.asarray(image, np.uint8)[..., None])
    return np.stack(images)


def predict(paths=(), *, out, width=1, count=8, saved_model=None, png=None):
    """Caption image files (or, with none, the first `count` test scenes); print the captions and
    write the attention PNG. With `saved_model`, caption through the exported SavedModel instead."""
    _check_positive(width=width, count=count)
    if saved_model:
        if not paths:
            raise UserError("give image files to caption with --saved-model")
        what = "a captioner export"
        loaded, signature = export.load_signature(saved_model, inputs=["image"], outputs=["caption"], what=what)
        size = int(signature.structured_input_signature[1]["image"].shape[1])
        images = read_images(paths, size)
        captions = [c.decode() for c in signature(image=tf.constant(images))["caption"].numpy()]
        for path, caption in zip(paths, captions):
            print(f"{path}: {caption}")
        return captions
    model = CaptionModel(out)
    if paths:
        images, names = read_images(paths, model.config["image_size"]), list(paths)
    else:
        data = model.load_split("test", limit=count)
        images, names = data.images, [f"test scene {i}" for i in range(len(data.images))]
    captions = [model.caption(image, width=width) for image in images]
    for name, caption in zip(names, captions):
        print(f"{name}: {caption}")
    path = attention_figure(model, images, png or os.path.join(out, "predictions.png"))
    print(f"wrote {path}")
    return captions


# ------------------------------------------------------------------- export
def export_run(*, out, export_dir="saved_models", version=None, kinds=("float", "dynamic")):
    """Writes saved_models/sequence_caption/<v>/: uint8 images (N, S, S, 1) -> caption strings (greedy, in the graph),
    and TFLite files of uint8 images -> greedy word ids (see apps/sequence/exports.py)."""
    from apps.sequence.exports import export_captioner

    return export_captioner(out=out, export_dir=export_dir, version=version, kinds=kinds)
