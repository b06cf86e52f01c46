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

from apps.rl.dqn.agent import Agent, build_agent, epsilon_at, huber, td_targets
from apps.rl.dqn.checkpointer import (
    CHECKPOINT_FILES,
    CHECKPOINTS,
    checkpoint_contents,
    latest_checkpoint,
    restore,
    save_checkpoint,
)
from apps.rl.dqn.config import PRESETS, DQNConfig, load_run_config, read_dqn_config, save_run_config
from apps.rl.dqn.deployment import GreedyPolicy, export, play, policy_model, sample_observations
from apps.rl.dqn.evaluation import evaluate, load_agent, run_episodes, save_gif, save_strip
from apps.rl.dqn.networks import NETWORKS, DuelingCombine, mlp, nature_cnn
from apps.rl.dqn.runner import Runner, plot_training, train

__all__ = ["Agent", "build_agent", "epsilon_at", "huber", "td_targets", "CHECKPOINT_FILES", "CHECKPOINTS",
           "checkpoint_contents", "latest_checkpoint", "restore", "save_checkpoint", "PRESETS", "DQNConfig",
           "load_run_config", "read_dqn_config", "save_run_config", "GreedyPolicy", "export", "play", "policy_model",
           "sample_observations", "evaluate", "load_agent", "run_episodes", "save_gif", "save_strip", "NETWORKS",
           "DuelingCombine", "mlp", "nature_cnn", "Runner", "plot_training", "train"]
