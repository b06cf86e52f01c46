"""Deployment of a trained DQN run: the policy model (frames -> Q-values, greedy action) exported to SavedModel
and TFLite with a parity check on real observations, and play with the exported TFLite file."""

import json
import os
from dataclasses import asdict

import keras
import numpy as np
import tensorflow as tf

from apps.rl import atari
from apps.rl.dqn.config import read_dqn_config
from apps.rl.dqn.evaluation import load_agent, run_episodes, save_gif
from core.errors import UserError

# The largest |ΔQ| a TFLite file may have, relative to 1 + max |Q|: float rounds only, int8 rounds every activation
# to 256 levels of its calibrated range (dynamic is reported, not enforced).
Q_TOLERANCE = {"float": 1e-4, "int8": 0.15}


class GreedyPolicy(keras.layers.Layer):
    """argmax_a Q(s, a) as int32 (part of the exported signature)."""

    def call(self, q):
        # tf.argmax, not keras.ops.argmax: the latter adds a -0.0 fix-up (BitwiseAnd) TFLite lacks
        return tf.argmax(q, axis=-1, output_type=tf.int32)


def policy_model(agent):
    """stacked observations -> (Q-values, greedy action)."""
    inputs = keras.Input(agent.input_shape, dtype=agent.online.inputs[0].dtype, name="frames")
    q = agent.online(inputs)
    return keras.Model(inputs, [q, GreedyPolicy()(q)], name="dqn_policy")


def sample_observations(config, agent, count=64, seed=0):
    """Real stacked observations from random play (the parity and calibration batch)."""
    env = atari.make_env(config.env, training=False, seed=seed)
    rng = np.random.default_rng(seed)
    frame, _ = env.reset(seed=seed)
    stacked = np.repeat(frame[None], agent.stack, axis=0)
    observations = []
    try:
        while len(observations) < count:
            frame, _, terminated, truncated, _ = env.step(int(rng.integers(agent.num_actions)))
            stacked = np.concatenate([stacked[1:], frame[None]])
            observations.append(np.moveaxis(stacked, 0, -1) if agent.stack > 1 else stacked[0])
            if terminated or truncated:
                frame, _ = env.reset()
                stacked = np.repeat(frame[None], agent.stack, axis=0)
    finally:
        env.close()
    return np.stack(observations)


def export(out, export_dir=None, version=None, kinds=("float", "dynamic"), int8=True, log=print):
    """SavedModel (signature `serving_default`: frames -> q_values, action) and float + dynamic-range + int8
    TFLite files (int8 calibrated on other frames of random play, uint8 in), checked on real observations:
    float must match the SavedModel's Q-values to 1e-4 (relative to their scale) and pick the same actions
    wherever the best two Q-values differ by more than that; int8 must match them to Q_TOLERANCE["int8"]
    (relative, core.export's int8 tolerance) and pick the same actions wherever the best two differ by more
    than twice its Q error; the dynamic-range file's Q error and action agreement are reported, not enforced."""
    from core import export as core_export

    export_dir = export_dir or core_export.export_folder("rl", "dqn")
    config, agent = load_agent(out)
    observations = sample_observations(config, agent)

    def parity(kind, reference, candidate):
        scale = 1.0 + float(np.abs(reference["q_values"]).max())
        top2 = np.sort(reference["q_values"], axis=1)[:, -2:]
        diff = float(np.abs(candidate["q_values"] - reference["q_values"]).max())
        if not np.isfinite(diff):  # an overflowed or NaN Q: no figure to report
            return {"q_max_abs_diff": diff}, f"in Q by {diff}"
        # an action may flip only where the best two Q-values were closer than the Q error can explain
        decisive = (top2[:, 1] - top2[:, 0]) > (1e-4 * scale if kind == "float" else 2 * diff + 1e-6 * scale)
        agreement = float((candidate["action"] == reference["action"]).mean())
        problem = None
        if kind in Q_TOLERANCE and (diff > Q_TOLERANCE[kind] * scale or
                                    np.any(candidate["action"][decisive] != reference["action"][decisive])):
            problem = f"in Q by {diff:.3g}, actions agree on {agreement:.1%}"
        return {"q_max_abs_diff": diff, "action_agreement": agreement}, problem

    # int8's calibration: other frames than the check's (`int8=False`: no int8 file, a faster export)
    calibration = sample_observations(config, agent, count=64, seed=1) if int8 else None
    report = core_export.export_model(policy_model(agent), export_dir, input_names=["frames"],
                                      output_names=["q_values", "action"], sample_inputs={"frames": observations},
                                      representative_data=np.split(calibration, 4) if int8 else None,
                                      version=version, kinds=kinds, check=parity, log=log,
                                      extra_files={"dqn_config.json": json.dumps(asdict(config), indent=2)})
    served = report["saved_model_outputs"]["q_values"]
    report["saved_model_vs_keras"] = float(np.abs(served - agent.q_values(observations)).max())
    log(f"SavedModel: {report['saved_model']}")
    for kind, path in report["tflite"].items():
        figures = report["parity"][kind]
        log(f"TFLite {kind}: {path} (max |ΔQ| {figures['q_max_abs_diff']:.2g}, "
            f"same action {figures['action_agreement']:.0%})")
    return report


def play(tflite_path, episodes=3, epsilon=0.0, seed=7, max_steps=None, gif=None, env_id=None, log=print):
    """Run the exported TFLite policy (its `action` output) in the environment."""
    from core import export as core_export

    if not os.path.exists(tflite_path):
        raise UserError(f"no such TFLite file: {tflite_path}; run 'export --task dqn' first")
    if env_id is None:
        config_path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(tflite_path)))),
                                   os.path.basename(os.path.dirname(os.path.abspath(tflite_path))), "dqn_config.json")
        if not os.path.exists(config_path):
            raise UserError(f"cannot find the environment of {tflite_path} ({config_path}); pass --env")
        env_id = read_dqn_config(config_path).env
    runner = core_export.tflite_signature_runner(tflite_path, inputs=["frames"], what="a DQN policy")
    frame_shape, dtype, stack, num_actions = atari.observation_spec(env_id)

    def policy(observations):
        return runner(frames=observations.astype(dtype))["action"]

    returns, lengths, frames = run_episodes(policy, env_id, episodes, epsilon, stack, num_actions, seed=seed,
                                            max_steps=max_steps, record_first=gif is not None)
    log(f"{env_id} with {tflite_path}: returns {returns.tolist()} (mean {returns.mean():.2f}), "
        f"lengths {lengths.tolist()}")
    result = {"returns": returns.tolist(), "lengths": lengths.tolist(), "env": env_id}
    if gif is not None and frames:
        result["gif"] = save_gif(frames, gif)
        log(f"GIF: {result['gif']}")
    return result
