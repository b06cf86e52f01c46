"""Image classification: train, evaluate, export and predict.

The story of the app, top to bottom:
  train     load a dataset as tf.data, pick the distribution strategy, build
            and compile the model inside its scope, fit with checkpoints that
            resume after a kill; writes the learning curves.
  evaluate  accuracy, top-k error, per-class precision/recall/F1 and one-vs-rest
            ROC AUC on the held-out test split; confusion-matrix, ROC and
            sample-prediction PNGs.
  export    SavedModel for TF Serving + float/dynamic/int8 TFLite files, checked
            against each other on a test batch.
  predict   class probabilities for PNG/JPEG files.

Beyond one model on one task:
  zoo       every model of the registry on one budget: a Markdown table.
  transfer  a trained backbone reused on another dataset (frozen or fine-tuned).
  ensemble  the mean of several trained models, saved as a run.
  cv, compare  k-fold cross-validation and paired comparisons over seeds
            (evaluation.py).
  multi-task: `train(coarse_weight=w)` adds a coarse-category head.
The training tricks (optimizers, schedules, augmentation, ...) are in recipes.py.
"""

import dataclasses
import json
import os
import re

import keras
import numpy as np

from apps.classify import evaluation, recipes
from apps.classify.config import TrainConfig, TransferConfig
from apps.classify.models import MAIN_OUTPUT, MODELS, build_model, main_head
from core import data, distribute, export, plots, precision, results, training
from core.cli import config_dict, run_config
from core.errors import UserError
from core.images import read_image
from core.metrics import classification_report

APP = "classify"
COARSE_OUTPUT = "coarse_probabilities"


def add_coarse_head(net, num_coarse):
    """Multi-task learning with hard parameter sharing: a second softmax head
    (the coarse category) on the features the main classifier reads."""
    features = net.get_layer(MAIN_OUTPUT).input
    coarse = keras.layers.Dense(num_coarse, activation="softmax",
                                dtype=precision.output_dtype(), name=COARSE_OUTPUT)(features)
    return keras.Model(net.inputs, [*net.outputs, coarse], name=net.name)


def compile_model(net, config=None, *, steps_per_epoch=1, **settings):
    """Compile with the optimizer and schedule of `config` (a TrainConfig; `settings` replace its fields):
    categorical cross-entropy on one-hot targets, smoothed by `label_smoothing`; auxiliary heads
    (GoogLeNet) add their loss times `aux_weight`, a multi-task coarse head its loss times `coarse_weight`.
    `jit` compiles the step with XLA; under a mixed_float16 model Keras wraps the optimizer in a
    LossScaleOptimizer itself."""
    c = dataclasses.replace(config or TrainConfig(), **settings)
    schedule = recipes.WarmupSchedule(
        c.learning_rate, c.lr_schedule, total_steps=c.epochs * steps_per_epoch,
        warmup_steps=int(round(c.warmup_epochs * steps_per_epoch)),
        step_size=int(round(c.lr_step_epochs * steps_per_epoch)), gamma=c.lr_gamma)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=c.label_smoothing)
    optimizer = recipes.make_optimizer(c.optimizer, schedule, c.momentum)
    names = net.output_names
    if len(names) > 1:
        net.compile(optimizer=optimizer, loss={n: loss for n in names},
                    loss_weights={n: 1.0 if n == MAIN_OUTPUT else c.coarse_weight if n == COARSE_OUTPUT
                                  else c.aux_weight for n in names},
                    metrics={MAIN_OUTPUT: ["accuracy"]}, jit_compile=precision.xla(c.jit))
    else:
        net.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=precision.xla(c.jit))
    return net


def train(config=None, *, run, strategy="auto", images=None, **settings):
    """Train `config` (a TrainConfig; `settings` replace its fields: `train(model="lenet5", epochs=1,
    run=...)`) into the run folder `run`; `batch_size` is per replica. `images`, an already loaded
    `ImageDataset`, replaces loading `config.dataset`: cross-validation folds and paired comparisons train
    on splits they made."""
    config = dataclasses.replace(config or TrainConfig(), **settings)
    strategy_name = strategy
    MODELS.get(config.model)  # an unknown name fails now, not after loading the data
    recipes.check_options(dataclasses.asdict(config))  # so does an unknown optimizer, schedule, ...
    augment_names = recipes.parse_augment(config.augment)
    strategy = distribute.get_strategy(strategy)  # before any TF work: multi-worker needs that
    training.set_seed(config.seed)
    if images is None:
        images = data.load_dataset(config.dataset, val_fraction=config.val_fraction, seed=config.seed,
                                   limit=config.limit)
    global_batch = distribute.global_batch_size(config.batch_size, strategy)
    train_data, num_train = images.train, images.num_train
    if config.imbalance is not None or config.resample != "none":
        train_data, num_train = recipes.rebalance(train_data, images.num_classes, imbalance=config.imbalance,
                                                  resample=config.resample, seed=config.seed)
    weights = _class_weights(config, train_data, images.num_classes)
    coarse = _coarse_targets(config, images)
    with strategy.scope(), precision.policy(config.precision):
        net = build_model(config.model, images.image_shape, images.num_classes, width=config.width,
                          batchnorm=config.batchnorm, dropout=config.dropout, dropconnect=config.dropconnect)
        if coarse is not None:
            net = add_coarse_head(net, coarse.shape[1])
        recipes.apply_initializer(net, config.init, seed=config.seed)
        recipes.apply_weight_decay(net, config.l1, config.l2)
        compile_model(net, config, steps_per_epoch=max(1, -(-num_train // global_batch)))
    recorded = run_config(config, APP, class_names=list(images.class_names), image_shape=list(images.image_shape),
                          strategy=strategy_name, replicas=strategy.num_replicas_in_sync)
    writes_files = training.start_run(run, recorded, strategy, dataset_name=images.name, num_examples=num_train,
                                      global_batch=global_batch)
    augment = recipes.make_augmenter(augment_names, images.image_shape, seed=config.seed) if augment_names else None
    train_fn = recipes.make_batch_fn(images.num_classes, net.output_names, augment=augment, weights=weights,
                                     coarse=coarse)
    val_fn = recipes.make_batch_fn(images.num_classes, net.output_names, coarse=coarse)
    training.fit(
        net,
        data.batched(train_data, global_batch, shuffle=True, seed=config.seed, augment=train_fn),
        data.batched(images.val, global_batch, augment=val_fn),
        epochs=config.epochs, run_dir=run, patience=config.patience, writes_files=writes_files)
    return net


def _class_weights(config, train_data, num_classes):
    """w_c = N / (K n_c) with --class-weight balanced, else None."""
    if config.class_weight != "balanced":
        return None
    labels = np.concatenate([y for _, y in train_data.batch(4096).as_numpy_iterator()])
    weights = recipes.class_weights(labels, num_classes)
    print("class weights: " + ", ".join(f"{w:.2f}" for w in weights))
    return weights


def _coarse_targets(config, images):
    """The fine -> coarse class matrix of the multi-task head (--coarse-weight), else None."""
    if config.coarse_weight is None:
        return None
    if images.class_names != data.FASHION_MNIST_CLASSES:
        raise UserError("--coarse-weight (multi-task) needs --dataset fashion_mnist: its coarse categories "
                        f"are {', '.join(recipes.COARSE_CLASSES)}")
    return recipes.coarse_matrix(recipes.FASHION_COARSE, len(recipes.COARSE_CLASSES))


def _predict_all(net, dataset, batch_size=256):
    labels = np.concatenate([y for _, y in dataset.batch(batch_size).as_numpy_iterator()])
    probabilities = net.predict(data.batched(dataset.map(lambda x, y: x), batch_size, cache=False), verbose=0)
    return labels, probabilities


def score(run_dir, dataset):
    """Accuracy of the run's best model on an unbatched (image, label) pipeline."""
    labels, probabilities = _predict_all(main_head(training.load_trained_model(run_dir)), dataset)
    return float((probabilities.argmax(axis=1) == labels).mean())


def top_k_error(labels, probabilities, k):
    """Share of examples whose true class is not among the k most probable."""
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(1.0 - (top == np.asarray(labels)[:, None]).any(axis=1).mean())


def evaluate(run, *, limit=None):
    """Evaluate the best model of the run folder `run` on the test split; returns the report."""
    config = training.load_config(run)
    net = main_head(training.load_trained_model(run, input_shape=config.get("image_shape")))
    images = data.load_dataset(config["dataset"], val_fraction=config["val_fraction"], seed=config["seed"],
                               limit=limit or config.get("limit"))
    labels, probabilities = _predict_all(net, images.test)
    report = classification_report(labels, probabilities.argmax(axis=1), images.num_classes)
    report["top_k_error"] = {k: top_k_error(labels, probabilities, k) for k in (1, 3, 5) if k <= images.num_classes}
    roc = evaluation.roc_report(labels, probabilities)
    report["roc"] = roc

    print(f"test accuracy of {config['model']} on {images.name}: {report['accuracy']:.4f} "
          f"({len(labels)} examples; chance {1 / images.num_classes:.2f})")
    print("top-k error: " + ", ".join(f"top-{k} {e:.4f}" for k, e in report["top_k_error"].items()))
    print(f"{'class':>14} {'precision':>9} {'recall':>7} {'F1':>6} {'ROC AUC':>8}")
    for c, (name, p, r, f) in enumerate(zip(images.class_names, report["precision"], report["recall"],
                                            report["f1"])):
        auc = roc["auc"][c]
        print(f"{name:>14} {p:9.3f} {r:7.3f} {f:6.3f} {'n/a' if auc is None else f'{auc:.4f}':>8}")
    print(f"ROC AUC (one class vs the rest): micro {roc['micro_auc']:.4f}, macro {roc['macro_auc']:.4f}")

    cm_png = plots.confusion_matrix(report["confusion_matrix"], images.class_names,
                                    os.path.join(run, "confusion_matrix.png"),
                                    title=f"{config['model']} on {images.name}: accuracy {report['accuracy']:.3f}")
    samples = np.stack([x for x, _ in images.test.take(32).as_numpy_iterator()])
    sample_labels, sample_probs = labels[:len(samples)], probabilities[:len(samples)]
    titles = [f"{images.class_names[p]}{'' if p == t else ' (' + images.class_names[t] + ')'}"
              for p, t in zip(sample_probs.argmax(axis=1), sample_labels)]
    samples_png = plots.image_grid(samples / 255.0, titles, os.path.join(run, "test_predictions.png"),
                                   title="predicted (true, when wrong)")
    with open(os.path.join(run, "metrics.json"), "w") as f:
        json.dump({"accuracy": report["accuracy"], "num_examples": int(len(labels)),
                   "precision": report["precision"].tolist(), "recall": report["recall"].tolist(),
                   "f1": report["f1"].tolist(), "top_k_error": report["top_k_error"],
                   "confusion_matrix": report["confusion_matrix"].tolist(),
                   "roc_auc": {name: roc["auc"][c] for c, name in enumerate(images.class_names)},
                   "roc_auc_micro": roc["micro_auc"], "roc_auc_macro": roc["macro_auc"]}, f, indent=2)
    roc_png = evaluation.roc_png(roc, images.class_names, os.path.join(run, "roc.png"),
                                 title=f"{config['model']} on {images.name}: ROC, one class vs the rest")
    results_path = results.write_results(
        run, app="classify", model=config["model"], dataset=images.name,
        metrics={"accuracy": report["accuracy"], "macro_f1": float(np.mean(report["f1"])),
                 "top_3_error": report["top_k_error"].get(3), "roc_auc_macro": roc["macro_auc"]},
        baselines={"chance_accuracy": 1 / images.num_classes},
        budget=results.budget_of(config), seed=config.get("seed"))
    print(f"wrote {cm_png}\nwrote {roc_png}\nwrote {samples_png}\nwrote {os.path.join(run, 'metrics.json')}\n"
          f"wrote {results_path}")
    return report


def export_name(model):
    """The model part of the export folder: an ensemble's or a transfer's name ("ensemble:lenet5+mlp",
    "transfer:feature") made a valid TF Serving model name."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", model)


def export_run(run, *, export_dir="saved_models", version=None):
    """Export the run's best model to <export_dir>/classify_<model>/<version>/ and TFLite."""
    config = training.load_config(run)
    net = main_head(training.load_trained_model(run, input_shape=config.get("image_shape")))
    images = data.load_dataset(config["dataset"], val_fraction=config["val_fraction"], seed=config["seed"],
                               limit=config.get("limit"))
    sample = np.stack([x for x, _ in images.test.take(64).as_numpy_iterator()])
    representative = [x for x, _ in images.train.batch(32).take(8).as_numpy_iterator()]
    report = export.export_model(
        net, export.export_folder(APP, export_name(config["model"]), root=export_dir), input_names=["images"],
        output_names=["probabilities"], sample_inputs={"images": sample}, representative_data=representative,
        class_names=config["class_names"], version=version)
    print(f"wrote SavedModel {report['saved_model']} (signature '{export.SIGNATURE}': images -> probabilities)")
    for kind, path in report["tflite"].items():
        print(f"wrote TFLite {path} ({os.path.getsize(path) / 1024:.0f} KiB, "
              f"max |difference| vs SavedModel {report['max_abs_diff'][kind]:.2g})")
    return report


def predict(paths, *, run=None, saved_model=None, resize=False, top=3):
    """Class probabilities for image files, from the run's model or a SavedModel folder."""
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise UserError(f"image not found: {missing[0]}")
    if saved_model:
        loaded, signature = export.load_signature(saved_model, inputs=["images"], outputs=["probabilities"],
                                                  what="a classifier export")
        class_names = export.read_labels(saved_model)  # written by `export`; other SavedModels get class indices
        image_shape = tuple(signature.structured_input_signature[1]["images"].shape[1:])
        run = lambda batch: signature(images=batch)["probabilities"].numpy()
    else:
        config = training.load_config(run)
        net = main_head(training.load_trained_model(run, input_shape=config.get("image_shape")))
        class_names, image_shape = config["class_names"], tuple(config["image_shape"])
        run = lambda batch: net.predict(batch, verbose=0)
    batch = np.stack([read_image(p, image_shape, resize) for p in paths])
    probabilities = run(batch)
    class_names = class_names or [str(i) for i in range(probabilities.shape[-1])]
    results = []
    for path, probs in zip(paths, probabilities):
        best = np.argsort(probs)[::-1][:top]
        results.append([(class_names[i], float(probs[i])) for i in best])
        print(f"{path}: " + ", ".join(f"{class_names[i]} {probs[i]:.3f}" for i in best))
    return results


def zoo(config=None, *, models=None, run="runs/classify/zoo", table=None, budgets=None):
    """Train and evaluate each model of the zoo; write a Markdown table
    (parameters, test accuracy, training wall and CPU time) to `table`
    (default: <run>/zoo.md) row by row, and return the rows. Every model gets
    the same settings (`config`, a TrainConfig, with its own model), or, with
    `budgets` (a function: model name -> overrides of `config`), its own.

    Each finished row is also kept in its run folder (`zoo_row.json`, with the
    settings it was trained with): rerunning the same command after a kill, or
    with more models, reuses those rows and trains only what is missing."""
    import time

    from apps.classify.models import count_params

    config = config or TrainConfig()
    names = models or [n for n in MODELS.names() if n != "mlp"]
    for name in names:
        MODELS.get(name)
    table = table or os.path.join(run, "zoo.md")
    os.makedirs(os.path.dirname(os.path.abspath(table)), exist_ok=True)
    with open(table, "w") as f:
        if budgets:
            f.write(f"{config.dataset}, each model with its budget (apps/classify/budgets.py), "
                    f"limit {config.limit or 'none'}, seed {config.seed}\n\n")
        else:
            f.write(f"{config.dataset}, {config.epochs} epoch(s), batch {config.batch_size}, limit {config.limit} "
                    f"examples per split, seed {config.seed}\n\n")
        f.write("| model | budget | parameters | test accuracy | training wall time (s) | training CPU time (s) |\n"
                "|---|---|---:|---:|---:|---:|\n")
    rows = []
    for name in names:
        model_config = dataclasses.replace(config, model=name, **(budgets(name) if budgets else {}))
        run_dir = os.path.join(run, name)
        setup = config_dict(model_config)
        row = _finished_zoo_row(run_dir, setup)
        if row is None:
            start, cpu_start = time.time(), time.process_time()
            net = train(model_config, run=run_dir)
            seconds, cpu_seconds = time.time() - start, time.process_time() - cpu_start
            report = evaluate(run_dir, limit=config.limit)
            row = dict(model=name, budget=_describe_budget(model_config), parameters=count_params(net),
                       accuracy=float(report["accuracy"]), seconds=seconds, cpu_seconds=cpu_seconds)
            with open(os.path.join(run_dir, ZOO_ROW), "w") as f:
                json.dump(dict(setup=setup, row=row), f, indent=2)
        else:
            print(f"zoo: {name}: reusing the finished row in {os.path.join(run_dir, ZOO_ROW)}")
        rows.append(row)
        with open(table, "a") as f:
            f.write(f"| {name} | {row['budget']} | {row['parameters']:,} | {row['accuracy']:.4f} "
                    f"| {row['seconds']:.0f} | {row['cpu_seconds']:.0f} |\n")
        print(f"zoo: {name}: accuracy {row['accuracy']:.4f} in {row['seconds']:.0f} s "
              f"({row['cpu_seconds']:.0f} CPU s) -> {table}")
    return rows


ZOO_ROW = "zoo_row.json"


def _describe_budget(config):
    """The budget column: epochs, width, and the optimizer where it is not the usual Adam."""
    described = f"{config.epochs} ep" + (f", width {config.width}" if config.width else "")
    if config.optimizer != "adam":
        described += f", {config.optimizer} lr {config.learning_rate:g}"
    return described


def _finished_zoo_row(run_dir, setup):
    """The row a previous zoo run finished in `run_dir` with the same setup, or None."""
    try:
        with open(os.path.join(run_dir, ZOO_ROW)) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    return saved["row"] if saved.get("setup") == json.loads(json.dumps(setup)) else None


def zoo_full(config=None, *, models=None, run="runs/classify/zoo", table=None):
    """The zoo at each model's full budget (budgets.py) on the whole dataset (`config` gives the dataset
    and seed): the table in docs/classify.md; about 75 minutes on an idle 2-core machine."""
    from apps.classify import budgets

    config = dataclasses.replace(config or TrainConfig(), limit=None)
    return zoo(config, models=models or list(budgets.BUDGETS), run=os.path.join(run, "full"),
               table=table or os.path.join(run, "zoo_full.md"), budgets=budgets.budget)


def feature_extractor(net):
    """The part of a trained classifier below its classifier layer: images -> features."""
    net = main_head(net)
    return keras.Model(net.inputs, net.get_layer(MAIN_OUTPUT).input, name="backbone")


def transfer(config=None, *, run="runs/classify/transfer", images=None, **settings):
    """Transfer learning from the trained run `config.backbone` (e.g. Fashion-MNIST) to `config.dataset`
    (`config` a TransferConfig; `settings` replace its fields), into the run folder `run`:

      feature   freeze the backbone, a feature extractor, and train a new softmax head;
      finetune  train the new head and the backbone (all of it, or only its top
                `fine_tune_layers` layers with weights), usually with a smaller rate.

    The backbone runs in inference mode (batch norm keeps its statistics) in
    both modes, the usual recipe for fine-tuning with small data. `images`, an
    already loaded `ImageDataset`, replaces loading `dataset` (the transfer
    study in studies.py trains on labelled subsets it made).
    """
    c = dataclasses.replace(config or TransferConfig(), **settings)
    if c.mode not in ("feature", "finetune"):
        raise UserError(f"unknown transfer mode '{c.mode}'; choose one of: feature, finetune")
    if not c.backbone:
        raise UserError("transfer needs --backbone DIR, the run folder of a trained model")
    backbone = c.backbone
    source = training.load_config(backbone)
    base = feature_extractor(training.load_trained_model(backbone, input_shape=source.get("image_shape")))
    training.set_seed(c.seed)
    if images is None:
        images = data.load_dataset(c.dataset, val_fraction=c.val_fraction, seed=c.seed, limit=c.limit)
    if tuple(base.input_shape[1:]) != tuple(images.image_shape):
        raise UserError(f"the backbone in {backbone} reads {tuple(base.input_shape[1:])} images, "
                        f"{images.name} has {tuple(images.image_shape)}")
    with_weights = [layer for layer in base.layers if layer.weights]
    if c.mode == "feature":
        base.trainable = False
    elif c.fine_tune_layers:
        for layer in with_weights[:-c.fine_tune_layers]:
            layer.trainable = False
    inputs = keras.Input(shape=images.image_shape, name="images")
    features = base(inputs, training=False)
    probabilities = keras.layers.Dense(images.num_classes, activation="softmax", name=MAIN_OUTPUT)(features)
    net = keras.Model(inputs, probabilities, name=f"transfer_{c.mode}")
    steps_per_epoch = max(1, -(-images.num_train // c.batch_size))
    compile_model(net, steps_per_epoch=steps_per_epoch, optimizer=c.optimizer, learning_rate=c.learning_rate,
                  epochs=c.epochs)
    recorded = run_config(dataclasses.replace(c, backbone=os.path.abspath(backbone)), APP,
                          model=f"transfer:{c.mode}", backbone_model=source["model"],
                          backbone_dataset=source["dataset"], class_names=list(images.class_names),
                          image_shape=list(images.image_shape))
    training.save_config(run, recorded, identity_keys=("model", "dataset", "backbone"))
    trainable = sum(int(np.prod(v.shape)) for v in net.trainable_weights)
    print(f"transfer ({c.mode}) of {source['model']} trained on {source['dataset']} to {images.name}: "
          f"{trainable:,} trainable parameters, {images.num_train} examples")
    batch_fn = recipes.make_batch_fn(images.num_classes, net.output_names)
    training.fit(net, data.batched(images.train, c.batch_size, shuffle=True, seed=c.seed, augment=batch_fn),
                 data.batched(images.val, c.batch_size, augment=batch_fn), epochs=c.epochs, run_dir=run,
                 patience=c.patience)
    return net


def ensemble(runs, *, run="runs/classify/ensemble"):
    """An ensemble of trained runs (same dataset): a model whose probabilities
    are the mean of the members' probabilities, saved as a run folder, so
    `evaluate`, `export` and `predict` work on it as on any run."""
    if len(runs) < 2:
        raise UserError("an ensemble needs at least two runs")
    configs = [training.load_config(member_run) for member_run in runs]
    if len({c["dataset"] for c in configs}) > 1 or len({tuple(c["image_shape"]) for c in configs}) > 1:
        raise UserError("the ensemble's runs must be trained on the same dataset: "
                        + ", ".join(f"{r} ({c['dataset']})" for r, c in zip(runs, configs)))
    inputs = keras.Input(shape=tuple(configs[0]["image_shape"]), name="images")
    members = []
    for i, member_run in enumerate(runs):
        member = main_head(training.load_trained_model(member_run, input_shape=configs[i].get("image_shape")))
        member = keras.Model(member.inputs, member.outputs[0], name=f"member{i + 1}_{member.name}")
        members.append(member(inputs))
    probabilities = keras.layers.Average(name=MAIN_OUTPUT)(members)
    net = keras.Model(inputs, probabilities, name="ensemble")
    net.compile(loss="categorical_crossentropy", metrics=["accuracy"])
    config = dict(configs[0], model="ensemble:" + "+".join(c["model"] for c in configs),
                  members=[os.path.abspath(r) for r in runs])
    training.save_config(run, config, identity_keys=("model", "dataset", "members"))
    net.save(os.path.join(run, training.MODEL_FILE))
    print(f"ensemble of {len(runs)} models ({config['model']}) -> {run}")
    return net
