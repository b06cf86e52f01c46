"""Deep Q-Networks (Mnih et al. 2013/2015), with Double DQN (van Hasselt et al. 2016) and dueling heads
(Wang et al. 2016) as options. The parts, as Dopamine separates them:

  config.py        DQNConfig (every default) and the presets; the run folder's config.json
  networks.py      the Q-networks (Nature CNN, MLP) and the dueling head
  agent.py         online + target networks, TD targets, ε-greedy acting, the learner update under tf.distribute
  checkpointer.py  checkpoints/step-<N>/: model, replay, environments and run state (resume = never stopped)
  runner.py        the training loop: act, step the environments, learn, log, checkpoint
  evaluation.py    whole games with ε-greedy play, GIF and PNG strip
  deployment.py    the policy model exported to SavedModel + TFLite with parity, and play with the .tflite

The story of `train`:
  1. pick the tf.distribute strategy (first), build the online and target Q-networks, the optimizer and the step
     counters inside its scope;
  2. restore model, optimizer, replay buffer, counters, RNG state and the environments (emulators, wrappers,
     the actor's stacked frames) from the run folder's checkpoint when there is one: a killed run resumes
     exactly as if it had never stopped;
  3. loop: the actor picks ε-greedy actions for all vector environments at once, transitions go to the compact
     replay buffer; every `train_freq` agent steps the learner samples a batch and runs one update (a
     `tf.function` under the strategy: Huber loss on the TD error against r + γ (1 − terminal) Q_target(s', a*),
     a* = argmax of the target net, or of the online net for Double DQN); every `target_update` agent steps the
     target net copies the online one; ε decays linearly;
  4. log episodes and training statistics to CSV and TensorBoard, checkpoint every `checkpoint_every` steps and
     at the end.

Counting: an "agent step" is one action in one environment (4 Atari frames).
"""

# The names below load their module on first use (PEP 562), so that the command line can read `DQNConfig`
# (apps/rl/dqn/config.py, no TensorFlow) before `--help` answers; the other modules import TensorFlow.
_MODULES = {
    "agent": ("Agent", "build_agent", "epsilon_at", "huber", "td_targets"),
    "checkpointer": ("CHECKPOINT_FILES", "CHECKPOINTS", "checkpoint_contents", "latest_checkpoint", "restore",
                     "save_checkpoint"),
    "config": ("PRESETS", "DQNConfig", "load_run_config", "read_dqn_config", "save_run_config"),
    "deployment": ("GreedyPolicy", "Q_TOLERANCE", "export", "play", "policy_model", "sample_observations"),
    "evaluation": ("evaluate", "load_agent", "run_episodes", "save_gif", "save_strip"),
    "networks": ("NETWORKS", "DuelingCombine", "mlp", "nature_cnn"),
    "runner": ("Runner", "plot_training", "train"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}
__all__ = list(_HOME)


def __getattr__(name):
    import importlib

    if name not in _HOME:
        raise AttributeError(f"module 'apps.rl.dqn' has no attribute {name!r}")
    return getattr(importlib.import_module(f"apps.rl.dqn.{_HOME[name]}"), name)
