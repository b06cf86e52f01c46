"""AlphaZero in miniature: a policy-value network trained by MCTS self-play on tic-tac-toe.

The loop of AlphaGo Zero (Silver et al. 2017), at the size of a 3x3 board:

  1. self-play: both sides search with MCTS guided by the current network (`apps.rl.mcts`, Dirichlet
     noise at the root); every position is stored with the search's visit distribution π, and when
     the game ends with its outcome z (+1 / 0 / −1 for the player who was to move there);
  2. training: the network f(s) = (p, v) — a softmax over the 9 cells and a tanh value — fits
     p to π (cross-entropy) and v to z (squared error), on the last few rounds' positions and their
     8 symmetric copies;
  3. repeat with the new network: a better network gives a better search, whose visit counts are
     better targets.

The board is 9 floats as the player to move sees it (own stones +1, opponent's −1, empty 0). The
learning curve is measured against the exact game: over all 4,520 non-terminal positions, the share
where the network's favourite move is a minimax-optimal one (counted where some move is a mistake),
and the squared error of its value against the minimax value.
"""

import csv
import os
import time

import numpy as np

from apps.rl import mcts, tictactoe
from core.errors import UserError


def build_network(hidden=64, l2=1e-4):
    """Board (9 floats) -> policy (softmax over the 9 cells), value (tanh): two hidden ReLU layers."""
    import keras

    regularizer = keras.regularizers.L2(l2)
    board = keras.Input((9,), name="board")
    x = keras.layers.Dense(hidden, activation="relu", kernel_regularizer=regularizer)(board)
    x = keras.layers.Dense(hidden, activation="relu", kernel_regularizer=regularizer)(x)
    policy = keras.layers.Dense(9, activation="softmax", kernel_regularizer=regularizer, name="policy")(x)
    value = keras.layers.Dense(1, activation="tanh", kernel_regularizer=regularizer, name="value")(x)
    return keras.Model(board, [policy, value], name="policy_value")


def compile_network(model, learning_rate):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss={"policy": keras.losses.CategoricalCrossentropy(), "value": keras.losses.MeanSquaredError()})
    return model


def keras_predict(model):
    """predict(boards) -> (policy, value) for a `TableEvaluator`: one direct call per batch."""
    def predict(boards):
        policy, value = model(boards, training=False)
        return policy.numpy(), value.numpy()[:, 0]
    return predict


# -- self-play ------------------------------------------------------------------------------------------

def self_play_game(evaluate, simulations, rng, c_puct=1.5, explore_moves=3):
    """One game, both sides searching. The first `explore_moves` moves are drawn from the visit
    distribution (variety of openings), later ones are the most visited. Returns (boards, π, z)."""
    board, boards, targets = tictactoe.empty_board(), [], []
    while tictactoe.terminal_value(board) is None:
        root = mcts.search(board, evaluate, simulations, c_puct, rng, noise=True)
        pi = root.visits / root.visits.sum()
        boards.append(board)
        targets.append(pi)
        move = int(rng.choice(9, p=pi)) if len(boards) <= explore_moves else mcts.best_move(root, rng)
        board = tictactoe.play(board, move)
    # the final board's outcome is for its player to move; the sides alternate going back
    final = tictactoe.terminal_value(board)
    outcomes = [final * (-1) ** (len(boards) - i) for i in range(len(boards))]
    return np.array(boards), np.array(targets), np.array(outcomes, np.float32)


def with_symmetries(boards, targets, outcomes):
    """The 8 rotations and reflections of every example (the game does not change under them)."""
    return (np.concatenate([boards[:, p] for p in tictactoe.SYMMETRIES]),
            np.concatenate([targets[:, p] for p in tictactoe.SYMMETRIES]),
            np.tile(outcomes, len(tictactoe.SYMMETRIES)))


# -- the exact game as a yardstick ----------------------------------------------------------------------

def exact_tables():
    """All non-terminal positions with their minimax values and optimal-move masks (computed once)."""
    boards = tictactoe.positions()
    values = np.array([tictactoe.exact_value(b) for b in boards], np.float32)
    optimal = np.zeros((len(boards), 9), bool)
    for i, board in enumerate(boards):
        optimal[i, tictactoe.optimal_moves(board)] = True
    decisive = optimal.sum(axis=1) < (boards == 0).sum(axis=1)  # some legal move is a mistake
    return {"boards": boards, "values": values, "optimal": optimal, "decisive": decisive}


def against_exact(predict, exact):
    """(share of decisive positions whose highest-prior legal move is optimal, value MSE vs minimax)."""
    policy, value = predict(exact["boards"].astype(np.float32))
    choice = np.argmax(np.where(exact["boards"] == 0, policy, -1.0), axis=1)
    right = exact["optimal"][np.arange(len(choice)), choice]
    return float(right[exact["decisive"]].mean()), float(np.mean((value - exact["values"]) ** 2))


# -- training -------------------------------------------------------------------------------------------

def train(config, *, run, strategy="auto", log=print):
    """Self-play and training rounds with `config` (an MCTSConfig); writes config.json, model.keras, history.csv
    and learning_curve.png in the run folder `run`. Returns (model, history rows).

    Under a MirroredStrategy the network's variables are mirrored and each `fit` splits its batch over the
    replicas (gradients summed: the same step as one device); self-play calls the network in cross-replica
    context."""
    import keras

    from core import distribute, training
    from core.cli import config_dict, run_config

    strategy = distribute.get_strategy(strategy)  # first: before any other TF work
    training.save_config(run, run_config(config, "rl", task="mcts", input_shape=[9],
                                         replicas=strategy.num_replicas_in_sync), identity_keys=("task",))
    config = config_dict(config)
    keras.utils.set_random_seed(config["seed"])
    rng = np.random.default_rng(config["seed"])
    with strategy.scope():
        model = compile_network(build_network(config["hidden"], config["l2"]), config["learning_rate"])
    exact = exact_tables()
    predict = keras_predict(model)
    optimal_share, value_mse = against_exact(predict, exact)
    history = [dict(iteration=0, games=0, examples=0, policy_loss=np.nan, value_loss=np.nan,
                    optimal_move_share=optimal_share, value_mse=value_mse, seconds=0.0)]
    log(f"untrained net: optimal move in {optimal_share:.1%} of decisive positions, value MSE {value_mse:.3f}")
    rounds, start = [], time.time()
    for iteration in range(1, config["iterations"] + 1):
        evaluate = mcts.TableEvaluator(predict)  # the current network, on every position at once
        games = [self_play_game(evaluate, config["simulations"], rng, config["c_puct"], config["explore_moves"])
                 for _ in range(config["games"])]
        rounds = (rounds + [tuple(np.concatenate(part) for part in zip(*games))])[-config["window"]:]
        boards, targets, outcomes = with_symmetries(*(np.concatenate(part) for part in zip(*rounds)))
        fit = model.fit(boards.astype(np.float32), {"policy": targets.astype(np.float32), "value": outcomes},
                        batch_size=config["batch_size"], epochs=config["epochs"], shuffle=True, verbose=0)
        optimal_share, value_mse = against_exact(predict, exact)
        row = dict(iteration=iteration, games=iteration * config["games"], examples=len(boards),
                   policy_loss=fit.history["policy_loss"][-1], value_loss=fit.history["value_loss"][-1],
                   optimal_move_share=optimal_share, value_mse=value_mse, seconds=time.time() - start)
        history.append(row)
        log(f"round {iteration}/{config['iterations']}: {row['games']} games, {len(boards)} examples; "
            f"policy loss {row['policy_loss']:.3f}, value loss {row['value_loss']:.3f}; optimal move "
            f"{optimal_share:.1%}, value MSE {value_mse:.3f} ({row['seconds']:.0f} s)")
    model.save(os.path.join(run, training.MODEL_FILE))
    with open(os.path.join(run, "history.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    plot_learning_curve(history, os.path.join(run, "learning_curve.png"))
    return model, history


def plot_learning_curve(history, png):
    import matplotlib.pyplot as plt

    from core import plots

    games = [row["games"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(games[1:], [row["policy_loss"] for row in history[1:]], "o-", label="policy loss (cross-entropy)")
    left.plot(games[1:], [row["value_loss"] for row in history[1:]], "s-", label="value loss (MSE vs outcome)")
    left.set_xlabel("self-play games")
    left.set_title("training losses (last epoch of each round)", fontsize=10)
    right.plot(games, [100 * row["optimal_move_share"] for row in history], "o-", color="C2",
               label="net's move is optimal (% of decisive positions)")
    twin = right.twinx()
    twin.plot(games, [row["value_mse"] for row in history], "s--", color="C3", label="value MSE vs minimax")
    right.set_xlabel("self-play games")
    right.set_ylabel("% optimal")
    twin.set_ylabel("value MSE")
    right.set_title("the raw network against the solved game (4,520 positions)", fontsize=10)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    right.legend(handles=right.get_lines() + twin.get_lines(), fontsize=8, loc="center right")
    return plots.save_figure(fig, png)


# -- evaluation -----------------------------------------------------------------------------------------

# Fixed positions for the visit-count figure and the tests (absolute boards, X = +1; canonical() turns
# them to the mover's view): X to move can win at 2 while O threatens 5; O to move must block X at 2.
WIN_OR_BLOCK = np.array([1, 1, 0, -1, -1, 0, 0, 0, 0], np.int8)
MUST_BLOCK = np.array([1, 1, 0, 0, -1, 0, 0, 0, 0], np.int8)


def load_run(out):
    """(config, model) of a training run folder; a damaged or foreign one is a one-line UserError."""
    from core import training

    config = training.load_config(out)
    if config.get("task") != "mcts":
        raise UserError(f"{config.path} is not the config of a 'train --task mcts' run (task: {config.get('task')}); "
                        f"pass the right --run")
    model = training.load_trained_model(out, input_shape=(9,))
    if len(model.outputs) != 2:
        raise UserError(f"{os.path.join(out, training.MODEL_FILE)} is not a policy-value network (2 outputs)")
    return config, model


def evaluate(out, games=100, simulations=None, seed=0, log=print):
    """MCTS + net, the net alone and plain MCTS against the random and the one-ply greedy player,
    `games` games on each side. Writes evaluation.json and visit_counts.png in `out`; returns the rows."""
    import json

    config, model = load_run(out)
    simulations = simulations or config["simulations"]
    rng = np.random.default_rng(seed)
    evaluate_net = mcts.TableEvaluator(keras_predict(model))
    players = {f"MCTS + net ({simulations} sims)": mcts.mcts_player(evaluate_net, simulations, config["c_puct"]),
               "net alone (highest prior)": mcts.policy_player(evaluate_net),
               f"plain MCTS ({simulations} sims, random rollouts)":
                   mcts.mcts_player(mcts.rollout_evaluator(rng), simulations, config["c_puct"])}
    opponents = {"random": tictactoe.random_player, "one-ply greedy": tictactoe.greedy_player}
    rows = []
    for name, player in players.items():
        for opponent_name, opponent in opponents.items():
            result = tictactoe.match(player, opponent, games, rng)
            rows.append(dict(player=name, opponent=opponent_name, first=result["first"], second=result["second"]))
    log(f"{'player':44s} {'opponent':15s} {'as X (first): W/D/L':>20s} {'as O (second): W/D/L':>21s}")
    for row in rows:
        first, second = ("/".join(str(n) for n in row[side]) for side in ("first", "second"))
        log(f"{row['player']:44s} {row['opponent']:15s} {first:>20s} {second:>21s}")
    with open(os.path.join(out, "evaluation.json"), "w") as f:
        json.dump(dict(games_per_side=games, simulations=simulations, rows=rows), f, indent=2)
    from core import results

    def score(row):  # wins + half the draws, both sides
        (w1, d1, _), (w2, d2, _) = row["first"], row["second"]
        return (w1 + w2 + 0.5 * (d1 + d2)) / (2 * games)

    ours = {r["opponent"]: score(r) for r in rows if r["player"].startswith("MCTS + net")}
    plain = {r["opponent"]: score(r) for r in rows if r["player"].startswith("plain MCTS")}
    results.write_results(out, app="rl", model="mcts", dataset="tic-tac-toe", split=f"{2 * games} games per opponent",
                          metrics={f"score_vs_{k.replace(' ', '_')}": v for k, v in ours.items()},
                          baselines={f"plain_mcts_score_vs_{k.replace(' ', '_')}": v for k, v in plain.items()},
                          budget=results.budget_of(config), seed=seed)
    png = plot_visit_counts(evaluate_net, simulations, config["c_puct"], os.path.join(out, "visit_counts.png"), rng)
    return rows, png


def plot_visit_counts(evaluate_net, simulations, c_puct, png, rng):
    """Three positions: the search's visit counts (big) and the network's prior (small) on every cell."""
    import matplotlib.pyplot as plt

    from core import plots

    positions = [("empty board, X to move", tictactoe.empty_board()),
                 ("X to move: win at 3, or block O at 6?", WIN_OR_BLOCK),
                 ("O to move: must block X at 3", MUST_BLOCK)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.8))
    for ax, (title, board) in zip(axes, positions):
        root = mcts.search(tictactoe.canonical(board), evaluate_net, simulations, c_puct, rng)
        share = root.visits / root.visits.sum()
        ax.imshow(share.reshape(3, 3), cmap="Greens", vmin=0, vmax=1)
        for cell in range(9):
            r, c = divmod(cell, 3)
            if board[cell]:
                ax.text(c, r, "X" if board[cell] > 0 else "O", ha="center", va="center", fontsize=30)
            else:
                color = "white" if share[cell] > 0.5 else "black"  # readable on the dark cells
                ax.text(c, r - 0.12, f"{int(root.visits[cell])}", ha="center", va="center", fontsize=15, color=color)
                ax.text(c, r + 0.25, f"p={root.prior[cell]:.2f}", ha="center", va="center", fontsize=8, color=color)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{title}\n{simulations} simulations; cells numbered 1-9 row by row", fontsize=9)
    return plots.save_figure(fig, png)


# -- deployment -----------------------------------------------------------------------------------------

def export(out, export_dir=None, version=None, log=print):
    """SavedModel (board float (n, 9) -> policy (n, 9), value (n, 1)) and float + dynamic-range + int8 TFLite
    (int8 calibrated on 512 of the positions), checked on all 4,520 non-terminal positions: every output within
    the suite's tolerance of the SavedModel (`TOLERANCES[kind]`: probabilities and a value in [-1, 1]), and the
    share of positions where each file picks the same best legal move (reported)."""
    from core import export as core_export

    export_dir = export_dir or core_export.export_folder("rl", "mcts")
    _, model = load_run(out)
    boards = tictactoe.positions().astype(np.float32)
    calibration = np.random.default_rng(0).choice(len(boards), 512, replace=False)  # int8's: positions of all kinds

    def parity(kind, reference, candidate):
        figures, problem = core_export.absolute_parity(kind, reference, candidate)
        legal = boards == 0
        same = (np.argmax(np.where(legal, reference["policy"], -1), axis=1) ==
                np.argmax(np.where(legal, candidate["policy"], -1), axis=1))
        return dict(figures, same_best_move=float(same.mean())), problem

    report = core_export.export_model(model, export_dir, input_names=["board"], output_names=["policy", "value"],
                                      sample_inputs={"board": boards}, version=version, check=parity, log=log,
                                      representative_data=np.split(boards[calibration], 4))
    log(f"SavedModel: {report['saved_model']}")
    for kind, path in report["tflite"].items():
        figures = report["parity"][kind]
        log(f"TFLite {kind}: {path} (max |Δ| {figures['max_abs_diff']:.2g}, same best move in "
            f"{figures['same_best_move']:.1%} of {len(boards)} positions)")
    return report


def tflite_predict(tflite_path):
    """predict(boards) -> (policy, value) with an exported .tflite file (LiteRT)."""
    from core import export as core_export

    if not os.path.isfile(tflite_path):
        raise UserError(f"no such TFLite file: {tflite_path}; run 'export --task mcts' first")
    runner = core_export.tflite_signature_runner(tflite_path, inputs=["board"], what="a tic-tac-toe policy-value net")
    if not {"policy", "value"} <= set(runner.get_output_details()):
        raise UserError(f"{tflite_path} is not a tic-tac-toe policy-value net: it has no policy and value outputs")

    def predict(boards):
        outputs = runner(board=boards.astype(np.float32))
        return outputs["policy"], outputs["value"][:, 0]
    return predict


def human_player(ask=input, log=print):
    """A player that shows the board and reads a cell 1-9; a bad entry asks again."""
    def player(board, rng):
        log(tictactoe.show(board, numbers=True))
        while True:
            try:
                text = ask("your move (1-9): ")
            except EOFError:
                raise UserError("the input ended before the game did") from None
            try:
                return tictactoe.parse_move(text, board)
            except UserError as error:
                log(str(error))
    return player


def play(tflite_path, opponent="human", ai_first=True, games=1, simulations=100, c_puct=1.5, seed=0,
         ask=input, log=print):
    """The exported network (TFLite) searching with MCTS against a human, the random or the greedy player."""
    choices = {"human": human_player(ask, log), "random": tictactoe.random_player,
               "greedy": tictactoe.greedy_player}
    if opponent not in choices:
        raise UserError(f"unknown opponent '{opponent}'; choose one of: {', '.join(choices)}")
    ai = mcts.mcts_player(mcts.TableEvaluator(tflite_predict(tflite_path), precompute=False), simulations, c_puct)
    rng, results = np.random.default_rng(seed), []
    for _ in range(games):
        first, second = (ai, choices[opponent]) if ai_first else (choices[opponent], ai)
        result, moves = tictactoe.play_game(first, second, rng)
        board = tictactoe.empty_board()
        for i, move in enumerate(moves):
            board[move] = 1 if i % 2 == 0 else -1
        result = result if ai_first else -result
        results.append(result)
        log(tictactoe.show(board, absolute=True))
        verdict = {1: "the network wins", 0: "draw", -1: f"{opponent} wins"}[result]
        log(f"moves (cells 1-9): {' '.join(str(m + 1) for m in moves)} -> {verdict}")
    return results
