"""Deployment CLI: TF Serving config, the local server, a client, TFLite tools.

    python -m serving config  [--root saved_models] [--policy classify_vgg=latest:2] [--export-missing]
    python -m serving serve   [--config saved_models/models.config] [--rest-port 8501] [--grpc-port 8500]
    python -m serving client  --model classify --image shirt.png [--protocol grpc]
    python -m serving tflite  [--root saved_models]      # size / parity / accuracy / latency table
    python -m serving tflite-run model.tflite inputs...  # LiteRT + NumPy only
"""

import argparse
import os
import subprocess
import sys

from core.errors import UserError, run_cli

COMPOSE = """\
# TensorFlow Serving for every app in saved_models/ (written by `python -m serving config`).
#   docker compose -f deploy/docker-compose.yml up
# REST on http://localhost:8501/v1/models/<app>, gRPC on localhost:8500.
services:
  tf-serving:
    image: {image}  # the TensorFlow Serving release of the TensorFlow that exported the models
    ports:
      - "127.0.0.1:8501:8501"
      - "127.0.0.1:8500:8500"
    volumes:
      - ../saved_models:/models:ro
    command:
      - --model_config_file=/models/models.config
      - --model_config_file_poll_wait_seconds=60
      - --file_system_poll_wait_seconds=1
    restart: unless-stopped
"""


def _parser():
    parser = argparse.ArgumentParser(prog="serving", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("config", help="write models.config + docker-compose.yml for every exported app")
    p.add_argument("--root", default="saved_models")
    p.add_argument("--policy", action="append", default=[], metavar="APP=POLICY",
                   help="latest[:N] (default latest:1), all, or specific:V1,V2")
    p.add_argument("--compose", default="deploy/docker-compose.yml")
    p.add_argument("--export-missing", action="store_true",
                   help="export every trained run (runs/<app>/<name>/) that has no export yet")

    p = sub.add_parser("serve", help="the local server with TF Serving's REST and gRPC APIs")
    p.add_argument("--config", default="saved_models/models.config")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback only)")
    p.add_argument("--rest-port", type=int, default=8501)
    p.add_argument("--grpc-port", type=int, default=8500, help="-1 to turn gRPC off")
    p.add_argument("--poll-seconds", "--file_system_poll_wait_seconds", type=float, default=1.0,
                   help="how often to look for new versions")
    p.add_argument("--config-poll-seconds", "--model_config_file_poll_wait_seconds", type=float,
                   help="how often to re-read models.config (default: --poll-seconds; 0: never)")
    p.add_argument("--max-body-mb", type=float, default=8.0, help="largest request body / gRPC message")
    p.add_argument("--max-concurrency", type=int, default=8, help="model calls running at once")
    p.add_argument("--max-connections", type=int, default=64,
                   help="REST connections kept open (above it, stalled ones are closed; 503 at twice it) / "
                        "concurrent gRPC calls (RESOURCE_EXHAUSTED beyond)")
    p.add_argument("--max-batch", type=int, default=256)
    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a client has to send a request's headers (then 408, connection closed)")
    p.add_argument("--body-timeout", type=float, default=30.0,
                   help="seconds a client has to send a request's body, and to read a response")
    p.add_argument("--drain-seconds", type=float, default=30.0,
                   help="on SIGTERM/SIGINT, how long requests in flight may take to finish")
    p.add_argument("--container-root", default="/models", help="base paths under it map to the config's folder")
    p.add_argument("--enable-batching", "--enable_batching", action="store_true",
                   help="server-side batching of concurrent requests (off by default, as in TF Serving)")
    p.add_argument("--batching-parameters-file", "--batching_parameters_file", default=None, metavar="FILE",
                   help="TF Serving's BatchingParameters text file (max_batch_size, batch_timeout_micros, "
                        "num_batch_threads, max_enqueued_batches, allowed_batch_sizes); default: "
                        "serving.batching's defaults")

    p = sub.add_parser("client", help="ask a TF Serving (real or local) about a model")
    p.add_argument("--model", required=True)
    p.add_argument("--image", action="append", default=[], help="PNG/JPEG (repeatable)")
    p.add_argument("--npy", help="a batch of inputs as .npy, for a single-input model")
    p.add_argument("--protocol", choices=["rest", "grpc"], default="rest")
    p.add_argument("--url", default="http://127.0.0.1:8501")
    p.add_argument("--target", default="127.0.0.1:8500")
    p.add_argument("--version", type=int)
    p.add_argument("--label")
    p.add_argument("--signature", default="serving_default")
    p.add_argument("--labels", help="class names, one a line (default: the export's labels.txt when local)")
    p.add_argument("--resize", action="store_true")
    p.add_argument("--top", type=int, default=3)
    p.add_argument("--status", action="store_true", help="print the model's version status")
    p.add_argument("--metadata", action="store_true", help="print the signature")

    p = sub.add_parser("tflite", help="table of TFLite files vs the SavedModel for every app")
    p.add_argument("--root", default="saved_models")
    p.add_argument("--apps", nargs="*")
    p.add_argument("--limit", type=int, default=2000, help="test examples for accuracy")
    p.add_argument("--latency-runs", type=int, default=200)
    p.add_argument("--dataset", action="append", default=[], metavar="APP=DATASET",
                   help="test set for an app's accuracy (default: matched by class names)")

    sub.add_parser("tflite-run", help="run a .tflite file with LiteRT and NumPy only", add_help=False)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["tflite-run"]:
        from core import tflite_run
        try:
            return tflite_run.main(argv[1:])
        except tflite_run.RunnerError as error:
            raise UserError(str(error)) from None
    args = _parser().parse_args(argv)
    if args.command == "config":
        return config_command(args)
    if args.command == "serve":
        if not os.path.isfile(args.config):  # before importing TensorFlow: a second, not ten
            raise UserError(f"{args.config} not found; run `python -m serving config` (make serve) first")
        for flag, port in (("--rest-port", args.rest_port), ("--grpc-port", args.grpc_port)):
            if not (0 <= port <= 65535 or (flag == "--grpc-port" and port == -1)):
                raise UserError(f"{flag} must be a port number 0-65535{' or -1' if 'grpc' in flag else ''}, "
                                f"got {port}")
        for flag, value in (("--max-concurrency", args.max_concurrency), ("--max-connections", args.max_connections),
                            ("--max-batch", args.max_batch), ("--max-body-mb", args.max_body_mb),
                            ("--poll-seconds", args.poll_seconds), ("--header-timeout", args.header_timeout),
                            ("--body-timeout", args.body_timeout), ("--drain-seconds", args.drain_seconds)):
            if value <= 0:
                raise UserError(f"{flag} must be positive, got {value}")
        if args.config_poll_seconds is not None and args.config_poll_seconds < 0:
            raise UserError(f"--config-poll-seconds must be 0 or more, got {args.config_poll_seconds}")
        batching_parameters = read_batching_parameters(args)
        from serving import server
        limit = int(args.max_body_mb * (1 << 20))
        server.serve(args.config, host=args.host, rest_port=args.rest_port, grpc_port=args.grpc_port,
                     poll_seconds=args.poll_seconds, config_poll_seconds=args.config_poll_seconds,
                     container_root=args.container_root, max_body_bytes=limit,
                     max_concurrency=args.max_concurrency, max_connections=args.max_connections,
                     max_batch=args.max_batch, header_timeout=args.header_timeout,
                     body_timeout=args.body_timeout, drain_seconds=args.drain_seconds,
                     batching_parameters=batching_parameters)
        return 0
    if args.command == "client":
        return client_command(args)
    if args.command == "tflite":
        if args.limit < 1 or args.latency_runs < 1:
            raise UserError(f"--limit and --latency-runs must be at least 1 (got {args.limit}, {args.latency_runs})")
        bad = [item for item in args.dataset if "=" not in item]
        if bad:
            raise UserError(f"--dataset takes APP=DATASET, got '{bad[0]}'")
        from serving import tflite_report
        datasets = dict(item.split("=", 1) for item in args.dataset)
        tflite_report.main(args.root, apps=args.apps, limit=args.limit, latency_runs=args.latency_runs,
                           datasets=datasets)
        return 0


def runs_without_export(root, runs="runs"):
    """Every trained run (`runs/<app>/<name>/config.json` written by an app's `train`: it names its app) that has
    no export yet under `root`: [(app, run folder)]. An app exports a run to `<root>/<app>_<model or task>...`
    (core.export.export_folder), so an export folder with that prefix means the run was exported."""
    import json

    exported = set(os.listdir(root)) if os.path.isdir(root) else set()
    missing = []
    for app in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
        for name in sorted(os.listdir(os.path.join(runs, app))):
            run_dir = os.path.join(runs, app, name)
            try:
                with open(os.path.join(run_dir, "config.json")) as f:
                    config = json.load(f)
            except (OSError, ValueError):
                continue  # not a run folder (figures, a study), or a damaged one: its app reports that itself
            if not isinstance(config, dict) or config.get("_app") != app:
                continue
            prefixes = [f"{app}_{config[key]}" for key in ("task", "model") if isinstance(config.get(key), str)]
            if prefixes and not any(folder.startswith(tuple(prefixes)) for folder in exported):
                missing.append((app, run_dir))
    return missing


def export_missing_runs(root):
    """`python -m apps.<app> export --run DIR` for every run without an export; a failed one is a note."""
    for app, run_dir in runs_without_export(root):
        print(f"exporting {run_dir} (python -m apps.{app} export --run {run_dir})")
        result = subprocess.run([sys.executable, "-m", f"apps.{app}", "export", "--run", run_dir])
        if result.returncode != 0:
            print(f"note: {run_dir}: export failed (exit {result.returncode}); serving the others")


def read_batching_parameters(args):
    """The BatchingParameters of --enable-batching (from --batching-parameters-file when given), else None."""
    from serving import batching

    if args.batching_parameters_file and not args.enable_batching:
        raise UserError("--batching-parameters-file needs --enable-batching")
    if not args.enable_batching:
        return None
    if not args.batching_parameters_file:
        return batching.BatchingParameters()
    try:
        with open(args.batching_parameters_file, encoding="utf-8") as f:
            return batching.parse_parameters(f.read())
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {args.batching_parameters_file}: {error}") from None
    except ValueError as error:
        raise UserError(f"{args.batching_parameters_file}: {error}") from None


def config_command(args):
    from serving import config as config_lib

    if args.export_missing:
        export_missing_runs(args.root)
    folders = config_lib.model_paths(args.root)
    apps = list(folders)
    if not apps:
        raise UserError(f"no exported app under {args.root}/; run an app's export first (e.g. make classify)")
    policies = {}
    for item in args.policy:
        app, _, policy = item.partition("=")
        if app not in apps:
            raise UserError(f"--policy names '{app}', which has no export under {args.root}/ ({', '.join(apps)})")
        policies[app] = policy
    path = config_lib.write_config(os.path.join(args.root, config_lib.CONFIG_NAME),
                                   config_lib.build_config(folders, policies=policies))
    os.makedirs(os.path.dirname(os.path.abspath(args.compose)), exist_ok=True)
    with open(args.compose, "w") as f:
        f.write(COMPOSE.format(image=config_lib.SERVING_IMAGE))
    for app in apps:
        versions = config_lib.list_versions(os.path.join(args.root, folders[app]))
        print(f"  {app}: versions {versions}, policy {policies.get(app, 'latest:1')}")
    print(f"wrote {path}\nwrote {args.compose}")
    print("TensorFlow Serving (official image), REST on 8501 and gRPC on 8500:")
    print("  " + config_lib.docker_run_line(args.root))
    print(f"or: docker compose -f {args.compose} up")
    print(f"or the local server: python -m serving serve --config {path}")
    return 0


def client_command(args):
    import json

    import numpy as np

    from serving.client import GrpcClient, RestClient, ServingClientError

    if args.top < 1:
        raise UserError(f"--top must be at least 1, got {args.top}")
    # Local files are checked before the server is asked anything: a bad file is not a network error.
    npy_batch = None
    if args.npy:
        if not os.path.isfile(args.npy):
            raise UserError(f"--npy file not found: {args.npy}")
        from core.tflite_run import RunnerError, load_npy  # NumPy only: no TensorFlow start-up

        try:
            npy_batch = load_npy(args.npy)
        except RunnerError as error:
            raise UserError(str(error)) from None
    missing = [p for p in args.image if not os.path.isfile(p)]
    if missing:
        raise UserError(f"image not found: {missing[0]}")
    rest = RestClient(args.url) if args.protocol == "rest" else None
    grpc_client = GrpcClient(args.target) if args.protocol == "grpc" else None
    try:
        if args.status:
            if rest:
                print(json.dumps(rest.status(args.model, args.version, args.label), indent=2))
            else:
                print(grpc_client.status(args.model, args.version, args.label))
            return 0
        meta_client = rest or RestClient(args.url)
        if grpc_client:
            version, signatures = grpc_client.metadata(args.model, args.version, args.label)
            signature = signatures.signature_def[args.signature]
            inputs = {k: (v.dtype, [d.size for d in v.tensor_shape.dim]) for k, v in signature.inputs.items()}
        else:
            meta = meta_client.metadata(args.model, args.version, args.label)
            version = int(meta["model_spec"]["version"])
            signature = meta["metadata"]["signature_def"]["signature_def"][args.signature]
            inputs = {k: (v["dtype"], [int(d["size"]) for d in v["tensor_shape"]["dim"]])
                      for k, v in signature["inputs"].items()}
        if args.metadata:
            print(signature if grpc_client else json.dumps(signature, indent=2))
            return 0
        if not args.image and not args.npy:
            raise UserError("pass --image FILE (repeatable) or --npy FILE, or --status / --metadata")
        if len(inputs) != 1:
            raise UserError(f"model {args.model} takes inputs {sorted(inputs)}; this CLI sends one")
        (alias, (dtype, shape)), = inputs.items()
        if args.npy:
            batch = npy_batch
        else:
            from core.images import read_image
            batch = np.stack([read_image(p, tuple(shape[1:]), args.resize) for p in args.image])
        send_dtype = np.int32 if str(dtype) in ("DT_INT32", "3") else np.float32
        batch = batch.astype(send_dtype)
        kwargs = dict(version=args.version, label=args.label, signature_name=args.signature)
        outputs = (rest or grpc_client).predict(args.model, {alias: batch}, **kwargs)
    except ServingClientError as error:
        raise UserError(f"server answered {error.status}: {error.message}") from None
    except OSError as error:
        raise UserError(f"cannot reach the server: {error}") from None
    finally:
        if rest:
            rest.close()
        if grpc_client:
            grpc_client.close()
    labels_path = args.labels or os.path.join("saved_models", args.model, str(version), "assets.extra", "labels.txt")
    labels = open(labels_path).read().split("\n") if os.path.isfile(labels_path) else None
    from core.tflite_run import print_outputs

    print_outputs(outputs, args.image, labels, args.top)
    return 0


if __name__ == "__main__":
    run_cli(main, prog="serving")
