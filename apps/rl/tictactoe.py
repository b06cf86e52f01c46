"""Tic-tac-toe: the rules, every reachable position, exact (minimax) values and two fixed opponents.

A board is 9 int8 cells, index 3·row + column, holding +1 (X), −1 (O) or 0; X moves first. The
search and the network see the *canonical* board: the stones of the player to move as +1, the
opponent's as −1. One value function then serves both sides, and a move is always "put a +1 on an
empty cell, then flip the signs" (`play`). The game is small enough to solve exactly: 5,478 reachable
positions, solved by negamax in a fraction of a second, which gives the learning curves a ground truth.
"""

import functools

import numpy as np

from core.errors import UserError

LINES = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8],   # rows
                  [0, 3, 6], [1, 4, 7], [2, 5, 8],   # columns
                  [0, 4, 8], [2, 4, 6]])             # diagonals


def _symmetries():
    """The 8 symmetries of the square as index permutations p: the transformed board is board[p]."""
    grid = np.arange(9).reshape(3, 3)
    out = []
    for turns in range(4):
        rotated = np.rot90(grid, turns)
        out += [rotated.ravel(), np.fliplr(rotated).ravel()]
    return np.array(out)


SYMMETRIES = _symmetries()  # a policy over the 9 cells transforms with the same permutation


# -- rules (absolute boards: +1 is X) -----------------------------------------------------------------

def empty_board():
    return np.zeros(9, np.int8)


def winner(board):
    """+1 when X has three in a line, −1 when O has, 0 otherwise."""
    sums = board[LINES].sum(axis=1)
    return 1 if np.any(sums == 3) else -1 if np.any(sums == -3) else 0


def side_to_move(board):
    """+1 (X) when both sides have as many stones, else −1 (O)."""
    return 1 if np.count_nonzero(board) % 2 == 0 else -1


def canonical(board):
    """The board as the player to move sees it (own stones +1)."""
    return (board * side_to_move(board)).astype(np.int8)


# -- the canonical game the search plays ------------------------------------------------------------------

def play(board, move):
    """Canonical board after the player to move puts a stone on `move`: the opponent is to move next."""
    after = board.copy()
    after[move] = 1
    return -after


def _terminal_value(board):
    if np.any(board[LINES].sum(axis=1) == -3):
        return -1.0
    if np.all(board != 0):
        return 0.0
    return None


_TERMINAL = {}  # key -> outcome: the search asks this millions of times, for only 5,478 positions


def terminal_value(board):
    """Outcome for the player to move on a canonical board: −1 when the opponent (who just moved)
    completed a line, 0 for a full board without one (a draw), None while the game goes on."""
    k = board.tobytes()
    if k not in _TERMINAL:
        _TERMINAL[k] = _terminal_value(board)
    return _TERMINAL[k]


def legal_moves(board):
    return np.flatnonzero(board == 0)


def key(board):
    return board.astype(np.int8).tobytes()


@functools.cache
def _negamax(board_bytes):
    board = np.frombuffer(board_bytes, np.int8)
    value = terminal_value(board)
    if value is not None:
        return value
    return max(-_negamax(key(play(board, move))) for move in legal_moves(board))


def exact_value(board):
    """The minimax value of a canonical board for the player to move: +1 win, 0 draw, −1 loss."""
    return _negamax(key(board))


def optimal_moves(board):
    """The moves that keep the minimax value."""
    best = exact_value(board)
    return [int(m) for m in legal_moves(board) if -exact_value(play(board, m)) == best]


@functools.cache
def _all_positions():
    seen, frontier = {key(empty_board()): empty_board()}, [empty_board()]
    while frontier:
        board = frontier.pop()
        if terminal_value(board) is not None:
            continue
        for move in legal_moves(board):
            child = play(board, move)
            if key(child) not in seen:
                seen[key(child)] = child
                frontier.append(child)
    return tuple(seen.values())


def positions(terminal=False):
    """Every canonical board reachable from the empty board (non-terminal ones unless `terminal`), as an
    (n, 9) int8 array. A canonical board fixes the side to move by its stone counts, so these are the
    game's 5,478 positions (4,520 of them non-terminal)."""
    boards = [b for b in _all_positions() if (terminal_value(b) is not None) == terminal]
    return np.array(boards, np.int8)


# -- opponents: functions (canonical board, rng) -> move ---------------------------------------------------

def random_player(board, rng):
    return int(rng.choice(legal_moves(board)))


def _completing_moves(board, stone):
    """Empty cells that would give `stone` (+1 or −1) three in a line."""
    moves = set()
    for line in LINES:
        cells = board[line]
        if np.count_nonzero(cells == stone) == 2 and np.count_nonzero(cells == 0) == 1:
            moves.add(int(line[cells == 0][0]))
    return sorted(moves)


def greedy_player(board, rng):
    """One ply of look-ahead: win now if possible, else block the opponent's immediate win, else random."""
    for stone in (1, -1):
        moves = _completing_moves(board, stone)
        if moves:
            return int(rng.choice(moves))
    return random_player(board, rng)


def play_game(first, second, rng, board=None):
    """One game between two players; returns (+1 first wins, −1 second wins, 0 draw; moves in order)."""
    board = empty_board() if board is None else board.copy()
    players, moves, turn = (first, second), [], 0
    while terminal_value(board) is None:
        move = players[turn % 2](board, rng)
        if board[move] != 0:
            raise ValueError(f"illegal move {move} on {board.tolist()}")
        moves.append(int(move))
        board = play(board, move)
        turn += 1
    # the side to move on the final board lost (or drew); turn % 2 is its index
    return (0 if terminal_value(board) == 0 else (1 if turn % 2 == 1 else -1)), moves


def match(player, opponent, games, rng):
    """`games` games with `player` first and `games` with it second: {side: (wins, draws, losses)}."""
    table = {}
    for side in ("first", "second"):
        outcomes = []
        for _ in range(games):
            if side == "first":
                result, _ = play_game(player, opponent, rng)
            else:
                result, _ = play_game(opponent, player, rng)
                result = -result
            outcomes.append(result)
        outcomes = np.array(outcomes)
        table[side] = (int((outcomes == 1).sum()), int((outcomes == 0).sum()), int((outcomes == -1).sum()))
    return table


def show(board, absolute=False, numbers=False):
    """Text picture of a board (canonical boards drawn with the player to move as X, unless `absolute`)."""
    marks = {1: "X", -1: "O"}
    if not absolute:
        board = board * (1 if np.count_nonzero(board) % 2 == 0 else -1)  # back to X = +1
    cells = [marks.get(int(v), str(i + 1) if numbers else ".") for i, v in enumerate(board)]
    return "\n".join(" ".join(cells[3 * r:3 * r + 3]) for r in range(3))


def parse_move(text, board):
    """A human's move '1'..'9' (row by row) as a cell index; a UserError says what is wrong."""
    text = text.strip()
    if not (text.isdigit() and 1 <= int(text) <= 9):
        raise UserError(f"'{text}' is not a cell: type a number from 1 to 9 (row by row)")
    if board[int(text) - 1] != 0:
        raise UserError(f"cell {text} is taken")
    return int(text) - 1
