"""The settings of the rl verbs other than `train` (whose settings are the task configs: apps/rl/config.py,
apps/rl/dqn/config.py): one dataclass per verb and task, so each flag's default, range and help are written
once (`core.cli.add_config_flags` makes the flags, `core.cli.resolve_config` checks them)."""

from dataclasses import dataclass

from core.cli import option


@dataclass
class DQNEvaluate:
    episodes: int = option(10, "whole games", minimum=1)
    epsilon: float = option(0.05, "ε of the ε-greedy play", minimum=0.0, maximum=1.0)
    max_steps: int | None = option(None, "cap on agent steps per episode", minimum=1)
    render: bool = option(True, "the first game as episode.gif and episode_strip.png in the run folder")
    seed: int = option(123, "environment seed", minimum=0)


@dataclass
class ReinforceEvaluate:
    episodes: int = option(10, "episodes of the greedy policy", minimum=1)
    seed: int = option(100, "environment seed of the first episode", minimum=0)


@dataclass
class MCTSEvaluate:
    games: int = option(100, "games on each side per opponent", minimum=1)
    simulations: int | None = option(None, "MCTS simulations per move, none = the run's", minimum=1)
    seed: int = option(0, "random seed", minimum=0)


@dataclass
class DQNPlay:
    env: str | None = option(None, "gymnasium id, none = read from the export")
    episodes: int = option(1, "episodes", minimum=1)
    epsilon: float = option(0.0, "ε of the ε-greedy play", minimum=0.0, maximum=1.0)
    max_steps: int | None = option(None, "cap on agent steps per episode", minimum=1)
    gif: bool = option(True, "the first episode as play.gif in the run folder")
    seed: int = option(7, "environment seed", minimum=0)


@dataclass
class ReinforcePlay:
    env: str | None = option(None, "gymnasium id, none = read from the export")
    episodes: int = option(3, "episodes", minimum=1)
    max_steps: int | None = option(None, "cap on steps per episode", minimum=1)
    seed: int = option(7, "environment seed of the first episode", minimum=0)


@dataclass
class MCTSPlay:
    opponent: str = option("human", "who the network plays", choices=("human", "random", "greedy"))
    second: bool = option(False, "the network plays O (else X, first)")
    games: int = option(1, "games", minimum=1)
    simulations: int = option(100, "MCTS simulations per move", minimum=1)
    seed: int = option(0, "random seed", minimum=0)


@dataclass
class Bandits:
    runs: int = option(2000, "independent bandit problems", minimum=1)
    steps: int = option(1000, "steps per run", minimum=1)
    arms: int = option(10, "arms", minimum=1)
    seed: int = option(0, "random seed", minimum=0)


@dataclass
class Contextual:
    env: str = option("all", "linear, digits or all (a comma list)")
    steps: int | None = option(None, "steps per run (default: 1000 on linear, 2000 on digits; --small: 300, 500)",
                               minimum=1)
    runs: int | None = option(None, "independent runs (default: 200 on linear, 20 on digits; --small: 50, 5)",
                              minimum=1)
    alpha: float = option(0.5, "LinUCB width factor α", minimum=0.0)
    epsilon: float = option(0.1, "ε of both ε-greedy agents", minimum=0.0, maximum=1.0)
    small: bool = option(False, "a few seconds instead of half a minute")
    seed: int = option(0, "random seed", minimum=0)


@dataclass
class Tabular:
    env: str = option("all", "frozenlake, cliffwalking, taxi or all (a comma list)")
    algorithms: str = option("all", "a comma list of value_iteration, policy_iteration, mc_control, sarsa, "
                                    "q_learning, or all")
    episodes: int | None = option(None, "episodes for the learning methods (default: each method's own)", minimum=1)
    seed: int = option(0, "random seed", minimum=0)
