"""Evaluation of a trained DQN run: whole games with an ε-greedy policy, rendered to a GIF and a PNG strip."""

import dataclasses
import json
import os
import time

import numpy as np

from apps.rl import atari
from apps.rl.dqn.agent import build_agent
from apps.rl.dqn.checkpointer import restore
from apps.rl.dqn.config import load_run_config
from core import distribute
from core.errors import UserError


def load_agent(out, strategy="default"):
    """The trained agent of a run folder (model weights from the newest checkpoint)."""
    config = load_run_config(out)
    strategy = distribute.get_strategy(strategy)
    # Played and exported in float32 whatever --precision trained it: its variables are float32 anyway, and
    # TFLite has no bfloat16 kernels.
    agent = build_agent(dataclasses.replace(config, precision="float32"), strategy)
    if restore(agent, out) is None:
        raise UserError(f"no checkpoint in {os.path.join(out, 'checkpoints')}; run 'train --task dqn' first")
    return config, agent


def run_episodes(policy, env_id, episodes, epsilon, stack, num_actions, *, seed=0, max_steps=None,
                 record_first=False):
    """Play whole games (evaluation wrappers: no episodic life, no clipping) with an ε-greedy policy.

    `policy(observations)` maps a batch of stacked observations to greedy actions.
    Returns (returns, lengths, rgb frames of the first episode when `record_first`)."""
    rng = np.random.default_rng(seed)
    returns, lengths, frames_rgb = [], [], []
    for episode in range(episodes):
        record = record_first and episode == 0
        env = atari.make_env(env_id, training=False, seed=seed + episode, render=record and atari.is_atari(env_id))
        try:
            frame, _ = env.reset(seed=seed + episode)
            stacked = np.repeat(frame[None], stack, axis=0)
            total, length = 0.0, 0
            while True:
                if record:
                    frames_rgb.append(atari.render(env))
                observation = np.moveaxis(stacked, 0, -1) if stack > 1 else stacked[0]
                action = int(policy(observation[None])[0]) if rng.random() >= epsilon \
                    else int(rng.integers(num_actions))
                frame, reward, terminated, truncated, _ = env.step(action)
                total += reward
                length += 1
                stacked = np.concatenate([stacked[1:], frame[None]])
                if terminated or truncated or (max_steps and length >= max_steps):
                    break
            if record:
                frames_rgb.append(atari.render(env))
        finally:
            env.close()
        returns.append(total)
        lengths.append(length)
    return np.array(returns), np.array(lengths), frames_rgb


def save_gif(frames, path, every=2, max_frames=600, fps=30):
    """An animated GIF of (every `every`-th of at most `max_frames`) RGB frames."""
    from PIL import Image

    chosen = frames[:max_frames * every:every]
    images = [Image.fromarray(np.asarray(f)) for f in chosen]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 * every / fps), loop=0)
    return path


def save_strip(frames, path, count=8, title=None):
    """A PNG strip of `count` frames spread over the episode."""
    from core import plots

    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).astype(int)
    return plots.image_grid(np.stack([frames[i] for i in picks]), [f"step {i}" for i in picks], path,
                            columns=len(picks), title=title)


def evaluate(out, episodes=10, epsilon=0.05, seed=123, max_steps=None, render=True, log=print):
    """Mean return of the trained Q-network over whole games with ε-greedy (ε=0.05) play;
    the first episode is rendered to episode.gif and episode_strip.png in `out`."""
    config, agent = load_agent(out)
    start = time.time()
    returns, lengths, frames = run_episodes(lambda x: agent.q_values(x).argmax(axis=1), config.env, episodes,
                                            epsilon, agent.stack, agent.num_actions, seed=seed,
                                            max_steps=max_steps, record_first=render)
    steps = int(lengths.sum())
    report = dict(env=config.env, episodes=episodes, epsilon=epsilon, mean_return=float(returns.mean()),
                  std_return=float(returns.std()), returns=returns.tolist(), mean_length=float(lengths.mean()),
                  env_step=int(agent.env_steps.numpy()), eval_steps_per_s=steps / (time.time() - start))
    if render and frames:
        report["gif"] = save_gif(frames, os.path.join(out, "episode.gif"))
        report["strip"] = save_strip(frames, os.path.join(out, "episode_strip.png"),
                                     title=f"{config.env}: first evaluation episode, return {returns[0]:g}")
    with open(os.path.join(out, "evaluation.json"), "w") as f:
        json.dump(report, f, indent=2)
    from core import results

    results.write_results(out, app="rl", model="dqn", dataset=config.env, split=f"{episodes} episodes, ε={epsilon}",
                          metrics={"mean_return": report["mean_return"], "std_return": report["std_return"]},
                          budget={"agent_steps": report["env_step"], "frames": 4 * report["env_step"]},
                          seed=seed)
    log(f"{config.env}: mean return {report['mean_return']:.2f} ± {report['std_return']:.2f} over {episodes} "
        f"episodes (ε={epsilon}), after {report['env_step']} agent steps")
    return report
