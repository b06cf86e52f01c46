"""apps.sequence, the rest of the lecture notes: vanishing gradients through time (Elman vs LSTM vs GRU) and hard
attention trained with REINFORCE next to soft attention. Each test asserts the effect the notes describe."""

import os

import numpy as np
import pytest

EPS64 = float(np.finfo(np.float64).eps)
SEEDS = (0, 1, 2)


# --- vanishing gradients ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ratios_at_init():
    from apps.sequence import vanishing

    labels = ("elman", "lstm (forget bias 1)", "lstm (forget bias 0)")
    return vanishing.ratios_over_lengths(labels, (50,), seeds=SEEDS)


def test_elman_input_gradient_decays_geometrically(ratios_at_init):
    elman = ratios_at_init["elman"]
    slope, r_squared = elman["fit"]
    # ln‖∂L/∂x_t‖ on a straight line in the distance from the end: a constant factor per step, well below 1
    assert r_squared > 0.98 and np.exp(slope) < 0.85, elman["fit"]
    for seed, ratio in zip(SEEDS, elman["ratios"][50]):
        assert ratio < 1e-4, (seed, ratio)  # measured 0.8-4e-7


def test_lstm_with_forget_bias_one_keeps_orders_of_magnitude_more_gradient(ratios_at_init):
    elman, lstm, lstm_zero = (ratios_at_init[k]["ratios"][50] for k in
                              ("elman", "lstm (forget bias 1)", "lstm (forget bias 0)"))
    for seed, e, one, zero in zip(SEEDS, elman, lstm, lstm_zero):
        assert one > 20 * e, (seed, one, e)  # measured 70-430 times the Elman ratio over 49 steps
        assert one > 1e4 * zero, (seed, one, zero)  # forget gate σ(1) = 0.73 vs σ(0) = 0.5 per step: ~10^6.5
    # along the cell state the per-step factor is the forget gate: bias 0 gives ≈ σ(0) = 0.5 per step
    assert 0.45 < np.exp(ratios_at_init["lstm (forget bias 0)"]["fit"][0]) < 0.7


@pytest.mark.parametrize("label", ["elman", "lstm (forget bias 1)"])
def test_tape_gradient_at_the_first_step_equals_finite_differences(label):
    from apps.sequence import vanishing

    c = vanishing.finite_difference_check(label, length=12, step=0, h=1e-3)
    # Central differences: FD(h) = D + a·h² + O(h⁴), so D − FD(h/2) ≈ (FD(h/2) − FD(h)) / 3; allow twice that,
    # plus the rounding of two float64 losses divided by h (a few eps·|L| each).
    truncation = abs(c["fd_h"] - c["fd_h2"]) / 3
    rounding = 8 * EPS64 * abs(c["loss"]) / (c["h"] / 2)
    assert abs(c["tape"] - c["fd_h2"]) <= 2 * truncation + rounding, c
    assert c["tape"] > 1e3 * (2 * truncation + rounding), c  # the check has teeth: tolerance ≪ the gradient


def test_only_the_lstm_learns_to_remember_the_first_symbol():
    from apps.sequence import vanishing

    elman = vanishing.train_memory("elman", length=20, steps=150, seed=0)
    lstm = vanishing.train_memory("lstm (forget bias 1)", length=20, steps=150, seed=0)
    # chance is 0.25 (4 symbols; 512 test sequences: standard error 0.02)
    assert elman["after"]["accuracy"] < 0.35, elman["after"]["accuracy"]
    assert lstm["after"]["accuracy"] > elman["after"]["accuracy"] + 0.25, (lstm["after"]["accuracy"],
                                                                          elman["after"]["accuracy"])
    # training opened the LSTM's path back to the first step: the ratio ‖∂L/∂x_1‖ / ‖∂L/∂x_T‖ grows by orders of
    # magnitude (measured 0.012 -> 41)
    before, after = lstm["before"]["norms"], lstm["after"]["norms"]
    assert after[0] / after[-1] > 100 * before[0] / before[-1]


# --- hard attention (REINFORCE) and soft attention -----------------------------------------------------------------

def test_reinforce_gradient_estimator_is_unbiased_for_a_small_categorical_policy():
    import tensorflow as tf

    from apps.sequence import hard_attention

    rng = np.random.default_rng(0)
    theta = tf.constant([[0.5, -0.3, 0.1, 0.0, 1.0]])  # one policy π = softmax(θ) over 5 actions
    mean_reward = np.array([1.0, 0.0, 2.0, 0.5, 0.2]) + 5.0  # E[r | a]; the offset 5 makes the baseline matter
    pi = tf.nn.softmax(theta)[0].numpy().astype(np.float64)
    # exact: ∇_θ E[r] = ∇ Σ_a π_a r_a = π ⊙ (r − π·r) for softmax logits
    exact = pi * (mean_reward - pi @ mean_reward)
    n = 40_000
    logits = tf.Variable(tf.repeat(theta, n, axis=0))  # one row per sample, so each row's gradient is one sample's
    actions = hard_attention.sample_categorical(logits, tf.constant(rng.uniform(1e-12, 1, (n, 5)), tf.float32))
    counts = np.bincount(actions.numpy(), minlength=5)
    np.testing.assert_allclose(counts / n, pi, atol=4 * np.sqrt(pi * (1 - pi) / n).max())  # sampler draws from π
    rewards = tf.constant(mean_reward[actions.numpy()] + rng.normal(0, 1, n), tf.float32)  # noisy reward
    spread = {}
    for name, baseline in (("none", 0.0), ("constant 4", 4.0), ("E[r]", float(pi @ mean_reward))):
        with tf.GradientTape() as tape:
            surrogate = hard_attention.reinforce_surrogate(logits, actions, rewards, tf.fill([n], baseline))
        per_sample = tape.gradient(surrogate, logits).numpy().astype(np.float64)  # (n, 5): Σ of the rows = row i
        estimate, standard_error = per_sample.mean(axis=0), per_sample.std(axis=0) / np.sqrt(n)
        # Monte-Carlo mean within 4.5 standard errors of the exact gradient (a 1-in-150,000 chance per component
        # for a correct estimator), plus float32 rounding of the per-sample terms (≤ 1e-6 · |r − b|)
        assert np.all(np.abs(estimate - exact) < 4.5 * standard_error + 1e-6 * 10), (name, estimate, exact)
        assert np.all(np.abs(exact) > 5 * standard_error) or name == "none", (name, standard_error)  # with teeth
        spread[name] = standard_error.max()
    assert spread["E[r]"] < spread["none"] / 3  # the baseline leaves the mean and cuts the variance


def test_soft_models_feature_map_is_every_glimpses_features():
    import tensorflow as tf

    from apps.sequence import hard_attention as ha

    model = ha.GlimpseClassifier("soft", seed=0)
    _, (items, _), _ = ha.fashion_items(train=4, test=4)
    canvases, _ = ha.place_on_canvas(items, np.random.default_rng(0))
    feature_map = model.feature_map(tf.constant(canvases)).numpy()
    assert feature_map.shape == (4, 100, 64)
    for index in (0, 9, 37, 99):
        crop = model.nets["crop"]([tf.constant(canvases), tf.fill([4], index)]).numpy()
        row, col = ha.grid_corners()[index]
        np.testing.assert_array_equal(crop, canvases[:, row:row + 28, col:col + 28])
        features = model.nets["what"](crop).numpy()[:, 0, 0]
        # the same convolutions over the same pixels, summed in another order: float32 rounding of sums of
        # ≤ 5·5·32 products of values ≤ max|feature|, a few eps each
        atol = 8 * np.finfo(np.float32).eps * 800 * np.abs(features).max()
        np.testing.assert_allclose(feature_map[:, index], features, rtol=0, atol=atol)
    assert np.abs(feature_map[:, 0] - feature_map[:, 99]).max() > 1e-3  # different glimpses, different features


@pytest.fixture(scope="module")
def trained_hard():
    """The hard model after 160 steps (2,560 items x 4 epochs, new positions every epoch) and 500 test canvases."""
    from apps.sequence import hard_attention as ha

    (items, labels), (test_items, test_labels), class_names = ha.fashion_items(train=2560, test=500)
    canvases, corners = ha.place_on_canvas(test_items, np.random.default_rng(1))
    model, history = ha.train("hard", lambda epoch: ha.place_on_canvas(items, np.random.default_rng([0, epoch])),
                              labels, epochs=4, seed=0)
    return {"model": model, "history": history, "canvases": canvases, "labels": test_labels, "corners": corners,
            "class_names": class_names}


def test_hard_attention_learns_where_to_look_with_reinforce(trained_hard):
    from apps.sequence import hard_attention as ha

    t = trained_hard
    result = ha.evaluate(t["model"], t["canvases"], t["labels"], t["corners"])
    uniform = ha.random_policy_on_item(t["corners"])  # exact, ≈ 0.25: what the policy starts from
    sampled, shuffled = result["sampled"], result["random glimpses"]
    # measured: 0.70 of the sampled glimpses hold at least half the item (0.24 for the uniform policy) ...
    assert sampled["on_item"] > 2 * uniform, (sampled["on_item"], uniform)
    # ... and the same classifier is right far more often with the learned positions than with random ones
    # (measured 0.43 vs 0.19; 500 test canvases: standard error ≤ 0.022 each)
    assert sampled["accuracy"] > shuffled["accuracy"] + 0.15, (sampled["accuracy"], shuffled["accuracy"])


def test_hard_attention_export_matches_greedy_inference(trained_hard, tmp_path):
    from apps.sequence import hard_attention as ha
    from core import export

    t = trained_hard
    canvases = t["canvases"][:32]
    (items, _), _, _ = ha.fashion_items(train=64, test=1)
    calibration, _ = ha.place_on_canvas(items, np.random.default_rng(7))  # training items at new positions
    report = ha.export_hard(t["model"], canvases, calibration, t["class_names"], export_dir=str(tmp_path),
                            kinds=("float",))  # SavedModel, float and int8 TFLite, parity-checked inside
    assert os.path.isfile(report["tflite"]["int8"]) and report["max_abs_diff"]["int8"] <= export.TOLERANCES["int8"]
    probabilities, policy = (report["saved_model_outputs"][k] for k in ("probabilities", "glimpse_probabilities"))
    greedy = t["model"].predict(canvases)
    np.testing.assert_array_equal(np.argmax(policy, -1), greedy["locations"])  # the same glimpse ...
    np.testing.assert_array_equal(np.argmax(probabilities, -1), np.argmax(greedy["logits"], -1))  # ... and class
    assert export.read_labels(report["saved_model"]) == list(t["class_names"])
