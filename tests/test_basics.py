"""The basics app: perceptron, scratch backprop and scratch optimizers, each checked against its key claim."""

import numpy as np
import pytest

from tests.conftest import run_python

# --- perceptron -------------------------------------------------------------------------------------------

def test_perceptron_converges_on_separable_data_and_not_on_xor():
    from apps.basics import perceptron

    x, y = perceptron.separable_data(80, seed=1)
    layer, errors, criterion = perceptron.train_perceptron(x, y, epochs=100)
    assert errors[-1] == 0 and criterion[-1] == 0.0
    assert np.all(np.where(layer(x).numpy()[:, 0] > 0, 1, -1) == y)

    x, y = perceptron.xor_data(40, seed=1)
    _, errors, criterion = perceptron.train_perceptron(x, y, epochs=60)
    assert len(errors) == 61  # ran every epoch: never reached zero errors
    assert errors.min() > 0 and criterion.min() > 0


def test_mlp_solves_xor():
    from apps.basics import perceptron

    x, y = perceptron.xor_data(40, seed=2)
    _, losses, accuracy = perceptron.train_xor_mlp(x, y, steps=200)
    assert accuracy == 1.0
    assert losses[-1] < 0.1 * losses[0]


def test_perceptron_cli_writes_png(tmp_path):
    result = run_python(["-m", "apps.basics", "perceptron", "--small", "--run", str(tmp_path)], timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    png = tmp_path / "decision_boundaries.png"
    assert png.is_file() and png.stat().st_size > 10_000
    assert str(png) in result.stdout and "XOR" in result.stdout


def test_cli_rejects_unknown_experiment():
    result = run_python(["-m", "apps.basics", "nonsense"], timeout=60)
    assert result.returncode == 2 and "invalid choice" in result.stderr


# --- backpropagation ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["cross_entropy", "l2"])
def test_scratch_gradients_match_autodiff_and_finite_differences(loss):
    from apps.basics import backprop

    check = backprop.gradient_check(loss, seed=3)
    assert abs(check["loss"] - check["tape_loss"]) < 1e-12
    assert max(check["vs_tape"]) < 1e-10
    assert max(check["vs_finite_differences"]) < 1e-6


def test_scratch_gradient_check_detects_a_wrong_derivative():
    """The check has teeth: a wrong tanh derivative is caught."""
    from apps.basics import backprop

    original = backprop.ACTIVATIONS["tanh"]
    backprop.ACTIVATIONS["tanh"] = (np.tanh, lambda z: 1 - np.tanh(z))
    try:
        check = backprop.gradient_check("cross_entropy", seed=3)
    finally:
        backprop.ACTIVATIONS["tanh"] = original
    assert max(check["vs_tape"]) > 1e-3


def test_worked_example_gradient():
    from apps.basics import backprop

    ex = backprop.worked_example()
    p = np.exp([0.1, 0.15, 0.2]) / np.exp([0.1, 0.15, 0.2]).sum()
    np.testing.assert_allclose(ex["p"], p, rtol=1e-12)
    np.testing.assert_allclose(ex["dL_dz"], ex["dL_dz_tape"], atol=1e-12)
    np.testing.assert_allclose(ex["dL_dz"], [0.100106, -0.222407, 0.122301], atol=1e-6)
    assert abs(ex["dL_dz"].sum()) < 1e-12  # softmax is shift invariant


def test_backprop_experiment_writes_png_and_table(tmp_path, capsys):
    from apps.basics import backprop

    result = backprop.run(folder=str(tmp_path), small=True)
    png = tmp_path / "backprop.png"
    assert result["pngs"] == [str(png)] and png.stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "worked example" in out and "0.100106 -0.222407  0.122301" in out
    assert result["test_accuracy"] > 0.9


def test_scratch_mlp_learns_digits():
    from apps.basics import backprop

    _, history = backprop.train_digits(epochs=5)
    assert history["loss"][-1] < history["loss"][0]
    assert history["test_accuracy"][-1] > 0.9


# --- optimizers ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "amsgrad"])
def test_scratch_optimizer_matches_keras_step_by_step(name):
    from apps.basics import optimizers

    check = optimizers.check_against_keras(name, steps=12, seed=1)
    assert check["max_param_change"] > 1e-2  # the parameters really moved
    assert check["max_abs_diff_per_step"].max() < 1e-5


def test_optimizer_check_has_teeth():
    """A momentum of 0.8 instead of 0.9 is visible in the comparison."""
    from apps.basics import optimizers

    ours = optimizers.ScratchMomentum(0.01, momentum=0.8)
    saved = optimizers.OPTIMIZERS["momentum"]
    optimizers.OPTIMIZERS["momentum"] = (lambda lr: ours,) + saved[1:]
    try:
        check = optimizers.check_against_keras("momentum", steps=12, seed=1)
    finally:
        optimizers.OPTIMIZERS["momentum"] = saved
    assert check["max_abs_diff_per_step"].max() > 1e-3


def test_adam_descends_rosenbrock():
    from apps.basics import optimizers

    path, values = optimizers.surface_trajectory("adam", "rosenbrock", steps=300)
    assert path.shape == (301, 2) and values[-1] < 0.25 * values[0]


def test_cli_help_shows_run_seed_and_defaults_and_no_out(capsys):
    import pytest

    from apps.basics.__main__ import parse_args

    for argv, where in ((["backprop"], "runs/basics/backprop"), (["all"], "DIR/<experiment> for each")):
        with pytest.raises(SystemExit):
            parse_args(argv + ["--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--run DIR" in text and where in text and "(default: 0)" in text and "--out" not in text, text


def test_cli_negative_seed_is_one_line_and_exit_2():
    result = run_python(["-m", "apps.basics", "numerics", "--seed", "-1"], timeout=60)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and lines == ["apps.basics: error: --seed must be an integer >= 0, got -1"], lines
