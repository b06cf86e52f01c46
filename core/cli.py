"""The command line of every app, generated from its config dataclass: the dataclass is the single source of
defaults, each field becomes a flag (as CleanRL's `tyro` does, with argparse), `train` saves the resolved
config as the run's config.json, and `--config FILE` reruns it.

    @dataclass
    class TrainConfig:
        model: str = option("unet", "architecture", choices=("fcn", "segnet", "unet"))
        epochs: int = option(4, "passes over the training scenes", minimum=1)
        flip: bool = option(True, "random horizontal flips")

    parser = argparse.ArgumentParser(...)
    add_config_flags(parser, TrainConfig)          # --model, --epochs, --flip/--no-flip
    add_run_flags(parser, app="segment")           # --run, --config, --strategy
    args = parser.parse_args(argv)
    config = resolve_config(TrainConfig, args)     # defaults < --config file < flags given

Precedence: the dataclass defaults, then the `--config` file, then the flags typed on the command line (the
flags' argparse default is SUPPRESS, so a flag that was not typed never overrides the file). The help shows each
default.

The run folder: `--run DIR`, by default `runs/<app>/<model>` (one folder per model, so a second model never
collides with the first); `evaluate`, `export` and `predict` read the run's config.json and never ask again.
"""

import argparse
import dataclasses
import os
import types
import typing

from core.errors import UserError

RUNS = "runs"
STRATEGIES = ("auto", "default", "mirrored", "multiworker")


def option(default, help, *, choices=None, minimum=None, maximum=None, flag=None):
    """A config field with its help text (and allowed values): `flag` renames the command-line flag."""
    return dataclasses.field(default=default, metadata=dict(help=help, choices=choices, minimum=minimum,
                                                            maximum=maximum, flag=flag))


def _flag(field):
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _base_type(annotation):
    """(scalar type, is_tuple, optional) of a field annotation: int, float | None, tuple[int, ...], ..."""
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional, annotation = True, arguments[0]
    if typing.get_origin(annotation) is tuple:
        return typing.get_args(annotation)[0], True, optional
    return annotation, False, optional


def _describe(value):
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value) or "(none)"
    return "none" if value is None else str(value)


def add_config_flags(parser, config_class, *, skip=(), title=None):
    """One flag per field of `config_class` (not in `skip`), defaults shown in the help."""
    hints = typing.get_type_hints(config_class)
    group = parser.add_argument_group(title) if title else parser
    for field in dataclasses.fields(config_class):
        if field.name in skip:
            continue
        scalar, is_tuple, _ = _base_type(hints[field.name])
        meta = field.metadata
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        help_text = f"{meta.get('help', '')} (default: {_describe(default)})".strip()
        if meta.get("choices"):
            help_text = f"{meta['help']}: {', '.join(map(str, meta['choices']))} (default: {_describe(default)})"
        kwargs = dict(dest=field.name, default=argparse.SUPPRESS, help=help_text.replace("%", "%%"))
        if scalar is bool:
            group.add_argument(_flag(field), action=argparse.BooleanOptionalAction, **kwargs)
            continue
        kwargs["type"] = scalar
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
            kwargs["metavar"] = field.name.upper()
        if is_tuple:
            kwargs["nargs"] = "*"
        group.add_argument(_flag(field), **kwargs)


def add_run_flags(parser, *, app, config=True, strategy=True, default_run=None):
    """--run DIR (default `default_run`, else runs/<app>/<model>), and for `train`: --config FILE and --strategy."""
    parser.add_argument("--run", default=None, metavar="DIR",
                        help=f"the run folder (default: {default_run or os.path.join(RUNS, app, '<model>')})")
    if config:
        parser.add_argument("--config", default=None, metavar="FILE",
                            help="a config.json (e.g. an earlier run's) whose values replace the defaults; "
                                 "flags typed here replace its values")
    if strategy:
        parser.add_argument("--strategy", default="auto", choices=STRATEGIES, metavar="S",
                            help=f"tf.distribute strategy: {', '.join(STRATEGIES)} (default: auto)")



def add_trained_run_flags(parser, *, app, models, default_model):
    """evaluate/export/predict: which run to read, --run DIR, or --model NAME for runs/<app>/NAME; everything
    else comes from the run's config.json."""
    parser.add_argument("--model", default=None, choices=models, metavar="NAME",
                        help=f"{', '.join(models)}: picks the default run folder {RUNS}/{app}/NAME "
                             f"(default: {default_model})")
    add_run_flags(parser, app=app, config=False, strategy=False)


def add_export_flags(parser, version=True):
    """export: --export-dir (the root of saved_models/<app>_<model>/) and --version."""
    parser.add_argument("--export-dir", default="saved_models", metavar="DIR",
                        help="root of the exports (default: saved_models)")
    if version:
        parser.add_argument("--version", type=int, default=None, help="version number (default: the next free one)")


def run_folder(app, model, run=None):
    """The run folder: --run when given, else runs/<app>/<model>."""
    return run or os.path.join(RUNS, app, model)


def trained_run_folder(app, args, default_model):
    """The run folder evaluate/export/predict read: --run, else runs/<app>/<--model>. A --run that holds a run of
    another model than --model names is refused in one line (it would evaluate the wrong network)."""
    run_dir = run_folder(app, args.model or default_model, args.run)
    if args.model and args.run:
        from core import training

        recorded = training.load_config(run_dir).get("model")
        if recorded != args.model:
            raise UserError(f"--run {run_dir} holds a {recorded} run, not {args.model}: pass the --run DIR of a "
                            f"{args.model} run, or leave out --model")
    return run_dir


def check_values(config_class, values, where):
    """`values` (setting -> value) checked and converted as the flags of `config_class` are: one line naming
    `where` on an unknown setting, a wrong type, a value out of range or not among the choices."""
    hints = typing.get_type_hints(config_class)
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"{where} has settings this command does not know: {', '.join(unknown)} "
                        f"(known: {', '.join(fields)})")
    checked = {}
    for name, value in values.items():
        scalar, is_tuple, optional = _base_type(hints[name])
        meta, flag = fields[name].metadata, _flag(fields[name])
        if value is None and optional:
            checked[name] = None
            continue
        items = list(value) if is_tuple and isinstance(value, (list, tuple)) else [value]
        if is_tuple and not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: {flag} must be a list, got {value!r}")
        converted = []
        for item in items:
            if scalar is float and isinstance(item, int) and not isinstance(item, bool):
                item = float(item)
            if not isinstance(item, scalar) or (scalar is int and isinstance(item, bool)):
                raise UserError(f"{where}: {flag} must be {scalar.__name__}, got {item!r}")
            if meta.get("choices") and item not in meta["choices"]:
                raise UserError(f"{where}: {flag} must be one of {', '.join(map(str, meta['choices']))}, "
                                f"got {item!r}")
            if meta.get("minimum") is not None and item < meta["minimum"]:
                raise UserError(f"{where}: {flag} must be at least {meta['minimum']}, got {item}")
            if meta.get("maximum") is not None and item > meta["maximum"]:
                raise UserError(f"{where}: {flag} must be at most {meta['maximum']}, got {item}")
            converted.append(item)
        checked[name] = tuple(converted) if is_tuple else converted[0]
    return checked


def read_config_file(config_class, path):
    """The values in JSON file `path` for `config_class` (checked: types, ranges, unknown keys).

    A run's own config.json (it carries `RUN_MARKER`, written by `run_config`) also records what the run found
    out (input shape, class names, ...): its keys that are not settings are skipped. In a hand-written file an
    unknown key is a typo, and an error."""
    from core.training import read_json_object

    values = read_json_object(path, "config (a JSON object)")
    names = {f.name for f in dataclasses.fields(config_class)}
    written_by_a_run = RUN_MARKER in values
    values = {k: v for k, v in values.items() if not k.startswith("_") and (k in names or not written_by_a_run)}
    return check_values(config_class, values, path)


RUN_MARKER = "_app"


def run_config(config, app, **recorded):
    """What `train` saves as the run's config.json: every setting of `config`, the app's name (RUN_MARKER: the
    file is a run's, so `--config` skips the `recorded` facts in it) and `recorded` (shapes, class names)."""
    return {**config_dict(config), RUN_MARKER: app, **recorded}


def resolve_config(config_class, args, base=None):
    """config_class from: its defaults < `base` (a dict, e.g. a preset) < args.config (a file) < the flags typed."""
    values = {}
    if base:
        values.update(check_values(config_class, base, "the preset"))
    if getattr(args, "config", None):
        values.update(read_config_file(config_class, args.config))
    names = {f.name for f in dataclasses.fields(config_class)}
    values.update(check_values(config_class, {k: v for k, v in vars(args).items() if k in names},
                                "the command line"))
    return config_class(**values)


def config_dict(config):
    """The config as JSON-ready values (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
