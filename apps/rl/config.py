"""The training settings of the rl tasks: one dataclass per task, the single source of their defaults
(`core.cli.add_config_flags` makes the flags). DQN's lives with its code, apps/rl/dqn/config.py (`DQNConfig`,
with its presets)."""

from dataclasses import dataclass

from core.cli import option
from core.errors import UserError


@dataclass
class ReinforceConfig:
    env: str = option("CartPole-v1", "gymnasium id (a discrete-action, vector-observation environment)")
    episodes: int = option(300, "training episodes", minimum=1)
    batch_episodes: int = option(8, "whole episodes per policy update (vector environments)", minimum=1)
    gamma: float = option(0.99, "discount γ", minimum=0.0, maximum=1.0)
    policy_lr: float = option(3e-3, "Adam learning rate of the policy", minimum=0.0)
    baseline_lr: float = option(1e-2, "Adam learning rate of the baseline v(s)", minimum=0.0)
    hidden: int = option(64, "units in each of the two hidden layers", minimum=1)
    baseline: bool = option(True, "subtract the learned baseline v(s) from the return")
    seed: int = option(0, "random seed", minimum=0)


# Why REINFORCE takes no MirroredStrategy: its time goes to the actor (a Python loop stepping gymnasium one action
# at a time), and its update is one small step on a batch of whole episodes of unequal lengths: split over
# replicas it would only add an all-reduce per update (and its optimizers are not built for replica contexts).
SINGLE_DEVICE_ONLY = ("REINFORCE trains on one device: its time goes to stepping the environments in Python, and "
                      "its update is one small step on whole episodes of unequal lengths, which replicas would "
                      "not speed up; use --strategy auto or default")


def single_device(strategy):
    """The strategy name REINFORCE trains under: `mirrored` and `multiworker` are refused (SINGLE_DEVICE_ONLY),
    `auto` is the default strategy (one device)."""
    if strategy in ("mirrored", "multiworker"):
        raise UserError(f"--strategy {strategy}: {SINGLE_DEVICE_ONLY}")
    return "default" if strategy == "auto" else strategy


@dataclass
class MCTSConfig:
    iterations: int = option(12, "self-play + training rounds", minimum=1)
    games: int = option(40, "self-play games per round", minimum=1)
    simulations: int = option(40, "MCTS simulations per move", minimum=1)
    c_puct: float = option(1.5, "PUCT exploration constant c", minimum=0.0)
    explore_moves: int = option(3, "opening moves drawn from the visit counts (then the most visited)", minimum=0)
    window: int = option(4, "rounds of positions kept for training", minimum=1)
    epochs: int = option(8, "passes over the window per round", minimum=1)
    batch_size: int = option(64, "global batch size of the fit", minimum=1)
    learning_rate: float = option(2e-3, "Adam learning rate", minimum=0.0)
    hidden: int = option(64, "units in each of the two hidden layers", minimum=1)
    l2: float = option(1e-4, "L2 weight decay", minimum=0.0)
    seed: int = option(0, "random seed", minimum=0)


# `train --task mcts --small`: a run of seconds (the base the typed flags then override).
MCTS_SMALL = dict(iterations=4, games=20, simulations=25, epochs=6)
