"""Environments for DQN: the DeepMind Atari preprocessing as gymnasium wrappers,
and vector environments of them.

Training chain for `ALE/<Game>-v5` (made with frameskip=1, no sticky actions,
grayscale screens):

  NoopReset(30)      a random number (1..30) of NOOPs after each real reset
  FireReset          press FIRE after a reset in games that wait for it
  MaxAndSkip(4)      repeat the action 4 frames, sum the rewards, max over the last two frames
  EpisodeStats       the real game's return and length, reported at game over
  EpisodicLife       a lost life ends the learner's episode (the game goes on)
  Resize84           84x84 uint8 (bilinear, PIL)
  ClipReward         sign of the reward

Evaluation uses the same chain without EpisodicLife and ClipReward, so it
scores whole games. Observations are single 84x84 frames; the 4-frame stack
is kept by the actor and the replay buffer (frames stored once).
Non-Atari ids (e.g. CartPole-v1) get only EpisodeStats.

Checkpoints: every wrapper with state between steps has `get_state()`/`set_state()`
(plain arrays and numbers, so they save to .npz without pickle); `Checkpointable`,
the outermost wrapper, collects them with gymnasium's own wrappers and the game
itself (the ALE emulator with its RNG, or CartPole's physics) into its `env_state`
property. A vector env (sync or async) reads and writes that property per env with
`get_attr`/`set_attr`: `vector_env_state` and `set_vector_env_state`.
"""

import json

import gymnasium as gym
import numpy as np
from PIL import Image

from core.errors import UserError

ATARI_MAX_FRAMES = 108_000  # 30 minutes of play, the usual cap


def is_atari(env_id):
    return env_id.startswith("ALE/")


class NoopReset(gym.Wrapper):
    # No state of its own: the number of NOOPs comes from the base env's np_random (saved with the game).
    def __init__(self, env, noop_max=30):
        super().__init__(env)
        self.noop_max = noop_max
        assert env.unwrapped.get_action_meanings()[0] == "NOOP"

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for _ in range(int(self.np_random.integers(1, self.noop_max + 1))):
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


class FireReset(gym.Wrapper):
    def __init__(self, env):
        super().__init__(env)
        assert env.unwrapped.get_action_meanings()[1] == "FIRE"

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for action in (1, 2):
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


class MaxAndSkip(gym.Wrapper):
    def __init__(self, env, skip=4):
        super().__init__(env)
        self.skip = skip
        self._last = np.zeros((2,) + env.observation_space.shape, env.observation_space.dtype)

    def step(self, action):
        total, terminated, truncated, info = 0.0, False, False, {}
        for i in range(self.skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            if i >= self.skip - 2:
                self._last[i - (self.skip - 2)] = obs
            total += reward
            if terminated or truncated:
                if i < self.skip - 2:  # ended early: max over what we have
                    self._last[:] = obs
                elif i == self.skip - 2:
                    self._last[1] = obs
                break
        return self._last.max(axis=0), total, terminated, truncated, info

    def get_state(self):
        return {"last": self._last.copy()}

    def set_state(self, state):
        self._last[:] = state["last"]


class EpisodeStats(gym.Wrapper):
    """Adds `game_return`/`game_length` (unclipped, whole game) to the info at the real end."""

    def __init__(self, env):
        super().__init__(env)
        self._return, self._length = 0.0, 0

    def get_state(self):
        return {"return": self._return, "length": self._length}

    def set_state(self, state):
        self._return, self._length = float(state["return"]), int(state["length"])

    def reset(self, **kwargs):
        self._return, self._length = 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        self._length += 1
        if terminated or truncated:
            info = dict(info, game_return=self._return, game_length=self._length)
        return obs, reward, terminated, truncated, info


class EpisodicLife(gym.Wrapper):
    def __init__(self, env):
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def get_state(self):
        return {"lives": self.lives, "game_over": self.game_over}

    def set_state(self, state):
        self.lives, self.game_over = int(state["lives"]), bool(state["game_over"])

    def reset(self, **kwargs):
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:  # a life was lost: continue the game with a NOOP
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.game_over = False
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class Resize84(gym.ObservationWrapper):
    def __init__(self, env, size=84):
        super().__init__(env)
        self.size = size
        self.observation_space = gym.spaces.Box(0, 255, (size, size), np.uint8)

    def observation(self, obs):
        return np.asarray(Image.fromarray(obs).resize((self.size, self.size), Image.BILINEAR))


class ClipReward(gym.RewardWrapper):
    def reward(self, reward):
        return float(np.sign(reward))


# gymnasium's own wrappers (added by gym.make) that carry state from step to step. PassiveEnvChecker
# only checks the first reset and step, which a resumed run has already done.
GYMNASIUM_WRAPPER_FIELDS = {gym.wrappers.TimeLimit: ("_elapsed_steps",),
                            gym.wrappers.OrderEnforcing: ("_has_reset",)}


def _game_state(game):
    """The base environment: its np_random (resets, and NoopReset's NOOP counts) and the game itself."""
    state = {"np_random": json.dumps(game.np_random.bit_generator.state)}
    if hasattr(game, "ale"):  # the whole emulator, including the ALE's own RNG
        state["ale"] = np.frombuffer(game.ale.cloneState(include_rng=True).serialize(), np.uint8)
    elif hasattr(game, "state"):  # classic control: the physical state
        state["state"] = np.asarray(game.state, np.float64)
        steps_beyond = getattr(game, "steps_beyond_terminated", None)
        state["steps_beyond_terminated"] = -1 if steps_beyond is None else steps_beyond
    else:
        raise UserError(f"cannot checkpoint the state of {type(game).__name__} (Atari and classic control only)")
    return state


def _set_game_state(game, state):
    game.np_random.bit_generator.state = json.loads(str(state["np_random"]))
    if hasattr(game, "ale"):
        import ale_py

        game.ale.restoreState(ale_py.ALEState(np.asarray(state["ale"], np.uint8).tobytes()))
    else:
        game.state = np.array(state["state"], np.float64)
        steps_beyond = int(state["steps_beyond_terminated"])
        game.steps_beyond_terminated = None if steps_beyond < 0 else steps_beyond


def _layers(env):
    """The wrapper chain from the outside in, ending with the base environment."""
    layers = [env]
    while layers[-1] is not layers[-1].unwrapped:
        layers.append(layers[-1].env)
    return layers


class Checkpointable(gym.Wrapper):
    """The outermost wrapper: `env_state` is the state of the whole chain below it, as a flat
    {"<depth>.<Class>/<field>": array} dict (a property, so vector envs reach it with get_attr/set_attr)."""

    @property
    def env_state(self):
        layers = _layers(self.env)
        state = {"layers": json.dumps([type(layer).__name__ for layer in layers])}
        for depth, layer in enumerate(layers):
            if layer is layer.unwrapped:
                fields = _game_state(layer)
            elif hasattr(layer, "get_state"):
                fields = layer.get_state()
            else:
                fields = {name: getattr(layer, name) for name in GYMNASIUM_WRAPPER_FIELDS.get(type(layer), ())}
            state.update({f"{depth}.{type(layer).__name__}/{name}": value for name, value in fields.items()})
        return state

    @env_state.setter
    def env_state(self, state):
        layers = _layers(self.env)
        names = [type(layer).__name__ for layer in layers]
        if json.loads(str(state["layers"])) != names:
            raise UserError(f"the saved environment has the wrappers {str(state['layers'])}, this one {names} "
                            f"(different settings?)")
        for depth, layer in enumerate(layers):
            prefix = f"{depth}.{type(layer).__name__}/"
            fields = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
            if layer is layer.unwrapped:
                _set_game_state(layer, fields)
            elif hasattr(layer, "set_state"):
                layer.set_state(fields)
            else:
                for name in GYMNASIUM_WRAPPER_FIELDS.get(type(layer), ()):
                    setattr(layer, name, np.asarray(fields[name]).item())


def vector_env_state(envs):
    """The state of every sub-environment as one flat dict of arrays ("env<i>/..." keys)."""
    state = {}
    # Same-step autoreset (make_vector_env) leaves no reset pending between steps; SyncVectorEnv
    # still keeps the flags (next-step autoreset uses them), so they are saved where they exist.
    if hasattr(envs, "_autoreset_envs"):
        state["autoreset"] = np.array(envs._autoreset_envs, bool)
    for i, env_state in enumerate(envs.get_attr("env_state")):
        state.update({f"env{i}/{key}": value for key, value in env_state.items()})
    return state


def set_vector_env_state(envs, state):
    per_env = [{} for _ in range(envs.num_envs)]
    for key, value in state.items():
        if key.startswith("env"):
            index, field = key[3:].split("/", 1)
            if int(index) >= envs.num_envs:
                raise UserError(f"the saved state has more environments than {envs.num_envs} (different settings?)")
            per_env[int(index)][field] = value
    if not all(per_env):
        raise UserError(f"the saved state has fewer environments than {envs.num_envs} (different settings?)")
    envs.set_attr("env_state", per_env)
    if "autoreset" in state and hasattr(envs, "_autoreset_envs"):
        envs._autoreset_envs = np.array(state["autoreset"], bool)


def make_env(env_id, *, training=True, seed=None, render=False, noop_max=30):
    """One environment, wrapped for DQN training (or evaluation when training=False)."""
    if is_atari(env_id):
        import ale_py

        gym.register_envs(ale_py)
    try:
        if is_atari(env_id):
            env = gym.make(env_id, frameskip=1, repeat_action_probability=0.0, obs_type="grayscale",
                           full_action_space=False, max_num_frames_per_episode=ATARI_MAX_FRAMES,
                           render_mode="rgb_array" if render else None)
        else:
            env = gym.make(env_id, render_mode="rgb_array" if render else None)
    except gym.error.Error as error:
        raise UserError(f"cannot make environment '{env_id}': {error}") from None
    if is_atari(env_id):
        env = NoopReset(env, noop_max)
        if env.unwrapped.get_action_meanings()[1:2] == ["FIRE"] and len(env.unwrapped.get_action_meanings()) >= 3:
            env = FireReset(env)
        env = MaxAndSkip(env, 4)
        env = EpisodeStats(env)
        if training:
            env = EpisodicLife(env)
        env = Resize84(env)
        if training:
            env = ClipReward(env)
    else:
        env = EpisodeStats(env)
    env = Checkpointable(env)
    if seed is not None:
        env.action_space.seed(seed)
    return env


def make_vector_env(env_id, num_envs, *, seed=0, training=True, asynchronous=False):
    """`num_envs` copies, autoreset in the same step (the final observation is in
    info['final_obs'], the returned one starts the next episode)."""
    fns = [lambda i=i: make_env(env_id, training=training, seed=seed + i) for i in range(num_envs)]
    cls = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
    return cls(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def observation_spec(env_id):
    """(frame shape, dtype, stack, number of actions) for the learner."""
    env = make_env(env_id)
    try:
        shape, dtype, actions = env.observation_space.shape, env.observation_space.dtype, env.action_space.n
    finally:
        env.close()
    return tuple(shape), np.dtype(dtype), (4 if is_atari(env_id) else 1), int(actions)


def render(env):
    """An RGB picture of the environment's current state: the ALE screen for Atari; for
    CartPole a drawing of the cart and pole (gymnasium's own renderer needs pygame)."""
    if hasattr(env.unwrapped, "ale"):
        return env.unwrapped.ale.getScreenRGB()
    state = getattr(env.unwrapped, "state", None)
    if state is None or len(state) != 4:
        raise UserError("rendering is supported for Atari games and CartPole")
    from PIL import ImageDraw

    width, height, scale = 300, 200, 300 / 4.8
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    x, _, theta, _ = (float(v) for v in state)
    cart_x, cart_y = width / 2 + x * scale, 150
    draw.line([(0, cart_y + 10), (width, cart_y + 10)], fill="black")
    draw.rectangle([cart_x - 25, cart_y - 10, cart_x + 25, cart_y + 10], fill="black")
    pole = 100
    draw.line([(cart_x, cart_y - 10), (cart_x + pole * np.sin(theta), cart_y - 10 - pole * np.cos(theta))],
              fill=(202, 152, 101), width=8)
    return np.asarray(image)
