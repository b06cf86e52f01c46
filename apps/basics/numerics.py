"""Experiment: numerically stable softmax and log-sum-exp.

  naive     softmax(z)_k = exp(z_k) / Σ_j exp(z_j),     logsumexp(z) = log Σ_j exp(z_j)
  stable    m = max_j z_j:
            softmax(z)_k = exp(z_k - m) / Σ_j exp(z_j - m),     logsumexp(z) = m + log Σ_j exp(z_j - m)
            log softmax(z)_k = z_k - logsumexp(z)

Both lines are the same function (multiply numerator and denominator by exp(-m)),
but exp overflows to inf as soon as z > log(max float) ≈ 88.7 in float32 (709.8
in float64): inf/inf = NaN. Very negative logits underflow instead: every exp is 0
and 0/0 = NaN, log 0 = -inf. After subtracting the maximum, every exponent is ≤ 0
and the largest term is exactly exp(0) = 1, so the sum lies in [1, n]: nothing
overflows, the denominator never is 0 and its log is finite. This is why losses take
logits (`from_logits=True`, `tf.nn.sparse_softmax_cross_entropy_with_logits`) and
never log(softmax(z)). (Goodfellow, Bengio & Courville, Deep Learning, §4.1.)
"""

import os

import numpy as np

from apps.basics.common import experiment_folder, print_table, save


def naive_softmax(z):
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def stable_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def naive_logsumexp(z):
    return np.log(np.exp(z).sum(axis=-1))


def stable_logsumexp(z):
    m = z.max(axis=-1)
    return m + np.log(np.exp(z - m[..., None]).sum(axis=-1))


def naive_log_softmax(z):
    return np.log(naive_softmax(z))


def stable_log_softmax(z):
    return z - stable_logsumexp(z)[..., None]


FUNCTIONS = {  # name: (naive, stable)
    "softmax": (naive_softmax, stable_softmax),
    "logsumexp": (naive_logsumexp, stable_logsumexp),
    "log_softmax": (naive_log_softmax, stable_log_softmax),
}


def compare(z):
    """Per function: (naive, stable) outputs on logits z, overflow warnings silenced (the point is to see them)."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        return {name: (naive(z), stable(z)) for name, (naive, stable) in FUNCTIONS.items()}


def shift_sweep(base, shifts, dtype):
    """For logits base + c, c in shifts: share of non-finite outputs of the naive and the stable form of each
    function, and the largest deviation of the stable softmax from softmax(base) (shifting changes nothing)."""
    base = np.asarray(base, dtype)
    reference = stable_softmax(base.astype(np.float64))
    rows = []
    for c in shifts:
        out = compare(base + dtype(c))
        row = {"shift": float(c)}
        for name, (naive, stable) in out.items():
            row[f"{name}_naive_bad"] = float(np.mean(~np.isfinite(naive)))
            row[f"{name}_stable_bad"] = float(np.mean(~np.isfinite(stable)))
        row["stable_error"] = float(np.max(np.abs(out["softmax"][1] - reference)))
        rows.append(row)
    return rows


def run(*, folder=None, small=False, seed=0):
    import matplotlib.pyplot as plt

    folder = experiment_folder(folder, "numerics")
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 3, size=(64 if small else 1024, 10))
    shifts = np.concatenate([-np.geomspace(1, 1000, 61)[::-1], [0.0], np.geomspace(1, 1000, 61)])
    sweeps = {np.dtype(t).name: shift_sweep(base, shifts, t) for t in (np.float32, np.float64)}

    examples = [np.array([1.0, 2.0, 3.0]), np.array([1000.0, 1001.0, 1002.0]), np.array([-1000.0, -1001.0, -1002.0])]
    rows = []
    for z in examples:
        for name, (naive, stable) in compare(z.astype(np.float32)).items():
            rows.append([str(z.tolist()), name, np.array2string(np.atleast_1d(naive), precision=4),
                         np.array2string(np.atleast_1d(stable), precision=4)])
    print_table("naive vs stable (max-subtracted) forms in float32", ["logits", "function", "naive", "stable"], rows)
    limits = [[name, float(s[np.argmax([r["softmax_naive_bad"] > 0 for r in s])]["shift"]),
               max(r["stable_error"] for r in s), max(r["log_softmax_stable_bad"] for r in s)]
              for name, s in ((n, [r for r in sw if r["shift"] > 0]) for n, sw in sweeps.items())]
    print_table(f"logits N(0, 3²) + c over {len(base)} rows of 10: first c > 0 where the naive softmax has a "
                "non-finite value; stable softmax's largest error against c = 0 (over all c)",
                ["dtype", "first failing c", "stable: max |error|", "stable: non-finite share"], limits)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, (dtype, sweep) in zip(axes, sweeps.items()):
        c = [r["shift"] for r in sweep]
        for name in FUNCTIONS:
            ax.plot(c, [r[f"{name}_naive_bad"] for r in sweep], label=f"naive {name}")
        ax.plot(c, [r["softmax_stable_bad"] + r["log_softmax_stable_bad"] + r["logsumexp_stable_bad"] for r in sweep],
                "k--", label="stable (all three)")
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("shift c added to every logit")
        ax.set_ylabel("share of NaN / ±inf outputs")
        ax.set_title(f"{dtype}: softmax(z + c) = softmax(z), but exp(z + c) over/underflows", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    png = save(fig, os.path.join(folder, "overflow.png"))
    print(f"wrote {png}")
    return {"sweeps": sweeps, "limits": limits, "pngs": [png]}
