"""What each verb does for each task, once `__main__` has parsed the command line: `<verb>_<task>(args, run)`
with the run folder `run`; everything else comes from the run's config.json."""

from apps.sequence import captioning, charlm, seq2seq, textclass

TRAIN = {"charlm": charlm.train, "textclass": textclass.train, "dates": seq2seq.train, "caption": captioning.train}


def evaluate_charlm(args, run):
    charlm.evaluate(out=run)


def evaluate_textclass(args, run):
    textclass.evaluate(out=run, split=args.split)


def evaluate_dates(args, run):
    seq2seq.evaluate(out=run, width=args.width, limit=args.limit)


def evaluate_caption(args, run):
    captioning.evaluate(out=run, split=args.split, width=args.width, limit=args.limit)


def export_charlm(args, run):
    charlm.export_run(out=run, export_dir=args.export_dir, version=args.version, length=args.length)


def export_textclass(args, run):
    textclass.export_run(out=run, export_dir=args.export_dir, version=args.version)


def export_dates(args, run):
    seq2seq.export_run(out=run, export_dir=args.export_dir, version=args.version)


def export_caption(args, run):
    captioning.export_run(out=run, export_dir=args.export_dir, version=args.version)


def predict_charlm(args, run):
    generator = charlm.Generator(run)
    for prompt in args.prompts:
        text = generator.generate(prompt, length=args.length, method=args.method, width=args.width,
                                  temperature=args.temperature, seed=args.seed)
        print(prompt + text)
        period = charlm.loop_period(text) if args.method != "sample" else None
        if period:
            print(f"(the {args.method} continuation ends in a loop that repeats every {period} characters, as "
                  f"{args.method} decoding of a character LM does; --method sample varies it)")


def predict_textclass(args, run):
    textclass.predict(args.texts, out=run, saved_model=args.saved_model)


def predict_dates(args, run):
    normalizer = seq2seq.Normalizer(run)
    for text in args.texts:
        print(f"{text!r} -> {normalizer.normalize(text, width=args.width)}")


def predict_caption(args, run):
    captioning.predict(args.images, out=run, width=args.width, count=args.count, saved_model=args.saved_model)
