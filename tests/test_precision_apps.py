"""`--precision mixed_bfloat16 --jit` through the real `train` of generative, sequence, style and rl: the model
trains (finite falling loss), its variables stay float32 while its layers compute in bfloat16, config.json records
the settings, and the exports' signatures stay float32 (tiny data; bfloat16 is emulated and slow on most CPUs).

`make test` runs the VAE (with mixed_float16's refusal); the other apps' runs are marked `slow` (`pytest -m
slow`): on a CPU without bfloat16 units each took 30-160 s beside other jobs, most of it emulated bfloat16 and XLA
compiles, past the 60 s a test may take (textclass: 19 s alone, 66 s in a full `make test` with oneDNN on)."""

import csv
import json
import math
import os

import pytest

BF16 = ["--precision", "mixed_bfloat16", "--jit"]


def losses(run, column="loss"):
    with open(os.path.join(run, "history.csv")) as f:
        return [float(row[column]) for row in csv.DictReader(f)]


def assert_trained_in_bfloat16(run, column="loss", jit=True):

    import keras

    values = losses(run, column)
    assert all(math.isfinite(v) for v in values) and values[-1] < values[0], values
    with open(os.path.join(run, "config.json")) as f:
        config = json.load(f)
    assert config["precision"] == "mixed_bfloat16" and config["jit"] is jit
    assert keras.config.dtype_policy().name == "float32"  # train restored the global policy


def assert_mixed(model):
    """float32 variables, bfloat16 compute in the hidden layers, float32 outputs."""
    assert {v.dtype for v in model.weights} == {"float32"}
    assert "bfloat16" in {layer.compute_dtype for layer in model.layers}
    assert all(output.dtype == "float32" for output in model.outputs)


def float32_signature(folder):
    import tensorflow as tf

    signature = tf.saved_model.load(folder).signatures["serving_default"]
    specs = list(signature.structured_input_signature[1].values()) + list(signature.structured_outputs.values())
    return {spec.dtype for spec in specs if spec.dtype.is_floating} <= {tf.float32}


# ------------------------------------------------------------------- sequence
@pytest.mark.slow  # see the module docstring
def test_sequence_textclass_trains_in_bfloat16_and_exports_float32(tmp_path):
    from apps.sequence.__main__ import main
    from core import training

    run = str(tmp_path / "textclass")
    main(["train", "--task", "textclass", "--model", "bag", "--epochs", "2", "--limit", "64",
          "--sequence-length", "12", "--max-tokens", "300", "--batch-size", "16", "--run", run, *BF16])
    assert_trained_in_bfloat16(run)
    assert_mixed(training.load_trained_model(run))
    main(["export", "--task", "textclass", "--run", run, "--export-dir", str(tmp_path / "saved")])
    version = tmp_path / "saved" / "sequence_textclass_bag" / "1"
    assert float32_signature(str(version)) and float32_signature(str(version / "tflite_source"))


@pytest.mark.slow  # see the module docstring
def test_sequence_dates_transformer_trains_in_bfloat16(tmp_path):
    from apps.sequence import seq2seq
    from apps.sequence.config import DatesConfig
    from core import training

    run = str(tmp_path / "dates")
    config = DatesConfig(model="transformer", epochs=2, batch_size=32, train_size=64, val_size=32, test_size=8,
                         learning_rate=5e-3, precision="mixed_bfloat16")  # XLA's compile of it: a minute on CPU
    seq2seq.train(config, run=run, sizes={"d_model": 16, "num_heads": 2, "ff_dim": 16, "num_layers": 1})
    assert_trained_in_bfloat16(run, jit=False)
    assert_mixed(training.load_trained_model(run))
    assert seq2seq.Normalizer(run).normalize_batch(["4 March 2021"])[0] is not None  # decodes in float32


@pytest.mark.slow  # see the module docstring
def test_sequence_charlm_trains_in_bfloat16(tmp_path):
    from apps.sequence.__main__ import main
    from core import training

    run = str(tmp_path / "charlm")
    main(["train", "--task", "charlm", "--cell", "gru", "--units", "16", "--layers", "1", "--embed-dim", "8",
          "--epochs", "2", "--max-chars", "4000", "--steps", "16", "--batch-size", "8", "--run", run, *BF16])
    assert_trained_in_bfloat16(run)
    assert_mixed(training.load_trained_model(run))


def test_sequence_train_help_shows_precision_and_jit(capsys):
    from apps.sequence.__main__ import main

    with pytest.raises(SystemExit):
        main(["train", "--task", "dates", "--help"])
    out = capsys.readouterr().out
    assert "--precision" in out and "mixed_bfloat16" in out and "--jit, --no-jit" in out


# ----------------------------------------------------------------- generative
GENERATIVE = ["--dataset", "digits", "--limit", "128", "--epochs", "2", "--batch-size", "32", *BF16]


@pytest.mark.slow  # see the module docstring
def test_generative_gan_trains_in_bfloat16_and_exports_float32(tmp_path):
    from apps.generative import app
    from apps.generative.__main__ import main

    run = str(tmp_path / "gan")
    main(["train", "--model", "gan", "--latent-dim", "8", "--run", run, *GENERATIVE])
    assert_trained_in_bfloat16(run, column="d_loss")
    _, net = app.load_run(run)
    assert_mixed(net.generator)
    app.export_run(run, export_root=str(tmp_path / "saved"))
    assert float32_signature(str(tmp_path / "saved" / "generative_gan" / "1"))


def test_generative_vae_trains_in_bfloat16_and_mixed_float16_is_refused(tmp_path):
    from apps.generative import app
    from apps.generative.__main__ import main
    from core.errors import UserError

    run = str(tmp_path / "vae")
    main(["train", "--model", "vae", "--run", run, *GENERATIVE])
    assert_trained_in_bfloat16(run)
    _, net = app.load_run(run)
    assert_mixed(net.encoder)
    assert_mixed(net.decoder)
    with pytest.raises(UserError, match="mixed_bfloat16"):
        main(["train", "--model", "vae", "--precision", "mixed_float16", "--run", str(tmp_path / "f16")])


# ------------------------------------------------------------------------- rl
@pytest.mark.slow  # see the module docstring
def test_rl_dqn_trains_in_bfloat16_and_exports_float32(tmp_path):
    import dataclasses

    from apps.rl.__main__ import main
    from apps.rl.dqn.agent import build_agent
    from apps.rl.dqn.config import load_run_config
    from apps.rl.dqn.deployment import export
    from core import distribute
    from core.errors import UserError

    run = str(tmp_path / "dqn")
    main(["train", "--task", "dqn", "--preset", "cartpole", "--steps", "400", "--learning-starts", "100",
          "--log-every", "100", "--checkpoint-every", "400", "--run", run, *BF16])
    with open(os.path.join(run, "train.csv")) as f:
        rows = [row for row in csv.DictReader(f) if row["loss"]]
    assert rows and all(math.isfinite(float(row["loss"])) for row in rows) and int(rows[-1]["updates"]) > 0
    config = load_run_config(run)
    assert (config.precision, config.jit) == ("mixed_bfloat16", True)
    strategy = distribute.get_strategy("default")
    assert_mixed(build_agent(config, strategy).online)
    with pytest.raises(UserError, match="mixed_bfloat16"):
        build_agent(dataclasses.replace(config, precision="mixed_float16"), strategy)
    report = export(run, export_dir=str(tmp_path / "saved"), int8=False)  # played and exported in float32
    assert float32_signature(report["saved_model"])


# ---------------------------------------------------------------------- style
@pytest.mark.slow  # see the module docstring
def test_style_stylizer_trains_in_bfloat16_and_exports_float32(tmp_path):
    from apps.style import stylizer
    from apps.style.__main__ import main
    from apps.style.config import StylizerConfig
    from core import training
    from core.errors import UserError

    run = str(tmp_path / "fast")
    config = StylizerConfig(steps=30, size=32, batch_size=2, precision="mixed_bfloat16", jit=True)  # test_style's
    history = stylizer.train(config, run=run, log_every=15)["history"]
    totals = [sum(v for k, v in row.items() if k != "step") for row in history]
    assert all(math.isfinite(t) for t in totals) and totals[-1] < totals[0], totals
    with open(os.path.join(run, "config.json")) as f:
        config = json.load(f)
    assert (config["precision"], config["jit"]) == ("mixed_bfloat16", True)
    assert_mixed(training.load_trained_model(run))
    report = stylizer.export_run(run=run, export_dir=str(tmp_path / "saved"))
    assert float32_signature(report["saved_model"])
    with pytest.raises(UserError, match="mixed_bfloat16"):
        main(["train", "--precision", "mixed_float16", "--run", str(tmp_path / "f16")])
