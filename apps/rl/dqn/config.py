"""The DQN run's configuration: one dataclass (the single source of defaults), the presets, and the
run folder's config.json."""

import json
import os
from dataclasses import asdict, dataclass, fields

from core import checkpoints
from core.errors import UserError


@dataclass
class DQNConfig:
    env: str = "ALE/Pong-v5"
    steps: int = 2_000_000           # agent steps in total (x4 frames on Atari)
    num_envs: int = 8
    buffer_size: int = 200_000        # frames (= transitions) kept, over all environments
    batch_size: int = 32              # per replica
    learning_rate: float = 1e-4
    optimizer: str = "adam"           # adam or rmsprop
    gamma: float = 0.99
    train_freq: int = 4               # agent steps per learner update
    updates_per_call: int = 1         # learner updates per tf.function call (amortizes dispatch on small nets)
    target_update: int = 8_000        # agent steps between target syncs
    learning_starts: int = 20_000     # agent steps of random play before learning
    eps_start: float = 1.0
    eps_end: float = 0.01
    eps_decay_steps: int = 250_000    # agent steps of linear decay
    double: bool = True
    dueling: bool = False
    network: str = "nature"           # nature (Atari) or mlp
    hidden: int = 512
    huber_delta: float = 1.0
    max_grad_norm: float = 10.0
    seed: int = 0
    log_every: int = 5_000            # agent steps between train.csv rows
    checkpoint_every: int = 100_000   # agent steps between checkpoints
    async_envs: bool = False
    jit_compile: bool = True          # XLA for the update (one replica only): ~30% more updates/s on CPU

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


def save_run_config(out, config):
    """Write config.json into run folder `out`; a folder holding a run of another environment or network is
    a one-line `UserError`."""
    from core.training import make_output_dir

    make_output_dir(out)  # a folder that cannot be made or written: one line, before any work
    path = os.path.join(out, CONFIG_FILE)
    if os.path.exists(path):
        old = load_run_config(out)
        if old.env != config.env or old.network != config.network or old.dueling != config.dueling:
            raise UserError(f"{out} holds another run (env={old.env}, network={old.network}, "
                            f"dueling={old.dueling}); pass a different --out or delete it")
    try:
        with open(path + ".tmp", "w") as f:
            json.dump(asdict(config), f, indent=2, sort_keys=True)
        os.replace(path + ".tmp", path)
    except OSError as error:
        raise UserError(f"cannot write {path}: {checkpoints.write_error_reason(error)}") from None


def read_dqn_config(path):
    """The DQNConfig in JSON file `path`; a file that is not one (binary, empty, truncated, a list,
    another app's config) is a one-line `UserError`."""
    from core.training import read_json_object

    values = read_json_object(path, "DQN run's config (a JSON object)")
    if "env" not in values:
        raise UserError(f"{path} is not a DQN run's config (it has no 'env'; keys: "
                        f"{', '.join(sorted(values)[:6]) or 'none'}); pass the right --out")
    try:
        return DQNConfig.from_dict(values)
    except TypeError as error:
        raise UserError(f"corrupt {path}: {error}") from None


def load_run_config(out):
    path = os.path.join(out, CONFIG_FILE)
    if not os.path.exists(path):
        raise UserError(f"no DQN run in {out} (missing {CONFIG_FILE}); run 'dqn train' first or pass --out")
    return read_dqn_config(path)
