"""The DQN run's configuration: one dataclass (the single source of defaults), the presets, and the
run folder's config.json."""

import json
import os
from dataclasses import dataclass, fields

from core import checkpoints
from core.cli import option, run_config
from core.errors import UserError
from core.precision import ComputeOptions


@dataclass
class DQNConfig(ComputeOptions):
    env: str = option("ALE/Pong-v5", "gymnasium id, e.g. ALE/Breakout-v5 or CartPole-v1")
    steps: int = option(2_000_000, "agent steps in total (x4 frames on Atari)", minimum=1)
    num_envs: int = option(8, "vector environments", minimum=1)
    buffer_size: int = option(200_000, "frames (= transitions) kept, over all environments", minimum=1)
    batch_size: int = option(32, "batch size per replica", minimum=1)
    learning_rate: float = option(1e-4, "learning rate", minimum=0.0)
    optimizer: str = option("adam", "optimizer", choices=("adam", "rmsprop"))
    gamma: float = option(0.99, "discount γ", minimum=0.0, maximum=1.0)
    train_freq: int = option(4, "agent steps per learner update", minimum=1)
    updates_per_call: int = option(1, "learner updates per tf.function call (amortizes dispatch on small nets)",
                                   minimum=1)
    target_update: int = option(8_000, "agent steps between target syncs", minimum=1)
    learning_starts: int = option(20_000, "agent steps of random play before learning", minimum=0)
    eps_start: float = option(1.0, "ε at the start", minimum=0.0, maximum=1.0)
    eps_end: float = option(0.01, "ε after the decay", minimum=0.0, maximum=1.0)
    eps_decay_steps: int = option(250_000, "agent steps of linear ε decay", minimum=1)
    double: bool = option(True, "Double DQN targets")
    dueling: bool = option(False, "dueling head")
    network: str = option("nature", "Q-network", choices=("nature", "mlp"))
    hidden: int = option(512, "units of the hidden dense layer", minimum=1)
    huber_delta: float = option(1.0, "Huber loss δ", minimum=0.0)
    max_grad_norm: float = option(10.0, "global gradient-norm clip (0: none)", minimum=0.0)
    seed: int = option(0, "random seed", minimum=0)
    log_every: int = option(5_000, "agent steps between train.csv rows", minimum=1)
    checkpoint_every: int = option(100_000, "agent steps between checkpoints", minimum=1)
    async_envs: bool = option(False, "environments in subprocesses")
    jit: bool = option(True, "XLA for the update (one replica only): ~30% more updates/s on CPU")

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


PRESETS = {
    # Set for a 500k-frame budget (125k agent steps): replay ratio 1, short ε schedule.
    "pong": dict(env="ALE/Pong-v5", steps=125_000, num_envs=8, buffer_size=100_000, train_freq=1,
                 updates_per_call=1, target_update=2_000, learning_starts=10_000, eps_decay_steps=50_000,
                 learning_rate=1e-4, log_every=5_000, checkpoint_every=25_000),
    "breakout": dict(env="ALE/Breakout-v5", steps=10_000_000, buffer_size=500_000),
    # Learns CartPole in about a minute on two CPU cores.
    "cartpole": dict(env="CartPole-v1", steps=15_000, num_envs=8, buffer_size=20_000, batch_size=64,
                     learning_rate=1e-3, train_freq=2, updates_per_call=4, target_update=500,
                     learning_starts=1_000, eps_decay_steps=6_000, eps_end=0.02, network="mlp", hidden=128,
                     gamma=0.98, log_every=1_000, checkpoint_every=15_000, double=True),
}


CONFIG_FILE = "config.json"


def save_run_config(out, config, **recorded):
    """Write config.json into run folder `out` (the settings, and what the run `recorded`: e.g. its replicas);
    a folder holding a run of another environment or network is a one-line `UserError`."""
    from core.training import make_output_dir

    make_output_dir(out)  # a folder that cannot be made or written: one line, before any work
    path = os.path.join(out, CONFIG_FILE)
    if os.path.exists(path):
        old = load_run_config(out)
        if old.env != config.env or old.network != config.network or old.dueling != config.dueling:
            raise UserError(f"{out} holds another run (env={old.env}, network={old.network}, "
                            f"dueling={old.dueling}); give this run its own folder with --run DIR, or delete it")
    try:
        with open(path + ".tmp", "w") as f:
            json.dump(run_config(config, "rl", task="dqn", **recorded), f, indent=2, sort_keys=True)
        os.replace(path + ".tmp", path)
    except OSError as error:
        raise UserError(f"cannot write {path}: {checkpoints.write_error_reason(error)}") from None


def read_dqn_config(path):
    """The DQNConfig in JSON file `path`; a file that is not one (binary, empty, truncated, a list,
    another app's config) is a one-line `UserError`."""
    from core.training import read_json_object

    values = read_json_object(path, "DQN run's config (a JSON object)")
    if values.get("task", "dqn") != "dqn":
        raise UserError(f"{path} is the config of a '{values['task']}' run, not a DQN run's; pass the right --run")
    if "env" not in values:
        raise UserError(f"{path} is not a DQN run's config (it has no 'env'; keys: "
                        f"{', '.join(sorted(values)[:6]) or 'none'}); pass the right --run")
    try:
        return DQNConfig.from_dict(values)
    except TypeError as error:
        raise UserError(f"corrupt {path}: {error}") from None


def load_run_config(out):
    path = os.path.join(out, CONFIG_FILE)
    if not os.path.exists(path):
        raise UserError(f"no DQN run in {out} (missing {CONFIG_FILE}); run 'train --task dqn' first or pass --run DIR")
    return read_dqn_config(path)
