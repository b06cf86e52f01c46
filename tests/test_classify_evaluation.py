"""Honest evaluation: ROC/AUC against scikit-learn on real predictions, stratified k-fold
cross-validation, paired comparisons over seeds (p-values against SciPy), the zoo's full budgets."""

import json
import os

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics

from apps.classify import app, budgets, evaluation
from apps.classify.__main__ import main, parse_args, train_config
from apps.classify.config import MODEL_NAMES, TrainConfig
from core import data, training
from core.errors import UserError

TINY = dict(model="mlp", epochs=1, batch_size=32, learning_rate=3e-3)


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("roc_run"))
    app.train(dataset="digits", limit=300, run=out, **TINY)
    return out, app.evaluate(out)


def test_auc_equals_sklearn_on_real_predictions(evaluated_run):
    out, report = evaluated_run
    config = training.load_config(out)
    images = data.load_dataset("digits", val_fraction=config["val_fraction"], seed=config["seed"], limit=300)
    labels, probabilities = app._predict_all(training.load_trained_model(out), images.test)
    one_hot = np.eye(10)[labels]
    roc = report["roc"]
    for c in range(10):
        assert roc["auc"][c] == pytest.approx(metrics.roc_auc_score(one_hot[:, c], probabilities[:, c]), abs=1e-9)
        fpr, tpr, _ = metrics.roc_curve(one_hot[:, c], probabilities[:, c], drop_intermediate=False)
        np.testing.assert_allclose(roc["curves"][c][0], fpr)
        np.testing.assert_allclose(roc["curves"][c][1], tpr)
    assert roc["micro_auc"] == pytest.approx(metrics.roc_auc_score(one_hot, probabilities, average="micro"))
    assert roc["macro_auc"] == pytest.approx(metrics.roc_auc_score(labels, probabilities, multi_class="ovr"))
    assert 0.5 < roc["macro_auc"] < 1.0  # a model that learned something, not a perfect one
    with open(os.path.join(out, "metrics.json")) as f:
        saved = json.load(f)
    assert saved["roc_auc_macro"] == pytest.approx(roc["macro_auc"])
    assert saved["roc_auc"]["3"] == pytest.approx(roc["auc"][3])
    assert os.path.getsize(os.path.join(out, "roc.png")) > 10_000


def test_auc_of_perfect_reversed_and_constant_scorers():
    is_positive = np.array([0, 1, 0, 1, 1, 0, 0])
    perfect = is_positive + np.linspace(0, 0.5, 7)  # every positive above every negative
    assert evaluation.area_under(*evaluation.roc_curve(is_positive, perfect)) == 1.0
    assert evaluation.area_under(*evaluation.roc_curve(is_positive, -perfect)) == 0.0
    assert evaluation.area_under(*evaluation.roc_curve(is_positive, np.zeros(7))) == 0.5  # one tie: the diagonal
    assert evaluation.roc_curve(np.zeros(4), np.arange(4)) is None  # no positives: undefined
    labels = np.array([0, 1, 2, 2, 1, 0])
    report = evaluation.roc_report(labels, np.eye(3)[labels] * 0.9 + 0.05)
    assert report["micro_auc"] == report["macro_auc"] == 1.0


def test_stratified_folds_are_disjoint_cover_the_data_and_keep_class_shares():
    labels = np.random.default_rng(1).choice(4, size=203, p=[0.5, 0.3, 0.15, 0.05])
    folds = evaluation.stratified_folds(labels, 3, seed=0)
    everything = np.concatenate(folds)
    assert len(everything) == len(labels) and set(everything) == set(range(len(labels)))  # disjoint + cover
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    counts = np.bincount(labels, minlength=4)
    for fold in folds:
        per_class = np.bincount(labels[fold], minlength=4)
        assert np.all(np.abs(per_class - counts / 3) <= 1)  # each class's share, up to one example
    assert not np.array_equal(folds[0], evaluation.stratified_folds(labels, 3, seed=1)[0])
    with pytest.raises(UserError, match="at least 2"):
        evaluation.stratified_folds(labels, 1)
    with pytest.raises(UserError, match="smallest class"):
        evaluation.stratified_folds(np.array([0, 0, 0, 1, 1]), 3)


def test_cross_validation_trains_one_model_per_fold(tmp_path):
    out = str(tmp_path / "cv")
    main(["cv", "--dataset", "digits", "--folds", "2", "--limit", "240", "--model", "mlp", "--epochs", "2",
          "--batch-size", "32", "--learning-rate", "3e-3", "--run", out])
    with open(os.path.join(out, "cv.json")) as f:
        report = json.load(f)
    assert [r["fold"] for r in report["per_fold"]] == [1, 2]
    assert sum(r["num_scored"] for r in report["per_fold"]) == 240
    for r in report["per_fold"]:
        assert r["num_train"] + r["num_val"] + r["num_scored"] == 240
        assert 0.3 < r["accuracy"] <= 1.0  # well above chance (0.1) on the fold the model never saw
        assert os.path.exists(os.path.join(out, f"fold{r['fold']}", "model.keras"))
    accuracies = [r["accuracy"] for r in report["per_fold"]]
    assert report["mean_accuracy"] == pytest.approx(np.mean(accuracies))
    assert report["std_accuracy"] == pytest.approx(np.std(accuracies, ddof=1))
    assert len(open(os.path.join(out, "cv.csv")).read().splitlines()) == 3


def test_paired_tests_equal_scipy():
    a = [0.91, 0.93, 0.92, 0.95, 0.90, 0.94, 0.93]
    b = [0.90, 0.91, 0.92, 0.92, 0.89, 0.91, 0.90]
    t, p = evaluation.paired_t_test(a, b)
    reference = stats.ttest_rel(a, b)
    assert t == pytest.approx(reference.statistic) and p == pytest.approx(reference.pvalue)
    assert evaluation.wilcoxon_p(a, b) == pytest.approx(stats.wilcoxon(np.subtract(a, b)).pvalue)
    assert evaluation.wilcoxon_p(a[:5], b[:5]) is None  # too few seeds for the test to ever reach 0.05
    assert evaluation.paired_t_test([0.5, 0.6], [0.5, 0.6]) == (0.0, 1.0)
    verdict = evaluation.compare_verdict("A", a, "B", b, alpha=0.05)
    assert verdict["significant"] and verdict["verdict"].startswith("A is better than B")
    assert not evaluation.compare_verdict("A", a, "B", b, alpha=p / 2)["significant"]


def test_compare_finds_a_trained_model_better_than_an_untrained_one(tmp_path):
    out = str(tmp_path / "compare")
    # Three seeds: the fewest for which a t-test (2 degrees of freedom) can give a small p reliably.
    main(["compare", "--dataset", "digits", "--limit", "300", "--seeds", "3", "--model", "mlp", "--epochs", "2",
          "--batch-size", "32", "--learning-rate", "3e-3", "--a", "--learning-rate 0", "--b", "--optimizer adam",
          "--run", out])
    with open(os.path.join(out, "compare.json")) as f:
        report = json.load(f)
    assert len(report["accuracy_a"]) == len(report["accuracy_b"]) == 3
    assert report["setup_a"]["learning_rate"] == 0.0 and report["setup_b"]["learning_rate"] == 3e-3
    assert max(report["accuracy_a"]) < 0.3 < 0.5 < min(report["accuracy_b"])  # untrained: near chance
    assert report["p_t_test"] == pytest.approx(stats.ttest_rel(report["accuracy_a"], report["accuracy_b"]).pvalue)
    assert report["p_t_test"] < 0.01 and report["significant"]
    assert report["p_wilcoxon"] is None
    assert report["verdict"].startswith("--optimizer adam is better than --learning-rate 0")
    assert os.path.getsize(os.path.join(out, "compare.png")) > 5_000


def test_compare_rejects_bad_setups():
    def setups(*argv):
        from apps.classify.__main__ import compare_setups

        return compare_setups(parse_args(["compare", *argv]))

    a, b = setups("--models", "lenet5,vgg", "--epochs", "3", "--dataset", "digits")
    assert (a.model, b.model, a.epochs, b.epochs, a.dataset, b.dataset) == ("lenet5", "vgg", 3, 3, "digits", "digits")
    with pytest.raises(UserError, match="in --a/--b: unrecognized arguments: --dataset"):
        setups("--a", "--dataset mnist5k", "--b", "--model vgg")  # both setups train on the same data
    with pytest.raises(UserError, match="in --a/--b: unrecognized arguments: --bogus"):
        setups("--a", "--bogus 1", "--b", "--model vgg")
    with pytest.raises(UserError, match="two different setups"):
        setups("--a", "--model vgg", "--b", "--model vgg")
    with pytest.raises(UserError, match="exactly two"):
        setups("--models", "a,b,c")


def test_every_model_has_a_budget_and_demo_uses_the_default_one(tmp_path):
    assert set(budgets.BUDGETS) == set(MODEL_NAMES)
    # `demo` and a bare `train` (`make demo`, `make classify`) train the same recipe: the default model's budget
    demo, train = train_config(parse_args(["demo"])), train_config(parse_args(["train"]))
    assert demo == train and demo.model == budgets.DEFAULT_MODEL
    assert {k: getattr(demo, k) for k in budgets.budget(budgets.DEFAULT_MODEL)} == budgets.budget(budgets.DEFAULT_MODEL)
    assert train_config(parse_args(["train", "--model", "lenet5"])).epochs == budgets.BUDGETS["lenet5"]["epochs"]
    # The full-budget zoo writes one row per model with its budget, wall and CPU time.
    quick = lambda name: {**budgets.budget(name), "epochs": 1, "width": 0.25}
    base = TrainConfig(dataset="digits", limit=200)
    rows = app.zoo(base, models=["mlp"], run=str(tmp_path), budgets=quick)
    table = open(os.path.join(tmp_path, "zoo.md")).read()
    assert "| mlp | 1 ep, width 0.25 |" in table and "training CPU time" in table
    assert rows[0]["cpu_seconds"] > 0
    # Rerun (after a kill, or with more models): the finished row is reused, not retrained.
    model_file = os.path.join(tmp_path, "mlp", "model.keras")
    trained_at = os.path.getmtime(model_file)
    assert app.zoo(base, models=["mlp"], run=str(tmp_path), budgets=quick) == rows
    assert os.path.getmtime(model_file) == trained_at
    assert open(os.path.join(tmp_path, "zoo.md")).read() == table
    # Another budget is another row: trained again; an optimizer other than Adam is named in the row.
    other = app.zoo(base, models=["mlp"], run=str(tmp_path),
                    budgets=lambda name: {**quick(name), "width": 0.5, "optimizer": "nesterov", "learning_rate": 0.05})
    assert other[0]["budget"] == "1 ep, width 0.5, nesterov lr 0.05" and os.path.getmtime(model_file) > trained_at
