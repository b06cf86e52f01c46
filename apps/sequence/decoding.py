"""Decoding for any autoregressive model: greedy, beam search, temperature sampling.

Every decoder works from a *step function*

    step(tokens, states) -> (logits, states)

where `tokens` is an int array (batch,), `logits` a float array (batch, vocab)
for the next token, and `states` a list of arrays whose first axis is the
batch (RNN states, or the prefix tokens of a Transformer decoder). Decoding
starts from the logits and states after the prompt (a language model) or
after the start token (a seq2seq decoder), `first_logits` of shape (vocab,)
and `states` with batch 1.

Results are lists of token ids, without the end token.

The parity checks at the end compare greedy decoding by Keras with a converted
(TFLite) copy of the same model: tokens must agree wherever float32 rounding
cannot decide between the two best logits.
"""

import numpy as np


def log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _take(states, index):
    return [np.asarray(s)[index] for s in states]


def _decode(step, first_logits, states, length, choose, end_token):
    """Feed back the token `choose(logits)` picks until `length` tokens or `end_token`."""
    logits, out = np.asarray(first_logits), []
    for _ in range(length):
        token = choose(logits)
        if token == end_token:
            break
        out.append(token)
        if len(out) == length:
            break
        next_logits, states = step(np.array([token], np.int32), states)
        logits = np.asarray(next_logits)[0]
    return out


def greedy(step, first_logits, states, length, end_token=None):
    """The most probable token at each step."""
    return _decode(step, first_logits, states, length, lambda logits: int(np.argmax(logits)), end_token)


def sample(step, first_logits, states, length, temperature=1.0, end_token=None, seed=None):
    """Sample each token from softmax(logits / temperature); temperature -> 0
    approaches greedy decoding, large temperatures approach uniform."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    rng = np.random.default_rng(seed)

    def choose(logits):
        probs = np.exp(log_softmax(np.asarray(logits, np.float64) / temperature))
        return int(rng.choice(len(probs), p=probs / probs.sum()))

    return _decode(step, first_logits, states, length, choose, end_token)


def beam_search(step, first_logits, states, length, width=4, end_token=None, length_penalty=0.0,
                return_all=False):
    """Keep the `width` most probable partial sequences (sum of log-probs);
    a beam that emits `end_token` is finished. Scores are divided by
    len**length_penalty when ranking finished sequences (0: raw log-prob).
    Width 1 is greedy decoding. Returns the best token list (or, with
    `return_all`, every (tokens, score) ranked best first)."""
    if width < 1:
        raise ValueError(f"beam width must be >= 1, got {width}")
    beams = [[]]                                  # token lists of the live beams
    scores = np.zeros(1)                          # their log-probs
    logp = log_softmax(np.asarray(first_logits)[None])
    finished = []

    def ranked(tokens, score):
        return score / (max(len(tokens), 1) ** length_penalty) if length_penalty else score

    for t in range(length):
        vocab = logp.shape[-1]
        total = (scores[:, None] + logp).ravel()
        order = np.argsort(-total, kind="stable")  # ties: lower beam, then lower token, as argmax
        keep_beams, keep_tokens, keep_scores = [], [], []
        for flat in order:
            beam, token = divmod(int(flat), vocab)
            if token == end_token:
                finished.append((beams[beam], float(total[flat])))
            else:
                keep_beams.append(beam)
                keep_tokens.append(token)
                keep_scores.append(float(total[flat]))
            if len(keep_beams) == width:
                break
        # Stop when no live beam can beat the best finished one (log-probs only fall).
        if not keep_beams:
            break
        beams = [beams[b] + [tok] for b, tok in zip(keep_beams, keep_tokens)]
        scores = np.array(keep_scores)
        if finished and not length_penalty and max(s for _, s in finished) >= scores.max():
            break
        if t == length - 1:
            break
        next_logits, states = step(np.array(keep_tokens, np.int32), _take(states, np.array(keep_beams)))
        logp = log_softmax(next_logits)
    candidates = finished + list(zip(beams, scores.tolist()))
    candidates.sort(key=lambda c: -ranked(*c))
    return candidates if return_all else candidates[0][0]


# ------------------------------------------------- parity of converted models
# A model converted to TFLite computes the same float32 logits in another order: rounding (eps 1.2e-7)
# over a few hundred sequential multiply-adds stays near 1e-5 of the logits' scale; 1e-4 leaves a margin.
FLOAT_RELATIVE = 1e-4


def top_two_gap(logits):
    """How far the best logit is above the second best, for every row of (..., vocab) logits."""
    top = np.sort(np.asarray(logits, np.float64), axis=-1)[..., -2:]
    return top[..., 1] - top[..., 0]


def greedy_agreement(reference, candidate, gaps, tolerance):
    """(steps compared, problem or None) for two greedy token lists of one model computed two ways (Keras
    and a converted file): equal up to the first step whose reference top-two logits are within
    2 * `tolerance` (a difference of `tolerance` in each could swap them, and from there on the two decode
    different prefixes), or to the end."""
    for t, (a, b) in enumerate(zip(reference, candidate)):
        if gaps[t] <= 2 * tolerance:
            return t, None
        if a != b:
            return t, f"token {t} is {b}, not {a}, although the best logit leads by {gaps[t]:.3g}"
    if len(reference) != len(candidate):
        return min(len(reference), len(candidate)), f"{len(candidate)} tokens, not {len(reference)}"
    return len(reference), None


def greedy_tokens_check(end_token, enforce=("float",), relative=FLOAT_RELATIVE):
    """`core.export`'s parity check for greedy decoding inside the graph, outputs `tokens` (batch, T)
    and their `logits` (batch, T, vocab): in each row, up to the reference's end token, the tokens agree
    (`greedy_agreement`) and the logits of every step whose input tokens agreed are within `relative` times
    the logits' scale. A problem for the `enforce` kinds; the others (quantized) are measured only."""

    def check(kind, reference, candidate):
        logits = np.asarray(reference["logits"], np.float64)
        tolerance = relative * (1.0 + np.abs(logits).max())
        gaps = top_two_gap(logits)
        worst, same, total, problems = 0.0, 0, 0, []
        for row, (ours, theirs) in enumerate(zip(reference["tokens"], candidate["tokens"])):
            ends = np.flatnonzero(ours == end_token)
            length = int(ends[0]) + 1 if len(ends) else len(ours)
            compared, problem = greedy_agreement(list(ours[:length]), list(theirs[:length]), gaps[row], tolerance)
            if problem:
                problems.append(f"row {row}: {problem}")
            steps = min(compared + 1, length)  # the logits of the first undecided step are still comparable
            worst = max(worst, float(np.abs(candidate["logits"][row, :steps] - logits[row, :steps]).max()))
            same += int((ours[:length] == theirs[:length]).sum())
            total += length
        figures = {"max_abs_diff": worst, "token_agreement": same / max(total, 1)}
        if kind in enforce and (problems or worst > tolerance):
            return figures, (f"in its greedy tokens ({problems[0]})" if problems else
                             f"in its logits by {worst:.3g} (tolerance {tolerance:.3g})")
        return figures, None

    return check


def relative_check(enforce=("float",), relative=FLOAT_RELATIVE):
    """`core.export`'s parity check for float outputs of any scale (logits, RNN states): every output within
    `relative` (one factor, or a dict kind -> factor) times the reference's largest magnitude. A problem for the
    `enforce` kinds only."""
    from core.export import max_abs_difference

    def check(kind, reference, candidate):
        factor = relative.get(kind, FLOAT_RELATIVE) if isinstance(relative, dict) else relative
        tolerance = factor * (1.0 + max(float(np.abs(v).max()) for v in reference.values()))
        difference = max_abs_difference(reference, candidate)
        problem = f"by {difference:.3g} (tolerance {tolerance:.3g})" if difference > tolerance else None
        return {"max_abs_diff": difference}, problem if kind in enforce else None

    return check
