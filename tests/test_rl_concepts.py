"""apps.rl, the rest of the lecture notes: contextual bandits (LinUCB against context-free UCB) and Monte-Carlo
tree search with a policy-value network on tic-tac-toe (AlphaZero in miniature)."""

import functools
import os

import numpy as np
import pytest

from apps.rl import contextual, mcts, tictactoe

EPS64 = float(np.finfo(np.float64).eps)


# --- contextual bandits ------------------------------------------------------------------------------------

def test_linucb_models_equal_the_ridge_regression_closed_form():
    from sklearn.linear_model import Ridge

    steps = 300
    result = contextual.simulate("linucb", "linear", steps=steps, runs=3, seed=0, record=True, alpha=0.5)
    models = result["models"]
    dim = result["contexts"].shape[-1]
    for run in range(3):
        for arm in range(models.theta.shape[1]):
            pulled = result["arms"][run] == arm
            x, r = result["contexts"][run][pulled], result["rewards"][run][pulled]
            assert len(r) >= 5  # every arm was tried: the check is about data, not the prior I
            a = np.eye(dim) + x.T @ x  # A_a = I + Σ x xᵀ
            a_inv, theta = np.linalg.inv(a), np.linalg.solve(a, x.T @ r)  # θ_a = A_a⁻¹ Σ r x
            # Each Sherman–Morrison step rounds at a few eps relative to |A⁻¹|, amplified by at most κ(A); the
            # errors of n steps add up. 10·n·eps·κ·|A⁻¹|: still ~1e-10 here, against O(1) for a wrong update.
            kappa, norm = np.linalg.cond(a), np.linalg.norm(a_inv, 2)
            atol = 10 * len(r) * EPS64 * kappa * norm
            np.testing.assert_allclose(models.a_inv[run, arm], a_inv, rtol=0, atol=atol)
            np.testing.assert_allclose(models.theta[run, arm], theta, rtol=0,
                                       atol=2 * atol * np.linalg.norm(x.T @ r) + 1e-12)
            # the same as scikit-learn's ridge regression with λ = 1 and no separate intercept
            ridge = Ridge(alpha=1.0, fit_intercept=False, solver="cholesky").fit(x, r)
            np.testing.assert_allclose(models.theta[run, arm], ridge.coef_, rtol=0, atol=1e-8)


def test_linucb_regret_is_far_below_context_free_ucb_whose_regret_is_linear():
    for seed in (0, 1, 2):
        lin = contextual.simulate("linucb", "linear", steps=400, runs=20, seed=seed, alpha=0.5)["cumulative_regret"]
        ucb = contextual.simulate("ucb", "linear", steps=400, runs=20, seed=seed, c=2.0)["cumulative_regret"]
        assert lin[-1] < 0.35 * ucb[-1], (seed, lin[-1], ucb[-1])  # measured 0.22-0.26
        # regret added in steps 200-400 against steps 0-200: ~the same for UCB (linear in T), a fraction for LinUCB
        assert ucb[-1] - ucb[199] > 0.7 * ucb[199], seed  # measured 0.81-0.91
        assert lin[-1] - lin[199] < 0.45 * lin[199], seed  # measured 0.23-0.29
    # digits as a bandit: LinUCB learns a linear classifier from right/wrong feedback alone; without the
    # context the best one can do is the most common class (~10 %)
    lin = contextual.simulate("linucb", "digits", steps=300, runs=4, seed=0, alpha=0.5)
    ucb = contextual.simulate("ucb", "digits", steps=300, runs=4, seed=0, c=2.0)
    assert lin["optimal_fraction"][-100:].mean() > 0.6 and ucb["optimal_fraction"][-100:].mean() < 0.25


def test_contextual_command_prints_the_table_and_writes_the_png(tmp_path, capsys):
    from apps.rl.__main__ import main

    main(["contextual", "--steps", "120", "--runs", "3", "--run", str(tmp_path)])
    printed = capsys.readouterr().out
    png = os.path.join(tmp_path, "contextual.png")
    assert f"PNG: {png}" in printed and os.path.getsize(png) > 20_000
    for name in ("LinUCB α=0.5", "contextual ε-greedy ε=0.1", "UCB c=2.0 (no context)", "linear:", "digits:"):
        assert name in printed


# --- tic-tac-toe rules ------------------------------------------------------------------------------------

def _winner_by_rows_columns_diagonals(board):
    """An independent statement of the rule: three equal stones in a row, a column or a diagonal."""
    grid = board.reshape(3, 3)
    lines = list(grid) + list(grid.T) + [np.diag(grid), np.diag(np.fliplr(grid))]
    for stone in (1, -1):
        if any(np.all(line == stone) for line in lines):
            return stone
    return 0


def test_tictactoe_rules_are_exact():
    every_board = np.array(np.meshgrid(*[[-1, 0, 1]] * 9, indexing="ij"), np.int8).reshape(9, -1).T
    for board in every_board[::7]:  # 2,812 of the 3⁹ boards, all kinds of lines and non-lines
        assert tictactoe.winner(board) == _winner_by_rows_columns_diagonals(board), board
    for line in tictactoe.LINES:
        for stone in (1, -1):
            board = tictactoe.empty_board()
            board[line] = stone
            assert tictactoe.winner(board) == stone
    draw = np.array([1, -1, 1, 1, -1, -1, -1, 1, 1], np.int8)
    assert tictactoe.winner(draw) == 0 and tictactoe.terminal_value(tictactoe.canonical(draw)) == 0

    @functools.cache
    def games(board_bytes):  # (wins, losses, draws) of the player to move, over every possible game
        board = np.frombuffer(board_bytes, np.int8)
        value = tictactoe.terminal_value(board)
        if value is not None:
            return (0, 1, 0) if value == -1 else (0, 0, 1)
        totals = np.zeros(3, np.int64)
        for move in tictactoe.legal_moves(board):
            wins, losses, draws = games(tictactoe.key(tictactoe.play(board, move)))
            totals += (losses, wins, draws)  # the opponent's loss is the mover's win
        return tuple(int(t) for t in totals)

    # the known totals: 255,168 games, X wins 131,184, O wins 77,904, 46,080 draws; 5,478 positions, 958 final
    assert games(tictactoe.key(tictactoe.empty_board())) == (131_184, 77_904, 46_080)
    assert len(tictactoe.positions()) == 4_520 and len(tictactoe.positions(terminal=True)) == 958
    assert tictactoe.exact_value(tictactoe.empty_board()) == 0  # perfect play draws
    # play_game's result is from the first player's side: X completes the top row on move 5
    script = iter([0, 3, 1, 4, 2])
    result, moves = tictactoe.play_game(lambda b, r: next(script), lambda b, r: next(script), None)
    assert result == 1 and moves == [0, 3, 1, 4, 2]


# --- Monte-Carlo tree search --------------------------------------------------------------------------------

def test_pure_mcts_takes_the_win_and_makes_the_necessary_block():
    from apps.rl.alphazero import MUST_BLOCK, WIN_OR_BLOCK

    for seed in (0, 1, 2):
        rng = np.random.default_rng(seed)
        evaluate = mcts.rollout_evaluator(rng)
        # X to move: winning at cell 2 beats blocking O's threat at 5
        root = mcts.search(tictactoe.canonical(WIN_OR_BLOCK), evaluate, 200, rng=rng)
        assert mcts.best_move(root, rng) == 2 and root.q[2] == 1.0  # an exact, terminal value
        # O to move, no win of its own: only cell 2 stops X
        root = mcts.search(tictactoe.canonical(MUST_BLOCK), evaluate, 200, rng=rng)
        assert mcts.best_move(root, rng) == 2
        assert root.q[2] > root.q[np.arange(9) != 2].max()


def test_pure_mcts_never_loses_to_the_random_player():
    rng = np.random.default_rng(0)
    # 400 simulations: with fewer, random rollouts can rate the opposite corner as well as the centre after
    # X opens in a corner, a 5-ply trap (200 simulations lost 1 game of 40 as O here; 400 lost none of 80)
    player = mcts.mcts_player(mcts.rollout_evaluator(rng), 400)
    table = tictactoe.match(player, tictactoe.random_player, 6, rng)
    assert table["first"][2] == 0 and table["second"][2] == 0, table
    assert table["first"][0] >= 5, table  # and it wins, as X, almost always


# --- AlphaZero in miniature: self-play training, export, the CLI ---------------------------------------------

def _one_move_from_the_end(boards):
    """Masks of positions one move from a decided end: the player to move can complete a line (won), or
    cannot and the opponent has two different cells that complete one of theirs (lost)."""
    own = np.array([len(tictactoe._completing_moves(b, 1)) for b in boards])
    theirs = np.array([len(tictactoe._completing_moves(b, -1)) for b in boards])
    return own > 0, (own == 0) & (theirs >= 2)


# X at 0, 4 and O at 1, 2, X to move: X wins at 8. X at 0, 4, 6 and O at 1, 5, O to move: X threatens 2, 3 and 8.
WON = np.array([1, -1, -1, 0, 1, 0, 0, 0, 0], np.int8)
LOST = np.array([1, -1, 0, 0, 1, -1, 1, 0, 0], np.int8)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from apps.rl import alphazero
    from apps.rl.config import MCTS_SMALL, MCTSConfig

    out = str(tmp_path_factory.mktemp("mcts_run"))
    model, history = alphazero.train(MCTSConfig(**MCTS_SMALL), run=out, log=lambda *args: None)
    return out, model, history


def test_short_self_play_training_learns_values_of_the_right_sign_and_beats_random(trained_run):
    from apps.rl import alphazero

    out, model, history = trained_run
    predict = alphazero.keras_predict(model)
    _, value = predict(np.stack([tictactoe.canonical(WON), tictactoe.canonical(LOST)]).astype(np.float32))
    assert value[0] > 0 > value[1], value  # measured 0.74-0.83 and −0.54 to −0.95 over training seeds 0-3
    # positions of fresh self-play games one move from the end: the value knows who wins
    rng = np.random.default_rng(123)
    evaluate = mcts.TableEvaluator(predict)
    games = [alphazero.self_play_game(evaluate, 25, rng) for _ in range(40)]
    boards = np.unique(np.concatenate([game[0] for game in games]), axis=0)
    won, lost = _one_move_from_the_end(boards)
    _, value = predict(boards.astype(np.float32))
    assert won.sum() >= 3 and lost.sum() >= 3
    assert (value[won] > 0).mean() >= 0.9 and (value[lost] < 0).mean() >= 0.9  # measured: all of them
    # over every such position of the game (most never met in self-play), against the untrained net: the
    # mean of the two right-sign shares, 0.5 for a net that knows nothing whatever its bias
    boards = tictactoe.positions()
    won, lost = _one_move_from_the_end(boards)
    balanced = {}
    for name, net in (("untrained", alphazero.build_network()), ("trained", model)):
        _, value = alphazero.keras_predict(net)(boards.astype(np.float32))
        balanced[name] = ((value[won] > 0).mean() + (value[lost] < 0).mean()) / 2
    assert balanced["trained"] > 0.68 and balanced["untrained"] < 0.62, balanced
    # the raw policy against the solved game: its favourite move is optimal far more often than at the start
    assert history[-1]["optimal_move_share"] > history[0]["optimal_move_share"] + 0.3, history
    # MCTS + net against the random player, 10 games on each side
    table = tictactoe.match(mcts.mcts_player(evaluate, 25), tictactoe.random_player, 10, np.random.default_rng(0))
    assert table["first"][2] + table["second"][2] == 0, table
    assert table["first"][0] + table["second"][0] >= 16, table  # measured 19-20 over training seeds 0-3


def test_policy_value_net_export_parity_and_the_mcts_commands(trained_run, tmp_path, capsys, monkeypatch):
    import io

    from apps.rl import alphazero
    from apps.rl.__main__ import main
    from core import export
    from core.errors import UserError

    out, model, _ = trained_run
    export_dir = str(tmp_path / "export")
    report = alphazero.export(out, export_dir=export_dir, log=lambda *args: None)
    boards = tictactoe.positions().astype(np.float32)
    policy, value = model(boards, training=False)
    served = export.run_saved_model(report["saved_model"], {"board": boards})
    # the same float32 graph: a softmax/tanh of sums of ≤ 64 products, rounding ~64·eps relative to outputs ≤ 1
    tolerance = 64 * 4 * float(np.finfo(np.float32).eps)
    np.testing.assert_allclose(served["policy"], policy.numpy(), rtol=0, atol=tolerance)
    np.testing.assert_allclose(served["value"], value.numpy(), rtol=0, atol=tolerance)
    assert report["max_abs_diff"]["float"] <= export.TOLERANCES["float"]
    assert report["parity"]["float"]["same_best_move"] > 0.999
    assert report["parity"]["dynamic"]["same_best_move"] > 0.9
    assert os.path.isfile(report["tflite"]["int8"]) and report["max_abs_diff"]["int8"] <= export.TOLERANCES["int8"]
    assert report["parity"]["int8"]["same_best_move"] > 0.8  # reported by the export, not enforced

    capsys.readouterr()
    main(["play", "--task", "mcts", "--run", str(tmp_path), "--export-dir", export_dir, "--opponent", "random",
          "--games", "2", "--simulations", "10"])
    printed = capsys.readouterr().out
    assert printed.count("moves (cells 1-9)") == 2 and "random wins" not in printed
    monkeypatch.setattr("sys.stdin", io.StringIO("x\n1\n2\n3\n4\n5\n6\n7\n8\n9\n"))  # a human, typing
    main(["play", "--task", "mcts", "--run", str(tmp_path), "--export-dir", export_dir, "--simulations", "25"])
    printed = capsys.readouterr().out
    assert "'x' is not a cell" in printed and "human wins" not in printed and "moves (cells 1-9)" in printed

    main(["evaluate", "--task", "mcts", "--run", out, "--games", "2", "--simulations", "10"])
    printed = capsys.readouterr().out
    png = os.path.join(out, "visit_counts.png")
    assert f"PNG: {png}" in printed and os.path.getsize(png) > 20_000 and "one-ply greedy" in printed
    with pytest.raises(UserError, match="--games must be at least 1"):
        main(["train", "--task", "mcts", "--games", "0", "--run", str(tmp_path / "no")])
    with pytest.raises(UserError, match="not the config of a 'train --task mcts' run"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "config.json").write_text('{"app": "classify"}')
        alphazero.load_run(str(tmp_path / "other"))
