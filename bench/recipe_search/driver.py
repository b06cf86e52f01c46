"""Run one round of the recipe search: its configs spread over worker processes
sharing one GPU, each appending a JSON line per finished config to RESULTS.

Usage: python driver.py ROUND WORKERS DEADLINE_S RESULTS_JSONL
"""
import json
import os
import subprocess
import sys
import time


def V(epochs, **k):  # vgg at width 0.5 unless told
    return dict(model="vgg", epochs=epochs, opts=dict(width=k.pop("width", 0.5), **k.pop("opts", {})), **k)


def R(epochs, **k):  # resnet, one block per stage unless told
    return dict(model="resnet", epochs=epochs, opts=dict(width=k.pop("width", 1.0), blocks=k.pop("blocks", 1)), **k)


ROUNDS = {
    # 1: the accuracy-vs-epochs curve of the Adam recipe, and one change at a time at 6 epochs.
    1: [
        V(10),
        V(6),
        V(6, seed=1),
        V(5),
        V(4),
        V(8),
        V(7),
        V(6, opts=dict(dropout=0.2)),
        V(6, opts=dict(dropout=0.0)),
        V(6, opts=dict(dropout=0.3), lr=3e-3),
        V(6, batch=256, lr=4e-3),
        V(6, crop=2),
        V(6, crop=1),
        V(6, smoothing=0.0),
        V(6, lr=4e-3),
        V(6, lr=1e-3),
        V(6, opt="sgd", lr=0.1),
        V(6, full_train=True),
        V(6, opt="adamw", lr=2e-3, wd=0.05),
        V(20),
        V(30, crop=2),
        V(8, width=0.375),
        V(10, width=0.375),
        V(15, width=0.25),
        R(6),
        R(7),
        R(10),
        R(6, width=1.5),
        R(4, blocks=2),
        V(20, width=1.0, crop=2),
    ],
    # 2: seeds and rates around the winners of round 1.
    2: [
        *[V(6, lr=4e-3, opts=dict(dropout=0.3), seed=s) for s in (0, 1, 2)],
        *[V(6, lr=3e-3, opts=dict(dropout=0.3), seed=s) for s in (1, 2)],
        *[V(6, lr=4e-3, seed=s) for s in (1, 2)],
        *[V(6, opt="sgd", lr=0.1, seed=s) for s in (1, 2)],
        V(6, opt="sgd", lr=0.2),
        V(6, opt="sgd", lr=0.1, opts=dict(dropout=0.3)),
        V(6, opt="sgd", lr=0.05),
        V(6, lr=6e-3, opts=dict(dropout=0.3)),
        V(6, lr=4e-3, opts=dict(dropout=0.3), smoothing=0.0),
        V(6, lr=4e-3, opts=dict(dropout=0.3), warmup=0.25),
        V(5, lr=4e-3, opts=dict(dropout=0.3)),
        V(7, batch=256, lr=6e-3, opts=dict(dropout=0.3)),
        V(6, batch=256, lr=8e-3, opts=dict(dropout=0.3)),
        R(6, width=1.5, lr=4e-3),
        R(5, width=1.5, lr=4e-3),
        V(6, opt="sgd", lr=0.1, wd=1e-3),
    ],
    # 3: seeds of the Nesterov SGD recipes at 0.2-0.3.
    3: [
        *[V(6, opt="sgd", lr=0.2, seed=s) for s in (1, 2)],
        *[V(6, opt="sgd", lr=0.2, wd=1e-3, seed=s) for s in (0, 1, 2)],
        V(6, opt="sgd", lr=0.3),
        V(6, opt="sgd", lr=0.3, wd=1e-3),
        *[V(6, lr=6e-3, opts=dict(dropout=0.3), seed=s) for s in (1, 2)],
        V(6, lr=8e-3, opts=dict(dropout=0.3)),
        *[V(6, opt="sgd", lr=0.2, opts=dict(dropout=0.3), seed=s) for s in (0, 1)],
    ],
    # 4: the winner at batch 256 (an epoch 8 % faster on the CPU), and its third seed at 128.
    4: [
        *[V(6, opt="sgd", batch=256, lr=lr, opts=dict(dropout=0.3), seed=s) for lr in (0.2, 0.3, 0.4) for s in (0, 1)],
        V(6, opt="sgd", lr=0.2, opts=dict(dropout=0.3), seed=2),
        V(6, opt="sgd", lr=0.2, opts=dict(dropout=0.3), wd=1e-3),
    ],
    # 5: the winner for 7, 8 and 10 epochs (an idle epoch proved to take ~80 s, not 140).
    5: [
        V(e, opt="sgd", lr=0.2, opts=dict(dropout=0.3), seed=s)
        for e, seeds in ((7, (0, 1)), (8, (0, 1, 2)), (10, (0, 1)))
        for s in seeds
    ],
}


def cost(config):  # epochs, times 4 for a full-width VGG, times the blocks per stage
    full_vgg = config["model"] == "vgg" and config["opts"].get("width") == 1.0
    return config["epochs"] * (4 if full_vgg else 1) * config["opts"].get("blocks", 1)


if __name__ == "__main__":
    round_, workers, deadline, results = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    groups, load = [[] for _ in range(workers)], [0] * workers
    for config in sorted(ROUNDS[round_], key=cost, reverse=True):  # longest first, to the least-loaded worker
        i = load.index(min(load))
        groups[i].append(config)
        load[i] += cost(config)
    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "search.py")
    procs = [subprocess.Popen([sys.executable, worker, json.dumps(g), results]) for g in groups if g]
    start = time.time()
    while time.time() - start < deadline and any(p.poll() is None for p in procs):
        time.sleep(2)
    for p in procs:
        if p.poll() is None:
            p.kill()
    print(f"round {round_}: done in {time.time() - start:.0f} s", flush=True)
