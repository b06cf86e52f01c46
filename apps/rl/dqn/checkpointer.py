"""The DQN checkpointer. checkpoints/step-<N>/ holds everything a run needs to go on exactly as if it had
never stopped: model.* (online and target nets, optimizer slots, counters: tf.train.Checkpoint), replay.npz
(the buffer and its sampler RNG), envs.npz (every sub-environment's emulator and wrapper state, the vector
env's autoreset flags, the actor's stacked observations) and state.json (actor RNG, recent returns, update
credit, the not yet logged losses). The last two are kept, each written under a temporary name and renamed
once complete (core.checkpoints): a kill at any moment leaves them whole, and a damaged newest one is reported
in one line and the one before it used.
"""

import json
import os
import zipfile

import numpy as np
import tensorflow as tf

from core.checkpoints import CheckpointFolder, CorruptCheckpoint
from core.errors import UserError, first_line

CHECKPOINTS = "checkpoints"
CHECKPOINT_FILES = ("model.index", "state.json")  # what every use needs; training also reads the .npz files


def _checkpoint_folder(out):
    return CheckpointFolder(os.path.join(out, CHECKPOINTS), "step-")


def _step_of(path):
    return int(os.path.basename(path)[len("step-"):])


def latest_checkpoint(out):
    """The folder of the newest complete checkpoint of run `out` (not checked), or None."""
    return _checkpoint_folder(out).newest()


def _restore_model(agent, prefix):
    """Raises CorruptCheckpoint when the checkpoint cannot be read into the agent."""
    try:
        agent.checkpoint().read(prefix).assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError, IndexError, KeyError) as error:  # TF raises all of these
        raise CorruptCheckpoint(first_line(error)) from None


def _load_checkpoint(agent, path, buffer, with_envs):
    """Read checkpoint folder `path` into agent (and buffer); its run state, or CorruptCheckpoint."""
    needed = CHECKPOINT_FILES + (("replay.npz",) if buffer is not None else ()) + (("envs.npz",) if with_envs else ())
    missing = [f for f in needed if not os.path.exists(os.path.join(path, f))]
    if missing:
        raise CorruptCheckpoint(f"{', '.join(missing)} missing")
    _restore_model(agent, os.path.join(path, "model"))
    try:
        with open(os.path.join(path, "state.json")) as f:
            state = json.load(f)
        state["envs"] = None
        if with_envs:
            with np.load(os.path.join(path, "envs.npz"), allow_pickle=False) as data:
                state["envs"] = dict(data)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as error:
        raise CorruptCheckpoint(first_line(error)) from None
    counters = {"folder": _step_of(path), "state.json": state.get("env_steps"), "model": int(agent.env_steps.numpy())}
    if len(set(counters.values())) != 1:
        raise CorruptCheckpoint("its agent step counters disagree (" +
                                ", ".join(f"{k} {v}" for k, v in counters.items()) + ")")
    if buffer is not None:
        try:
            buffer.load(os.path.join(path, "replay.npz"))
        except UserError as error:
            raise CorruptCheckpoint(str(error)) from None
    return state


def restore(agent, out, buffer=None, with_envs=False, log=print):
    """Load the newest usable checkpoint of `out` into agent (and buffer): a damaged newest one is
    reported through `log` and the one before used. Returns None when there is none, else the run
    state of state.json, with the arrays of envs.npz as "envs" when asked."""
    folder = _checkpoint_folder(out)
    if not folder.names():
        return None
    return folder.restore(lambda path: _load_checkpoint(agent, path, buffer, with_envs),
                          label=lambda state: f"agent step {state['env_steps']}", log=log)


def save_checkpoint(agent, out, buffer, state, envs_state):
    """Write checkpoints/step-<N>/ completely; keep it and the one before (core.checkpoints)."""

    def write(folder):
        agent.checkpoint().write(os.path.join(folder, "model"))
        buffer.save(os.path.join(folder, "replay.npz"))
        np.savez(os.path.join(folder, "envs.npz"), **envs_state)
        with open(os.path.join(folder, "state.json"), "w") as f:
            json.dump(state, f)

    return _checkpoint_folder(out).save(f"step-{int(agent.env_steps.numpy()):012d}", write)


def checkpoint_contents(out):
    """Every value of the newest checkpoint as {name: array}: the TF variables (by checkpoint key),
    "replay/<field>", "envs/<key>" and "state/<key>" (to compare two runs exactly)."""
    path = latest_checkpoint(out)
    if path is None:
        raise UserError(f"no checkpoint in {os.path.join(out, CHECKPOINTS)}")
    reader = tf.train.load_checkpoint(os.path.join(path, "model"))
    contents = {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
                if not key.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")}
    for prefix, file in (("replay", "replay.npz"), ("envs", "envs.npz")):
        with np.load(os.path.join(path, file), allow_pickle=False) as data:
            contents.update({f"{prefix}/{key}": data[key] for key in data.files})
    with open(os.path.join(path, "state.json")) as f:
        contents.update({f"state/{key}": value for key, value in json.load(f).items()})
    return contents
