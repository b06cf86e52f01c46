"""models.config: TF Serving's `ModelServerConfig` in its text-proto format.

The file is read and written with the official protos from
`tensorflow-serving-api` (`tensorflow_serving.config.model_server_config_pb2`),
so the real `tensorflow_model_server --model_config_file=...` and the local
server in this package read exactly the same file.

Base paths: the config written by `write_config` names each model's folder
as the official container sees it (`/models/<app>`, with `saved_models/`
mounted on `/models`). The local server maps a base path under
`container_root` (default `/models`) to the folder holding models.config,
so one file serves both. Any other base path must be an existing absolute
folder; a request never names a path, only a configured model.
"""

import os
import re
from dataclasses import dataclass, field

from google.protobuf import text_format
from google.protobuf.message import DecodeError

from core.errors import UserError

CONFIG_NAME = "models.config"
CONTAINER_ROOT = "/models"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass
class ModelSpec:
    """One entry of model_config_list, with its folder resolved on this machine."""
    name: str
    base_path: str          # as written in the config
    local_path: str         # where it is on this machine
    policy: str = "latest"  # "latest", "all" or "specific"
    num_versions: int = 1   # for "latest"
    versions: tuple = ()    # for "specific"
    labels: dict = field(default_factory=dict)  # version label -> version

    def wanted(self, available):
        """The versions this policy serves, out of the integer versions on disk."""
        available = sorted(set(available))
        if self.policy == "all":
            return available
        if self.policy == "specific":
            return [v for v in available if v in self.versions]
        return available[-max(1, self.num_versions):]


def _pb2():
    from tensorflow_serving.config import model_server_config_pb2
    return model_server_config_pb2


def discover_apps(root, max_depth=3):
    """Model names of every folder under `root` with integer SavedModel versions:
    `saved_models/classify_vgg` -> "classify_vgg", `saved_models/team/model` -> "team_model"
    (`model_paths` gives the folder of each). `tflite/` folders are skipped."""
    return list(model_paths(root, max_depth))


def model_paths(root, max_depth=3):
    """{model name: folder relative to root}, sorted by name."""
    found = {}

    def walk(relative, depth):
        folder = os.path.join(root, relative) if relative else root
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return
        for name in names:
            child = os.path.join(relative, name) if relative else name
            if name == "tflite" or name.startswith(".") or not _NAME.match(name) or re.fullmatch(r"\d+", name):
                continue
            if not os.path.isdir(os.path.join(root, child)):
                continue
            if list_versions(os.path.join(root, child)):
                found[child.replace(os.sep, "_")] = child.replace(os.sep, "/")
            elif depth < max_depth:
                walk(child, depth + 1)

    if os.path.isdir(root):
        walk("", 1)
    return dict(sorted(found.items()))


def list_versions(folder):
    """Integer version folders that hold a complete SavedModel."""
    if not os.path.isdir(folder):
        return []
    return sorted(int(n) for n in os.listdir(folder)
                  if re.fullmatch(r"\d+", n) and os.path.isfile(os.path.join(folder, n, "saved_model.pb")))


def build_config(apps, *, container_root=CONTAINER_ROOT, policies=None):
    """A ModelServerConfig proto for `apps`: names (folder = name) or a dict
    name -> folder relative to the models root. `policies` maps a name to
    "latest", "latest:N", "all" or "specific:1,2" (default: latest 1, as TF Serving)."""
    pb2 = _pb2()
    config = pb2.ModelServerConfig()
    folders = apps if isinstance(apps, dict) else {app: app for app in apps}
    for app, folder in folders.items():
        entry = config.model_config_list.config.add()
        entry.name = app
        entry.base_path = f"{container_root.rstrip('/')}/{folder}"
        entry.model_platform = "tensorflow"
        policy = (policies or {}).get(app, "latest")
        kind, _, arg = policy.partition(":")
        if kind == "latest":
            entry.model_version_policy.latest.num_versions = int(arg or 1)
        elif kind == "all":
            entry.model_version_policy.all.SetInParent()
        elif kind == "specific":
            entry.model_version_policy.specific.versions.extend(int(v) for v in arg.split(",") if v)
        else:
            raise UserError(f"unknown version policy '{policy}'; use latest[:N], all or specific:V1,V2")
    return config


def write_config(path, config):
    text = text_format.MessageToString(config)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)  # the server polls the file: it sees the old or the new one, whole
    return path


def parse_config(text):
    pb2 = _pb2()
    try:
        return text_format.Parse(text, pb2.ModelServerConfig())
    except (text_format.ParseError, DecodeError) as error:
        raise UserError(f"models.config is not a valid ModelServerConfig: {error}") from None


def read_config(path, *, container_root=CONTAINER_ROOT):
    """Parse `path` into a list of ModelSpec, resolving base paths for this machine."""
    if not os.path.isfile(path):
        raise UserError(f"model config not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as error:  # a binary file: not the text format TF Serving reads
        raise UserError(f"models.config is not a valid ModelServerConfig: not UTF-8 text ({error.reason} "
                        f"at byte {error.start})") from None
    config = parse_config(text)
    return specs_from_proto(config, os.path.dirname(os.path.abspath(path)), container_root=container_root)


def specs_from_proto(config, config_dir, *, container_root=CONTAINER_ROOT):
    if config.WhichOneof("config") != "model_config_list":
        raise UserError("models.config must hold a model_config_list")
    specs, seen = [], set()
    for entry in config.model_config_list.config:
        if not _NAME.match(entry.name) or entry.name in seen:
            raise UserError(f"bad or repeated model name in config: '{entry.name}'")
        seen.add(entry.name)
        if entry.model_platform not in ("", "tensorflow"):
            raise UserError(f"model {entry.name}: platform '{entry.model_platform}' is not supported")
        specs.append(ModelSpec(name=entry.name, base_path=entry.base_path,
                               local_path=resolve_base_path(entry.base_path, config_dir, container_root),
                               **_policy(entry), labels=dict(entry.version_labels)))
    return specs


def _policy(entry):
    which = entry.model_version_policy.WhichOneof("policy_choice")
    if which == "all":
        return {"policy": "all"}
    if which == "specific":
        return {"policy": "specific", "versions": tuple(entry.model_version_policy.specific.versions)}
    if which == "latest":
        return {"policy": "latest", "num_versions": entry.model_version_policy.latest.num_versions or 1}
    return {"policy": "latest", "num_versions": 1}


def resolve_base_path(base_path, config_dir, container_root=CONTAINER_ROOT):
    root = container_root.rstrip("/") + "/"
    if base_path.startswith(root):
        relative = base_path[len(root):]
        if ".." in relative.split("/"):
            raise UserError(f"base_path '{base_path}' leaves {container_root}")
        return os.path.join(config_dir, relative)
    if not os.path.isabs(base_path):
        return os.path.normpath(os.path.join(config_dir, base_path))
    return base_path


# The TensorFlow Serving release of the TensorFlow that writes the exports (requirements.txt): an older server
# may lack ops the exports use, and `latest` changes under a deployment without notice.
SERVING_IMAGE = "tensorflow/serving:2.21.0"


def docker_run_line(saved_models_dir, config_name=CONFIG_NAME, image=SERVING_IMAGE):
    """The `docker run` line for the official image serving every app in models.config."""
    source = os.path.abspath(saved_models_dir)
    return (f"docker run --rm -p 127.0.0.1:8501:8501 -p 127.0.0.1:8500:8500 "
            f"--mount type=bind,source={source},target={CONTAINER_ROOT},readonly "
            f"{image} --model_config_file={CONTAINER_ROOT}/{config_name} "
            f"--model_config_file_poll_wait_seconds=60 --file_system_poll_wait_seconds=1")
