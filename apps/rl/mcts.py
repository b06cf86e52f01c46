"""Monte-Carlo tree search with PUCT, the search of AlphaGo Zero / AlphaZero, on tic-tac-toe.

Every node holds, per move a, a prior P(a) from the evaluator, a visit count n(a) and the sum W(a) of
the values backed up through it (from the point of view of the player to move at the node). One
simulation:

  select    from the root down, a = argmax Q(a) + c·P(a)·sqrt(N)/(1 + n(a)),  Q = W/n (0 when n = 0),
            N = Σ n (taken as 1 at a fresh node, so its first choice follows the prior);
  expand    at the first position not in the tree, ask the evaluator for (priors, value v);
            a finished game's value is exact (−1: the player to move has lost, 0: draw);
  back up   walk the path back, flipping the sign at every level (a position good for one player is
            bad for the other): W(a) += −v at the parent, +v at the grandparent, ...

After the simulations the visit counts are the search's policy: their argmax is the move to play, and
n/Σn is the training target of the policy head (sharper than the priors it started from).

An evaluator is a function canonical board -> (priors over the 9 cells, value for the player to move):
`rollout_evaluator` is plain MCTS (uniform priors, the value of one random playout);
`TableEvaluator` wraps a policy-value network (Keras, SavedModel or TFLite).
"""

import math

import numpy as np

from apps.rl import tictactoe


class Node:
    """Statistics of the moves from one (canonical) position."""

    __slots__ = ("board", "legal", "prior", "visits", "total", "value_sum", "q", "children")

    def __init__(self, board, prior):
        self.board = board
        self.legal = board == 0
        prior = np.where(self.legal, np.maximum(prior, 0.0), 0.0)
        total = prior.sum()
        self.prior = prior / total if total > 0 else self.legal / self.legal.sum()
        self.visits = np.zeros(9)
        self.total = 0  # Σ n
        self.value_sum = np.zeros(9)
        self.q = np.where(self.legal, 0.0, -np.inf)  # W/n (0 unvisited); −inf keeps occupied cells out
        self.children = {}

    def backup(self, move, value):
        self.visits[move] += 1
        self.total += 1
        self.value_sum[move] += value
        self.q[move] = self.value_sum[move] / self.visits[move]

    def select(self, c_puct, rng):
        """The PUCT move; ties (common at a fresh node with uniform priors) broken at random."""
        score = self.q + (c_puct * math.sqrt(max(self.total, 1))) * self.prior / (1.0 + self.visits)
        best = np.flatnonzero(score == score.max())
        return int(best[0] if len(best) == 1 else rng.choice(best))


def add_dirichlet_noise(node, rng, alpha=0.5, fraction=0.25):
    """Self-play exploration at the root: P ← (1 − ε)P + ε·Dir(α) over the legal moves."""
    legal = np.flatnonzero(node.legal)
    noise = np.zeros(9)
    noise[legal] = rng.dirichlet([alpha] * len(legal))
    node.prior = (1 - fraction) * node.prior + fraction * noise


def simulate(root, evaluate, c_puct, rng):
    """One simulation: select down to a new or finished position, evaluate it, back up its value."""
    node, path = root, []
    while True:
        move = node.select(c_puct, rng)
        path.append((node, move))
        child_board = tictactoe.play(node.board, move)
        value = tictactoe.terminal_value(child_board)
        if value is not None:  # the game is over: the exact value, nothing to expand
            break
        child = node.children.get(move)
        if child is None:  # expand with the evaluator's priors; its value is the leaf's estimate
            prior, value = evaluate(child_board)
            node.children[move] = Node(child_board, prior)
            break
        node = child
    for node, move in reversed(path):
        value = -value  # the value of the position after `move` is the negative of it for the mover
        node.backup(move, value)


def search(board, evaluate, simulations, c_puct=1.5, rng=None, noise=False):
    """Run `simulations` simulations from `board` (canonical, game not over); returns the root node."""
    rng = rng if rng is not None else np.random.default_rng()
    prior, _ = evaluate(board)
    root = Node(board, prior)
    if noise:
        add_dirichlet_noise(root, rng)
    for _ in range(simulations):
        simulate(root, evaluate, c_puct, rng)
    return root


def best_move(root, rng):
    """The most visited move (ties at random)."""
    best = np.flatnonzero(root.visits == root.visits.max())
    return int(best[0] if len(best) == 1 else rng.choice(best))


def mcts_player(evaluate, simulations, c_puct=1.5):
    """A player (canonical board, rng) -> move that searches and plays the most visited move."""
    def player(board, rng):
        return best_move(search(board, evaluate, simulations, c_puct, rng), rng)
    return player


def policy_player(evaluate):
    """The network alone, no search: the legal move with the highest prior."""
    def player(board, rng):
        prior = np.where(board == 0, evaluate(board)[0], -np.inf)
        best = np.flatnonzero(prior == prior.max())
        return int(rng.choice(best))
    return player


# -- evaluators -----------------------------------------------------------------------------------------

def rollout_evaluator(rng):
    """Plain MCTS: uniform priors, and the outcome of one random playout for the player to move."""
    uniform = np.full(9, 1.0 / 9)

    def evaluate(board):
        # the empty cells in random order are a uniformly random playout: play them until the game ends
        sign, current = 1.0, board
        for move in rng.permutation(tictactoe.legal_moves(board)):
            current = tictactoe.play(current, move)
            sign = -sign
            value = tictactoe.terminal_value(current)
            if value is not None:
                return uniform, sign * value
        return uniform, 0.0  # only reached for a board already over (the search never asks for one)
    return evaluate


class TableEvaluator:
    """A policy-value network as an evaluator: `predict(boards float32 (n, 9)) -> (policy (n, 9), value (n,))`.

    Tic-tac-toe has only 4,520 non-terminal positions, so with `precompute` the network runs once, in
    one batch, on all of them and the search looks its answers up (thousands of times faster than a
    network call per leaf; rebuild the table after every training round). Without it each new position
    costs one call, cached.
    """

    def __init__(self, predict, precompute=True):
        self.predict = predict
        self.table = {}
        if precompute:
            boards = tictactoe.positions()
            policy, value = predict(boards.astype(np.float32))
            for board, p, v in zip(boards, np.asarray(policy), np.asarray(value).reshape(-1)):
                self.table[tictactoe.key(board)] = (p, float(v))

    def __call__(self, board):
        k = tictactoe.key(board)
        if k not in self.table:
            policy, value = self.predict(board[None].astype(np.float32))
            self.table[k] = (np.asarray(policy)[0], float(np.asarray(value).reshape(-1)[0]))
        return self.table[k]
