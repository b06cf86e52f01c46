"""REINFORCE with a learned baseline (Williams 1992; Sutton & Barto §13.4) on CartPole.

A softmax policy π(a|s; θ) and a state-value baseline v(s; w), two small MLPs.
After each batch of whole episodes, for every step t with return-to-go
G_t = Σ_k γ^k r_{t+k}:

    δ_t = G_t − v(s_t)                      (the baseline leaves the gradient unbiased, cuts variance)
    θ  += α_θ Σ_t δ_t ∇ log π(a_t|s_t)      (ascent on the policy objective)
    w  += α_w Σ_t δ_t ∇ v(s_t)              (regression of v on G)

The update is one `tf.function`. Episodes come from a gymnasium vector env
(several games at once; each environment's episode is kept whole).

`export` deploys the trained policy through `core.export.export_model`:
observations -> action probabilities and the greedy action, as a SavedModel
and float / dynamic-range TFLite files, checked on the observations the
greedy policy visits.
"""

import csv
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from core import distribute


def build_networks(observation_size, num_actions, hidden=64):
    policy = keras.Sequential([keras.Input((observation_size,)), keras.layers.Dense(hidden, activation="tanh"),
                               keras.layers.Dense(hidden, activation="tanh"), keras.layers.Dense(num_actions)],
                              name="policy")
    baseline = keras.Sequential([keras.Input((observation_size,)), keras.layers.Dense(hidden, activation="tanh"),
                                 keras.layers.Dense(hidden, activation="tanh"), keras.layers.Dense(1)],
                                name="baseline")
    return policy, baseline


def returns_to_go(rewards, gamma):
    """G_t = r_t + γ G_{t+1} for one episode."""
    out = np.zeros(len(rewards), np.float32)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def strategy_for(name):
    """The tf.distribute strategy REINFORCE trains under: one device (apps.rl.config.single_device says why)."""
    from apps.rl.config import single_device

    return distribute.get_strategy(single_device(name))


def train(config, *, run, strategy="auto", log=print):
    """Train with `config` (a ReinforceConfig); returns (policy, per-episode returns, returns.png). Writes
    config.json, model.keras (the policy), episodes.csv and returns.png in the run folder `run`."""
    from core import training
    from core.cli import run_config

    strategy = strategy_for(strategy)  # first: before any other TF work
    training.make_output_dir(run)
    env_id, batch_episodes, seed, gamma = config.env, config.batch_episodes, config.seed, config.gamma
    use_baseline = config.baseline
    keras.utils.set_random_seed(seed)
    envs = make_envs(env_id, batch_episodes)
    obs_size, num_actions = int(envs.single_observation_space.shape[0]), int(envs.single_action_space.n)
    training.save_config(run, run_config(config, "rl", task="reinforce", observation_size=obs_size,
                                         num_actions=num_actions), identity_keys=("task", "env"))
    with strategy.scope():
        policy, baseline = build_networks(obs_size, num_actions, config.hidden)
        policy_opt, baseline_opt = keras.optimizers.Adam(config.policy_lr), keras.optimizers.Adam(config.baseline_lr)

    @tf.function(reduce_retracing=True)
    def sample(observations):
        return tf.random.categorical(policy(observations), 1)[:, 0]

    @tf.function(reduce_retracing=True)
    def update(observations, actions, returns):
        with tf.GradientTape(persistent=True) as tape:
            values = baseline(observations)[:, 0]
            advantages = tf.stop_gradient(returns - values) if use_baseline else returns
            log_probs = tf.nn.log_softmax(policy(observations))
            taken = tf.gather(log_probs, actions, batch_dims=1)
            policy_loss = -tf.reduce_sum(advantages * taken) / batch_episodes
            baseline_loss = 0.5 * tf.reduce_sum((returns - values) ** 2) / batch_episodes
        policy_opt.apply_gradients(zip(tape.gradient(policy_loss, policy.trainable_variables),
                                       policy.trainable_variables))
        baseline_opt.apply_gradients(zip(tape.gradient(baseline_loss, baseline.trainable_variables),
                                         baseline.trainable_variables))
        return policy_loss, baseline_loss

    all_returns = []
    start = time.time()
    steps = 0
    for batch in range(0, config.episodes, batch_episodes):
        observations, _ = envs.reset(seed=seed + batch)
        alive = np.ones(batch_episodes, bool)
        trajectory = [[] for _ in range(batch_episodes)]
        while alive.any():
            actions = sample(tf.constant(observations, tf.float32)).numpy()
            next_observations, rewards, terminated, truncated, _ = envs.step(actions)
            for e in np.flatnonzero(alive):
                trajectory[e].append((observations[e], actions[e], rewards[e]))
            steps += int(alive.sum())
            alive &= ~(terminated | truncated)
            observations = next_observations
        obs_b, act_b, ret_b = [], [], []
        for episode in trajectory:
            o, a, r = zip(*episode)
            obs_b += o
            act_b += a
            ret_b.append(returns_to_go(np.array(r, np.float32), gamma))
            all_returns.append(float(np.sum(r)))
        update(tf.constant(np.array(obs_b), tf.float32), tf.constant(np.array(act_b), tf.int32),
               tf.constant(np.concatenate(ret_b)))
        if (batch // batch_episodes) % 10 == 0:
            log(f"episodes {len(all_returns):>5} | mean return (last 50) {np.mean(all_returns[-50:]):7.1f} | "
                f"{steps / (time.time() - start):.0f} env steps/s")
    envs.close()
    policy.save(os.path.join(run, training.MODEL_FILE))
    with open(os.path.join(run, "episodes.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["episode", "return"])
        writer.writerows(enumerate(all_returns, 1))
    import matplotlib.pyplot as plt

    from core import plots

    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(all_returns, ".", alpha=0.3, label="episode")
    w = min(50, len(all_returns))
    ax.plot(np.arange(w - 1, len(all_returns)), np.convolve(all_returns, np.ones(w) / w, "valid"), label=f"mean of {w}")
    ax.set_xlabel("episode")
    ax.set_ylabel("return")
    ax.set_title(f"REINFORCE {'with' if use_baseline else 'without'} baseline on {env_id}")
    ax.legend()
    ax.grid(alpha=0.3)
    png = plots.save_figure(fig, os.path.join(run, "returns.png"))
    return policy, np.array(all_returns), png


def make_envs(env_id, count):
    """`count` copies of `env_id` stepped together; a finished game idles until the batch ends."""
    import gymnasium as gym

    from core.errors import UserError

    try:
        envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(count)],
                                        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    except gym.error.Error as error:
        raise UserError(f"--env {env_id}: {error}") from None
    if not hasattr(envs.single_action_space, "n") or len(envs.single_observation_space.shape or ()) != 1:
        raise UserError(f"--env {env_id}: REINFORCE here needs discrete actions and vector observations")
    return envs


def load_policy(run):
    """(config, policy) of a `train --task reinforce` run folder; a foreign or damaged one is one line."""
    from core import training
    from core.errors import UserError

    config = training.load_config(run)
    if config.get("task") != "reinforce":
        raise UserError(f"{config.path} is not the config of a 'train --task reinforce' run (task: "
                        f"{config.get('task')}); pass the right --run")
    return config, training.load_trained_model(run, input_shape=(config["observation_size"],))


def greedy_return(policy, env_id="CartPole-v1", episodes=10, seed=100):
    import gymnasium as gym

    env = gym.make(env_id)
    logits_of = tf.function(lambda x: policy(x, training=False))
    totals = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            logits = logits_of(tf.constant(obs[None], tf.float32)).numpy()
            obs, r, terminated, truncated, _ = env.step(int(np.argmax(logits[0])))
            total += r
            done = terminated or truncated
        totals.append(total)
    env.close()
    return float(np.mean(totals))


# -------------------------------------------------------------------- export
def policy_model(policy):
    """observations -> (action probabilities, greedy action): the policy as deployed."""
    from apps.rl.dqn import GreedyPolicy

    observations = keras.Input(policy.inputs[0].shape[1:], name="observations")
    logits = policy(observations)
    return keras.Model(observations, [keras.layers.Softmax()(logits), GreedyPolicy()(logits)], name="reinforce_policy")


def visited_observations(policy, env_id="CartPole-v1", count=256, seed=200):
    """Observations the greedy policy meets, episode after episode (the parity check's inputs)."""
    import gymnasium as gym

    env = gym.make(env_id)
    logits_of = tf.function(lambda x: policy(x, training=False))
    observations, episode = [], 0
    while len(observations) < count:
        obs, _ = env.reset(seed=seed + episode)
        done = False
        while not done and len(observations) < count:
            observations.append(obs)
            action = int(np.argmax(logits_of(tf.constant(obs[None], tf.float32)).numpy()[0]))
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
        episode += 1
    env.close()
    return np.stack(observations).astype(np.float32)


# float: core.export's; int8: the four observations share one int8 input scale, so the pole angle (about
# ±0.2 rad) gets steps of the velocities' range / 256, and a policy that balances on small angles moves its
# probabilities further than a classifier's 0.15 (measured 0.145 and 0.011 on the tests' policies).
PROBABILITY_TOLERANCES = {"float": 1e-4, "int8": 0.3}  # float: core.export.TOLERANCES["float"]


def parity(kind, reference, candidate):
    """Probabilities within PROBABILITY_TOLERANCES[kind] (absolute: they live in [0, 1]) for float and int8,
    and the same greedy action wherever the two most probable actions are further apart than twice the
    measured difference (float: than twice its tolerance); the dynamic-range file is measured, not held to it."""
    difference = float(np.abs(candidate["probabilities"] - reference["probabilities"]).max())
    if not np.isfinite(difference):  # NaN or infinite probabilities: no figure to report
        return {"max_abs_diff": difference}, f"in its probabilities by {difference}"
    agreement = float((candidate["action"] == reference["action"]).mean())
    figures = {"max_abs_diff": difference, "action_agreement": agreement}
    if kind not in PROBABILITY_TOLERANCES:  # dynamic: measured, not held to a rule
        return figures, None
    tolerance = PROBABILITY_TOLERANCES[kind]
    top2 = np.sort(reference["probabilities"], axis=1)[:, -2:]
    decisive = top2[:, 1] - top2[:, 0] > 2 * (tolerance if kind == "float" else difference) + 1e-6
    if difference > tolerance or np.any(candidate["action"][decisive] != reference["action"][decisive]):
        return figures, f"in its probabilities by {difference:.3g}, actions agree on {agreement:.1%}"
    return figures, None


def export(policy, export_dir=None, version=None, env_id="CartPole-v1",
           kinds=("float", "dynamic"), log=print):
    """SavedModel (signature `serving_default`: observations -> probabilities, action) and TFLite files of
    the trained policy (+ int8.tflite, calibrated on observations of other episodes), through
    `core.export.export_model` (`parity`); the SavedModel's probabilities also match Keras'."""
    from core import export as core_export

    export_dir = export_dir or core_export.export_folder("rl", "reinforce")
    observations = visited_observations(policy, env_id)
    calibration = visited_observations(policy, env_id, count=128, seed=500)  # int8's, other episodes
    config = {"env": env_id, "observation_size": int(observations.shape[1]),
              "num_actions": int(policy.outputs[0].shape[-1])}
    report = core_export.export_model(policy_model(policy), export_dir, input_names=["observations"],
                                      output_names=["probabilities", "action"],
                                      sample_inputs={"observations": observations}, version=version, kinds=kinds,
                                      representative_data=np.split(calibration, 4), check=parity, log=log,
                                      extra_files={"reinforce_config.json": json.dumps(config, indent=2) + "\n"})
    keras_probabilities = tf.nn.softmax(policy(observations, training=False)).numpy()
    report["saved_model_vs_keras"] = float(np.abs(report["saved_model_outputs"]["probabilities"]
                                                  - keras_probabilities).max())
    if report["saved_model_vs_keras"] > core_export.TOLERANCES["float"]:
        raise core_export.ParityError(f"{report['saved_model']} differs from Keras by "
                                      f"{report['saved_model_vs_keras']:.3g}")
    log(f"SavedModel: {report['saved_model']} (observations -> probabilities, action; "
        f"{len(observations)} visited observations checked)")
    for kind, path in report["tflite"].items():
        figures = report["parity"][kind]
        log(f"TFLite {kind}: {path} (max |Δp| {figures['max_abs_diff']:.2g}, "
            f"same action {figures['action_agreement']:.0%})")
    return report


def play(tflite_path, episodes=3, seed=7, max_steps=None, env_id=None, log=print):
    """Run the exported TFLite policy (its greedy `action`) in the environment (read from the export's
    reinforce_config.json unless `env_id`); returns {"env", "returns", "lengths"}."""
    import gymnasium as gym

    from core import export as core_export
    from core.errors import UserError
    from core.training import read_json_object

    if not os.path.isfile(tflite_path):
        raise UserError(f"no such TFLite file: {tflite_path}; run 'export --task reinforce' first")
    if env_id is None:  # <export>/tflite/<v>/float.tflite -> <export>/<v>/reinforce_config.json
        version_dir = os.path.dirname(os.path.abspath(tflite_path))
        config_path = os.path.join(os.path.dirname(os.path.dirname(version_dir)), os.path.basename(version_dir),
                                   "reinforce_config.json")
        if not os.path.exists(config_path):
            raise UserError(f"cannot find the environment of {tflite_path} ({config_path}); pass --env")
        env_id = read_json_object(config_path, "REINFORCE export's config (a JSON object)").get("env", "CartPole-v1")
    runner = core_export.tflite_signature_runner(tflite_path, inputs=["observations"], what="a REINFORCE policy")
    env = gym.make(env_id)
    returns, lengths = [], []
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed + episode)
        total, steps, done = 0.0, 0, False
        while not done and (max_steps is None or steps < max_steps):
            action = runner(observations=observation[None].astype(np.float32))["action"]
            observation, reward, terminated, truncated, _ = env.step(int(np.asarray(action).reshape(-1)[0]))
            total, steps, done = total + float(reward), steps + 1, terminated or truncated
        returns.append(total)
        lengths.append(steps)
    env.close()
    log(f"{env_id} with {tflite_path}: returns {returns} (mean {np.mean(returns):.1f}), lengths {lengths}")
    return {"env": env_id, "returns": returns, "lengths": lengths}
