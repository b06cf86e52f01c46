"""Command line: python -m apps.sequence {charlm,generate,textclass,classify-text,dates,normalize-dates,caption,
vanishing,hard-attention} ...

  charlm {train,evaluate,export}         character-level language model on the fortunes
  generate PROMPT                        continue a prompt (greedy, beam or sample)
  textclass {train,evaluate,export}      category of a quote
  classify-text TEXT...                  classify quotes with a trained run or SavedModel
  dates {train,evaluate,export}          human-written dates -> ISO 8601 (Bahdanau RNN or Transformer)
  normalize-dates TEXT...                normalise dates with a trained run
  caption {train,evaluate,export,predict} image captioning of multi-object scenes (CNN + GRU with attention)
  vanishing [--small]                    gradient through time: Elman vs LSTM vs GRU (PNG + table)
  hard-attention [--small]               glimpse classifier: hard attention (REINFORCE) vs soft vs random glimpses
"""

import argparse
import os

from core.errors import UserError, run_cli

RUNS = os.path.join("runs", "sequence")
# experiments: verb -> what it shows; module apps/sequence/<verb with _>.py writes PNGs under <out>/ and a table
EXPERIMENTS = {
    "vanishing": "‖∂L/∂x_t‖ over time steps for Elman, LSTM and GRU at initialisation and after a little training "
                 "on remember-the-first-symbol; tape vs finite differences",
    "hard-attention": "translated Fashion-MNIST through one 28x28 glimpse: hard attention (sampled positions, "
                      "REINFORCE with a learned baseline) vs soft attention vs random glimpses",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m apps.sequence", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def actions(p):
        p.add_argument("action", choices=["train", "evaluate", "export"])

    p = commands.add_parser("charlm", help="character language model: train, evaluate, export")
    actions(p)
    p.add_argument("--cell", default="lstm",
                   help="elman, lstm, gru (the suite's cells) or keras-elman, keras-lstm, keras-gru "
                        "(default: %(default)s)")
    p.add_argument("--units", type=int, default=256)
    p.add_argument("--layers", type=int, default=2, help="stacked RNN layers (default: %(default)s)")
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32, help="parallel text streams (default: %(default)s)")
    p.add_argument("--steps", type=int, default=100, help="truncated-BPTT window (default: %(default)s)")
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--clipnorm", type=float, default=1.0, help="gradient-norm clipping (default: %(default)s)")
    p.add_argument("--max-chars", type=int, default=None, help="use only this many training characters")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--out", default=os.path.join(RUNS, "charlm"))
    p.add_argument("--export-dir", default="saved_models")
    p.add_argument("--version", type=int, default=None)
    p.add_argument("--length", type=int, default=200, help="characters the exported model generates")

    p = commands.add_parser("generate", help="continue a prompt with a trained character LM")
    p.add_argument("prompt")
    p.add_argument("--out", default=os.path.join(RUNS, "charlm"))
    p.add_argument("--method", default="greedy", choices=["greedy", "beam", "sample"])
    p.add_argument("--width", type=int, default=4, help="beam width (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--seed", type=int, default=None)

    p = commands.add_parser("textclass", help="quote category classifier: train, evaluate, export")
    actions(p)
    p.add_argument("--model", default="bigru", help="bag, lstm, bigru, transformer (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--sequence-length", type=int, default=128)
    p.add_argument("--max-tokens", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--out", default=os.path.join(RUNS, "textclass"))
    p.add_argument("--export-dir", default="saved_models")
    p.add_argument("--version", type=int, default=None)

    p = commands.add_parser("classify-text", help="classify quotes")
    p.add_argument("texts", nargs="+")
    p.add_argument("--out", default=os.path.join(RUNS, "textclass"))
    p.add_argument("--saved-model", default=None, help="an exported string SavedModel folder")

    p = commands.add_parser("dates", help="date normalisation seq2seq: train, evaluate, export")
    actions(p)
    p.add_argument("--model", default="bahdanau", help="bahdanau or transformer (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--train-size", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--width", type=int, default=1, help="beam width for evaluate (default: greedy)")
    p.add_argument("--out", default=None, help="run folder (default: runs/sequence/dates-MODEL)")
    p.add_argument("--export-dir", default="saved_models")
    p.add_argument("--version", type=int, default=None)

    p = commands.add_parser("normalize-dates", help="human-written dates -> ISO 8601")
    p.add_argument("texts", nargs="+")
    p.add_argument("--out", default=os.path.join(RUNS, "dates-bahdanau"))
    p.add_argument("--width", type=int, default=1, help="beam width (default: greedy)")

    p = commands.add_parser("caption", help="image captioning: train, evaluate, export, predict")
    p.add_argument("action", choices=["train", "evaluate", "export", "predict"])
    p.add_argument("images", nargs="*", help="predict: image files to caption (default: the first test scenes)")
    p.add_argument("--scenes", default="fashion_mnist_96",
                   help="tfds scene dataset generated_scenes/<name> (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="tfds data folder (default: data/tensorflow_datasets)")
    p.add_argument("--max-objects", type=int, default=2, help="use scenes with 1..N items, N = 1 or 2")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--limit", type=int, default=None, help="use at most this many scenes per split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--split", default="test", help="evaluate: train, validation or test (default: %(default)s)")
    p.add_argument("--width", type=int, default=1, help="beam width (default: 1, greedy)")
    p.add_argument("--count", type=int, default=8, help="predict: test scenes to caption without image files")
    p.add_argument("--saved-model", default=None, help="predict: caption with an exported SavedModel folder")
    p.add_argument("--out", default=os.path.join(RUNS, "caption"))
    p.add_argument("--export-dir", default="saved_models")
    p.add_argument("--version", type=int, default=None)
    for name, help_text in EXPERIMENTS.items():
        p = commands.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--out", default=RUNS, help="root of the PNG folders (default: %(default)s)")
        p.add_argument("--small", action="store_true", help="reduced size: about a minute instead of several")
        p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
        if name == "hard-attention":
            p.add_argument("--export-dir", default="saved_models",
                           help="root of the hard model's export; '' for none (default: %(default)s)")
    # Image files may come after options ("caption predict --out RUN a.png"), which argparse leaves over.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "caption" and args.action == "predict" and not any(e.startswith("-") for e in extra):
        args.images += extra
    elif extra:
        raise UserError(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.command == "charlm":
        from apps.sequence import charlm

        if args.action == "train":
            charlm.train(cell=args.cell, units=args.units, num_layers=args.layers, embed_dim=args.embed_dim,
                         dropout=args.dropout, epochs=args.epochs, batch_size=args.batch_size, steps=args.steps,
                         learning_rate=args.learning_rate, clipnorm=args.clipnorm, max_chars=args.max_chars,
                         out=args.out, seed=args.seed, patience=args.patience)
            print(f"run folder: {args.out}\nwrote {os.path.join(args.out, 'learning_curves.png')}")
        elif args.action == "evaluate":
            charlm.evaluate(out=args.out)
        else:
            charlm.export_run(out=args.out, export_dir=args.export_dir, version=args.version, length=args.length)
    elif args.command == "generate":
        from apps.sequence import charlm

        text = charlm.generate(args.prompt, out=args.out, length=args.length, method=args.method,
                               width=args.width, temperature=args.temperature, seed=args.seed)
        print(args.prompt + text)
    elif args.command == "textclass":
        from apps.sequence import textclass

        if args.action == "train":
            textclass.train(model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, sequence_length=args.sequence_length,
                            max_tokens=args.max_tokens, out=args.out, seed=args.seed, limit=args.limit,
                            patience=args.patience)
            print(f"run folder: {args.out}\nwrote {os.path.join(args.out, 'learning_curves.png')}")
        elif args.action == "evaluate":
            textclass.evaluate(out=args.out)
        else:
            textclass.export_run(out=args.out, export_dir=args.export_dir, version=args.version)
    elif args.command == "classify-text":
        from apps.sequence import textclass

        textclass.predict(args.texts, out=args.out, saved_model=args.saved_model)
    elif args.command == "dates":
        from apps.sequence import seq2seq

        out = args.out or os.path.join(RUNS, f"dates-{args.model}")
        if args.action == "train":
            seq2seq.train(model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                          learning_rate=args.learning_rate, train_size=args.train_size, out=out, seed=args.seed,
                          patience=args.patience)
            print(f"run folder: {out}\nwrote {os.path.join(out, 'learning_curves.png')}")
        elif args.action == "evaluate":
            seq2seq.evaluate(out=out, width=args.width)
        else:
            seq2seq.export_run(out=out, export_dir=args.export_dir, version=args.version)
    elif args.command == "normalize-dates":
        from apps.sequence import seq2seq

        normalizer = seq2seq.Normalizer(args.out)
        for text in args.texts:
            print(f"{text!r} -> {normalizer.normalize(text, width=args.width)}")
    elif args.command == "caption":
        caption(args)
    elif args.command in EXPERIMENTS:
        experiment(args)


def experiment(args):
    import importlib
    import time

    from core import training

    start = time.time()
    training.set_seed(args.seed)
    module = importlib.import_module(f"apps.sequence.{args.command.replace('-', '_')}")
    print(f"== {args.command}: {EXPERIMENTS[args.command]}")
    options = {"export_dir": args.export_dir} if hasattr(args, "export_dir") else {}
    module.run(out=args.out, small=args.small, seed=args.seed, **options)
    print(f"{args.command} finished in {time.time() - start:.0f} s")


def caption(args):
    if args.images and args.action != "predict":
        raise UserError(f"'caption {args.action}' takes no image files (only 'caption predict' does)")
    from apps.sequence import captioning

    if args.action == "train":
        captioning.train(scenes_config=args.scenes, data_dir=args.data_dir, max_objects=args.max_objects,
                         epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                         limit=args.limit, out=args.out, seed=args.seed, patience=args.patience)
        print(f"run folder: {args.out}\nwrote {os.path.join(args.out, 'learning_curves.png')}")
    elif args.action == "evaluate":
        captioning.evaluate(out=args.out, split=args.split, width=args.width, limit=args.limit)
    elif args.action == "export":
        captioning.export_run(out=args.out, export_dir=args.export_dir, version=args.version)
    else:
        captioning.predict(args.images, out=args.out, width=args.width, count=args.count,
                           saved_model=args.saved_model)


if __name__ == "__main__":
    run_cli(main, prog="apps.sequence")
