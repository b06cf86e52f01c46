"""DQN learner pieces on real TensorFlow: Bellman targets by hand, Double-DQN selection,
target-network sync, the update's loss, and a DQN that learns CartPole."""

import numpy as np
import pytest

from apps.rl import dqn
from core import distribute


def tiny_agent(**overrides):
    config = dqn.DQNConfig.from_dict(dict(dqn.PRESETS["cartpole"], hidden=8, batch_size=3, **overrides))
    return dqn.Agent(config, (4,), 1, 2, distribute.get_strategy("default"))


def test_bellman_targets_by_hand():
    rewards = np.array([1.0, 0.0, -1.0])
    terminals = np.array([0.0, 1.0, 0.0])
    next_q = np.array([[2.0, 5.0], [7.0, 3.0], [-4.0, -6.0]], np.float32)
    y = dqn.td_targets(rewards, terminals, next_q, next_q, gamma=0.9, double=False).numpy()
    # 1 + 0.9 * 5; terminal: 0; -1 + 0.9 * (-4)
    np.testing.assert_allclose(y, [5.5, 0.0, -4.6], rtol=1e-6)


def test_double_dqn_selects_with_online_and_evaluates_with_target():
    rewards = np.zeros(2)
    terminals = np.zeros(2)
    q_target = np.array([[1.0, 10.0, 3.0], [4.0, 0.0, 2.0]], np.float32)
    q_online = np.array([[5.0, 0.0, 6.0], [0.0, 9.0, 1.0]], np.float32)  # argmax 2 and 1
    double = dqn.td_targets(rewards, terminals, q_target, q_online, gamma=1.0, double=True).numpy()
    plain = dqn.td_targets(rewards, terminals, q_target, q_online, gamma=1.0, double=False).numpy()
    np.testing.assert_allclose(double, [3.0, 0.0])   # Q_target(s', argmax Q_online)
    np.testing.assert_allclose(plain, [10.0, 4.0])   # max Q_target


@pytest.mark.parametrize("double", [False, True])
def test_update_minimizes_huber_on_the_hand_computed_target(double):
    agent = tiny_agent(double=double, max_grad_norm=0.0, gamma=0.5)
    rng = np.random.default_rng(0)
    window = rng.normal(size=(3, 2, 4)).astype(np.float32)
    actions = np.array([0, 1, 1])
    rewards = np.array([1.0, -2.0, 0.5], np.float32)
    terminals = np.array([0.0, 0.0, 1.0], np.float32)
    # make the target net differ from the online one, so Double DQN matters
    for w in agent.target.trainable_weights:
        w.assign(w + 0.3 * rng.normal(size=w.shape).astype(np.float32))
    q = agent.online(window[:, 0]).numpy()
    next_online = agent.online(window[:, 1]).numpy()
    next_target = agent.target(window[:, 1]).numpy()
    pick = next_online.argmax(1) if double else next_target.argmax(1)
    y = rewards + 0.5 * (1 - terminals) * next_target[np.arange(3), pick]
    error = y - q[np.arange(3), actions]
    huber = np.where(np.abs(error) <= 1, 0.5 * error ** 2, np.abs(error) - 0.5)
    before = [w.numpy().copy() for w in agent.online.weights]
    loss, q_mean = agent.update(window, actions, rewards, terminals)
    assert loss == pytest.approx(huber.mean(), rel=1e-5)
    assert q_mean == pytest.approx(q[np.arange(3), actions].mean(), rel=1e-5)
    assert int(agent.updates.numpy()) == 1
    # the update moved the online net and left the target net alone
    assert any(not np.allclose(b, w.numpy()) for b, w in zip(before, agent.online.weights))
    assert not np.allclose(agent.online(window[:, 1]).numpy(), agent.target(window[:, 1]).numpy())
    agent.sync_target()
    np.testing.assert_array_equal(agent.online(window[:, 1]).numpy(), agent.target(window[:, 1]).numpy())


def test_several_updates_per_call_equal_single_updates():
    a, b = tiny_agent(), tiny_agent()
    b.online.set_weights(a.online.get_weights())
    b.target.set_weights(a.target.get_weights())
    rng = np.random.default_rng(1)
    batches = [(rng.normal(size=(3, 2, 4)).astype(np.float32), rng.integers(0, 2, 3),
                rng.normal(size=3).astype(np.float32), np.zeros(3, np.float32)) for _ in range(2)]
    losses = [a.update(*batch)[0] for batch in batches]
    loss, _ = b.update(*(np.stack(parts) for parts in zip(*batches)))
    assert loss == pytest.approx(np.mean(losses), rel=1e-4)
    for wa, wb in zip(a.online.weights, b.online.weights):
        np.testing.assert_allclose(wa.numpy(), wb.numpy(), rtol=1e-4, atol=1e-6)


def test_epsilon_decays_linearly():
    config = dqn.DQNConfig(eps_start=1.0, eps_end=0.1, eps_decay_steps=100)
    assert [dqn.epsilon_at(s, config) for s in (0, 50, 100, 1000)] == pytest.approx([1.0, 0.55, 0.1, 0.1])


def test_dueling_head_combines_value_and_centred_advantages():
    net = dqn.NETWORKS.get("mlp")((4,), 3, hidden=8, dueling=True)
    combine = dqn.DuelingCombine()
    v, adv = np.array([[2.0]], np.float32), np.array([[1.0, 2.0, 6.0]], np.float32)
    np.testing.assert_allclose(combine([v, adv]).numpy(), [[0.0, 1.0, 5.0]])
    assert net(np.zeros((2, 4), np.float32)).shape == (2, 3)


def test_training_syncs_the_target_every_k_steps(tmp_path):
    """A short real CartPole run: with k beyond the run the target keeps its start weights;
    with k = 60 the target was copied every 60 agent steps."""
    common = dict(steps=180, num_envs=2, learning_starts=50, log_every=200, checkpoint_every=200,
                  hidden=16, batch_size=8, updates_per_call=1)
    config = dqn.DQNConfig.from_dict(dict(dqn.PRESETS["cartpole"], target_update=10**9, **common))
    agent = dqn.train(config, str(tmp_path / "never"), strategy="default", log=lambda *a: None)
    probe = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    assert int(agent.updates.numpy()) == (180 - 50) // 2 + 1  # train_freq 2, from step 50 inclusive
    assert not np.allclose(agent.online(probe).numpy(), agent.target(probe).numpy())
    assert int(agent.last_sync.numpy()) == 0
    config = dqn.DQNConfig.from_dict(dict(dqn.PRESETS["cartpole"], target_update=60, **common))
    agent = dqn.train(config, str(tmp_path / "k60"), strategy="default", log=lambda *a: None)
    assert int(agent.last_sync.numpy()) == 180  # learning from step 50: syncs at 60, 120, 180 (after
    # that step's update), so the run ends with the target equal to the online net
    np.testing.assert_array_equal(agent.online(probe).numpy(), agent.target(probe).numpy())


def test_dqn_learns_cartpole(tmp_path):
    """Random play lasts about 22 steps; after 15k agent steps (~1 min on two busy cores) the greedy
    policy must balance the pole several times longer."""
    config = dqn.DQNConfig.from_dict(dqn.PRESETS["cartpole"])
    out = str(tmp_path / "cartpole")
    dqn.train(config, out, strategy="default", log=lambda *a: None)
    report = dqn.evaluate(out, episodes=10, epsilon=0.0, render=False, log=lambda *a: None)
    assert report["mean_return"] >= 75, report["returns"]


MIRRORED_SCRIPT = """
import json
from core import distribute
distribute.split_cpu(2)
import keras
import numpy as np
from apps.rl import dqn

keras.utils.set_random_seed(0)

B, H = 6, 8  # global batch, hidden units


def agent(strategy, batch):
    config = dqn.DQNConfig.from_dict(dict(dqn.PRESETS["cartpole"], hidden=H, batch_size=batch, max_grad_norm=0.0))
    return dqn.Agent(config, (4,), 1, 2, distribute.get_strategy(strategy))


mirrored, single = agent("mirrored", B // 2), agent("default", B)
assert mirrored.strategy.num_replicas_in_sync == 2
single.online.set_weights([w.numpy() for w in mirrored.online.weights])
single.target.set_weights([w.numpy() for w in mirrored.target.weights])
rng = np.random.default_rng(0)
window, actions = rng.normal(size=(B, 2, 4)).astype(np.float32), rng.integers(0, 2, B)
rewards, terminals = rng.normal(size=B).astype(np.float32), np.array([0, 0, 1, 0, 0, 1], np.float32)
start = [w.numpy().astype(np.float64) for w in mirrored.online.weights]  # online = target before the update
config = mirrored.config


def forward(x, absolute=False):
    # The Q-network in float64; absolute=True: the same sums over |inputs| and |weights|.
    a, layers = (np.abs(x) if absolute else x.astype(np.float64)), []
    for i in range(0, len(start), 2):
        w, b = (np.abs(start[i]), np.abs(start[i + 1])) if absolute else (start[i], start[i + 1])
        z = a @ w + b
        layers.append((a, z))
        a = z if absolute or i == len(start) - 2 else np.maximum(z, 0.0)
    return a, layers


# Both runs evaluate the same float32 sums of products in different orders (per replica then across
# replicas, or all at once; oneDNN or Eigen blocking; XLA for one replica). Any order is within
# gamma_K * M of the exact value, M the same sums over absolute values (Higham, Accuracy and Stability
# of Numerical Algorithms, ch. 3), K the longest chain of sums and products: the layers' fan-ins
# (4, H, H, + biases) forward, the batch and fan-outs (B, 2, H) backward, twice over, plus elementwise ops.
u = np.finfo(np.float32).eps / 2
K = 2 * (B + 4 + 2 * H + 2) + 16
gamma_K = K * u / (1 - K * u)
x, x_next, taken = window[:, 0], window[:, 1], (np.arange(B), actions)
(q, q_layers), (q_next, next_layers) = forward(x), forward(x_next)
(q_abs, abs_layers), (q_next_abs, next_abs_layers) = forward(x, True), forward(x_next, True)
# The bound holds where no ReLU and no Double-DQN argmax sits within rounding of its switch.
for (_, z), (_, z_abs) in zip(q_layers[:-1] + next_layers[:-1], abs_layers[:-1] + next_abs_layers[:-1]):
    assert (np.abs(z) > 4 * gamma_K * z_abs).all(), "a ReLU input within rounding of 0: pick another seed"
ordered = np.sort(q_next, axis=1)
assert (ordered[:, 1] - ordered[:, 0] > 4 * gamma_K * q_next_abs.max(axis=1)).all(), "a near tie: pick another seed"
td_error = rewards + config.gamma * (1 - terminals) * q_next.max(axis=1) - q[taken]
huber = np.where(np.abs(td_error) <= 1, 0.5 * td_error ** 2, np.abs(td_error) - 0.5)
error_magnitude = np.abs(rewards) + config.gamma * q_next_abs.max(axis=1) + q_abs[taken]
loss_magnitude = np.sum(huber + np.abs(td_error) + error_magnitude) / B
# Gradient magnitudes: |huber'| <= 1, plus the TD error's rounding, back-propagated through |weights|.
upstream = np.zeros((B, 2))
upstream[taken] = (1.0 + error_magnitude) / B
gradient_magnitude = []
for i in reversed(range(len(abs_layers))):
    gradient_magnitude[:0] = [abs_layers[i][0].T @ upstream, upstream.sum(axis=0)]
    upstream = upstream @ np.abs(start[2 * i]).T
# Keras Adam's first step moves w by lr * g / (|g| + eps / sqrt(1 - beta_2)), whose slope in g is at most
# lr * sqrt(1 - beta_2) / eps; its own ~8 roundings and the subtraction from w add a few ulps.
slope = config.learning_rate * np.sqrt(1 - mirrored.optimizer.beta_2) / mirrored.optimizer.epsilon
tolerance = [slope * 2 * gamma_K * g + 16 * u * config.learning_rate + 2 * u * np.abs(w)
             for g, w in zip(gradient_magnitude, start)]
losses = [a.update(window, actions, rewards, terminals)[0] for a in (mirrored, single)]
after = [[w.numpy() for w in a.online.weights] for a in (mirrored, single)]
print("RESULT", json.dumps({
    "losses": losses, "expected_loss": float(huber.mean()), "loss_tolerance": gamma_K * loss_magnitude,
    "weights_over_tolerance": max(float((np.abs(m - s) / t).max()) for m, s, t in zip(*after, tolerance)),
    "largest_tolerance": max(float(t.max()) for t in tolerance), "learning_rate": config.learning_rate,
    "updates": [int(a.updates.numpy()) for a in (mirrored, single)],
    "target_moved": max(float(np.abs(t.numpy() - w).max()) for t, w in zip(mirrored.target.weights, start))}))
"""


def test_update_under_mirrored_strategy_equals_one_replica():
    """Two logical CPUs, each with half the global batch, take the same step as one replica: the loss
    (and the hand-computed Huber loss) and every weight after the Adam step, within the float32
    rounding bound the script derives from the computation's magnitudes."""
    import json

    from tests.conftest import run_python

    result = run_python(["-c", MIRRORED_SCRIPT], timeout=170)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    mirrored_loss, single_loss = report["losses"]
    assert abs(mirrored_loss - single_loss) <= 2 * report["loss_tolerance"], report
    assert abs(mirrored_loss - report["expected_loss"]) <= report["loss_tolerance"], report
    assert report["weights_over_tolerance"] <= 1.0, report
    # not vacuous: Adam moves a weight by up to the learning rate; a step off by a tenth of that fails
    assert report["largest_tolerance"] < 0.1 * report["learning_rate"], report
    assert report["updates"] == [1, 1] and report["target_moved"] == 0.0, report
