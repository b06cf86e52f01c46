"""Recipe search for the quote classifiers of `apps.sequence --task textclass`, on the validation split only.

The suite's own classifiers (apps/sequence/models.py) on the app's word ids (the training quotes' vocabulary, 128
positions), Adam at batch 32 as `train` does; each config trains for `epochs` and keeps the epoch with the lowest
validation loss, as `train`'s checkpoint does. Each output line: the config, that epoch, its validation loss, accuracy
and macro-F1 over the 355 validation quotes. `pooling` (lstm, bigru): "last" is the state after the last word,
"mean-max" the mean and maximum of the outputs over the real words. Finished configs are skipped on a rerun.

    python bench/textclass_search.py             # the search in CONFIGS, appended to RESULTS; then the table
    python bench/textclass_search.py --docs-only # only the table in docs/sequence.md, from RESULTS
"""

import json
import os
import sys
import time

import numpy as np

RESULTS = os.path.join("bench", "results", "textclass_search.jsonl")
DOCS = os.path.join("docs", "sequence.md")
MARKERS = ("<!-- textclass-search:begin -->", "<!-- textclass-search:end -->")
EPOCHS, SEEDS = 6, (0, 1, 2, 3)
CONFIGS = [{"model": "bag"}, {"model": "lstm", "pooling": "last"}, {"model": "lstm", "pooling": "mean-max"},
           {"model": "bigru", "pooling": "last"}, {"model": "bigru", "pooling": "mean-max"}, {"model": "transformer"},
           {"model": "bag", "epochs": 16}]  # the bag still improves at epoch 6: where does it stop?


def quotes():
    """(train ids, train labels, validation ids, validation labels, vocabulary size, classes) as `train` builds them."""
    from apps.sequence.config import TextClassConfig
    from apps.sequence.textclass import training_quotes

    fortunes, vocab, ids = training_quotes(TextClassConfig())
    return (ids["train"], fortunes.labels("train"), ids["val"], fortunes.labels("val"), len(vocab),
            len(fortunes.categories))


def search(config, data):
    import keras

    from apps.sequence.config import TextClassConfig
    from apps.sequence.models import CLASSIFIERS
    from core.metrics import classification_report

    x_train, y_train, x_val, y_val, vocab_size, num_classes = data
    c = TextClassConfig()
    keras.utils.set_random_seed(config["seed"])
    options = {"pooling": config["pooling"]} if "pooling" in config else {}
    net = CLASSIFIERS.get(config["model"])(vocab_size, num_classes, c.sequence_length, dropout=c.dropout, **options)
    net.compile(optimizer=keras.optimizers.Adam(c.learning_rate), loss="sparse_categorical_crossentropy")
    best, start = None, time.time()
    for epoch in range(1, config["epochs"] + 1):
        net.fit(x_train, y_train, batch_size=c.batch_size, epochs=1, shuffle=True, verbose=0)
        probabilities = net.predict(x_val, verbose=0)
        loss = float(-np.log(probabilities[np.arange(len(y_val)), y_val] + 1e-7).mean())
        if best is None or loss < best["val_loss"]:
            report = classification_report(y_val, probabilities.argmax(1), num_classes)
            best = {"epoch": epoch, "val_loss": round(loss, 4), "val_accuracy": round(float(report["accuracy"]), 4),
                    "val_macro_f1": round(float(report["f1"].mean()), 4)}
    return {**config, **best, "seconds": round(time.time() - start, 1)}


def read_results():
    if not os.path.exists(RESULTS):
        return []
    with open(RESULTS) as f:
        return [json.loads(line) for line in f if line.strip()]


def table(results):
    """Markdown: per config, the mean over its seeds of the validation figures at the kept epoch, and their range."""
    groups = {}
    for r in results:
        groups.setdefault((r["model"], r.get("pooling", ""), r["epochs"]), []).append(r)
    lines = ["| model | pooling | epochs | seeds | val accuracy (min–max) | val macro-F1 (min–max) | val loss | "
             "kept epoch |", "|---|---|---:|---:|---|---|---:|---|"]
    for (model, pooling, epochs), rows in groups.items():
        def summary(key):
            values = [r[key] for r in rows]
            return f"**{np.mean(values):.3f}** ({min(values):.3f}–{max(values):.3f})"
        kept = ", ".join(str(r["epoch"]) for r in rows)
        lines.append(f"| `{model}` | {pooling or '–'} | {epochs} | {len(rows)} | {summary('val_accuracy')} | "
                     f"{summary('val_macro_f1')} | {np.mean([r['val_loss'] for r in rows]):.3f} | {kept} |")
    return "\n".join(lines)


def write_docs():
    from bench.docs_markers import write_between_markers

    write_between_markers(DOCS, *MARKERS, table(read_results()))
    print(f"wrote the search table in {DOCS}")


def main():
    sys.path.insert(0, os.getcwd())
    if sys.argv[1:] == ["--docs-only"]:
        return write_docs()
    done = read_results()
    todo = [{**config, "epochs": config.get("epochs", EPOCHS), "seed": seed} for seed in SEEDS for config in CONFIGS]
    todo = [config for config in todo if not any(all(r.get(k) == v for k, v in config.items()) for r in done)]
    data = quotes() if todo else None
    for config in todo:
        result = search(config, data)
        print(json.dumps(result), flush=True)
        with open(RESULTS, "a") as f:
            f.write(json.dumps(result) + "\n")
    write_docs()


if __name__ == "__main__":
    main()
