"""models.config in TF Serving's text format, version policies, the `config` command (no TensorFlow)."""

import os

import pytest

from conftest import run_python
from core.errors import UserError
from serving import config as config_lib


def test_config_round_trip_and_policies(tmp_path):
    for app, versions in (("classify", (1, 2, 3)), ("other", (4,)), ("rl/dqn", (1,))):
        for v in versions:
            os.makedirs(tmp_path / app / str(v))
            (tmp_path / app / str(v) / "saved_model.pb").write_bytes(b"")
    os.makedirs(tmp_path / "classify" / ".tmp-9")          # half-written export: not a version
    os.makedirs(tmp_path / "classify" / "tflite" / "3")     # TFLite files: not a version
    os.makedirs(tmp_path / "classify" / "7")                # no saved_model.pb yet: not a version
    assert config_lib.discover_apps(str(tmp_path)) == ["classify", "other", "rl_dqn"]
    assert config_lib.model_paths(str(tmp_path))["rl_dqn"] == "rl/dqn"   # nested exports are found too
    assert config_lib.list_versions(str(tmp_path / "classify")) == [1, 2, 3]

    proto = config_lib.build_config(["classify", "other"], policies={"classify": "latest:2", "other": "all"})
    path = config_lib.write_config(str(tmp_path / "models.config"), proto)
    text = open(path).read()
    assert 'base_path: "/models/classify"' in text and "num_versions: 2" in text and "all {" in text
    specs = config_lib.read_config(path)
    assert [s.name for s in specs] == ["classify", "other"]
    assert specs[0].local_path == str(tmp_path / "classify")
    assert specs[0].wanted([1, 2, 3]) == [2, 3] and specs[1].wanted([4, 1]) == [1, 4]
    specific = config_lib.build_config(["classify"], policies={"classify": "specific:1,3"})
    (spec,) = config_lib.specs_from_proto(specific, str(tmp_path))
    assert spec.wanted([1, 2, 3]) == [1, 3] and spec.wanted([2]) == []


def test_config_rejects_bad_input(tmp_path):
    with pytest.raises(UserError, match="not a valid ModelServerConfig"):
        config_lib.parse_config("model_config_list { config { nme: 'x' } }")
    with pytest.raises(UserError, match="leaves /models"):
        config_lib.resolve_base_path("/models/../etc", str(tmp_path))
    with pytest.raises(UserError, match="unknown version policy"):
        config_lib.build_config(["a"], policies={"a": "newest"})
    bad = config_lib.parse_config('model_config_list { config { name: "../x" base_path: "/models/x" } }')
    with pytest.raises(UserError, match="bad or repeated model name"):
        config_lib.specs_from_proto(bad, str(tmp_path))


def test_config_command_writes_config_compose_and_docker_line(tmp_path):
    root = tmp_path / "saved_models"
    os.makedirs(root / "classify" / "1")
    (root / "classify" / "1" / "saved_model.pb").write_bytes(b"")
    os.makedirs(root / "rl" / "dqn" / "2")
    (root / "rl" / "dqn" / "2" / "saved_model.pb").write_bytes(b"")
    compose = tmp_path / "deploy" / "docker-compose.yml"
    result = run_python(["-m", "serving", "config", "--root", str(root), "--compose", str(compose),
                         "--policy", "classify=latest:2"], timeout=60)
    assert result.returncode == 0, result.stderr
    assert "docker run --rm -p 127.0.0.1:8501:8501 -p 127.0.0.1:8500:8500" in result.stdout
    assert f"source={root},target=/models,readonly tensorflow/serving" in result.stdout
    assert "--model_config_file=/models/models.config" in result.stdout
    assert "../saved_models:/models:ro" in compose.read_text()
    # the image is pinned to the serving release of the TensorFlow that wrote the exports, never `latest`
    import tensorflow as tf

    assert f"image: tensorflow/serving:{tf.__version__}  #" in compose.read_text()
    assert f"readonly tensorflow/serving:{tf.__version__} " in result.stdout
    spec, nested = config_lib.read_config(str(root / "models.config"))
    assert spec.policy == "latest" and spec.num_versions == 2
    assert (nested.name, nested.base_path, nested.local_path) == ("rl_dqn", "/models/rl/dqn", str(root / "rl" / "dqn"))

    result = run_python(["-m", "serving", "config", "--root", str(tmp_path / "empty")], timeout=60)
    assert result.returncode == 2 and "no exported app" in result.stderr


def test_export_missing_finds_every_apps_runs_without_an_export(tmp_path):
    """`make serve` exports what is missing for every app: a run folder written by an app's train (its
    config.json names the app) whose `<app>_<model or task>` export does not exist yet."""
    import json

    from serving.__main__ import runs_without_export

    runs, root = tmp_path / "runs", tmp_path / "saved_models"

    def run(app, name, **config):
        os.makedirs(runs / app / name)
        (runs / app / name / "config.json").write_text(json.dumps(config))

    run("classify", "lenet5", _app="classify", model="lenet5")      # exported below
    run("classify", "vgg", _app="classify", model="vgg")            # not exported
    run("sequence", "dates", _app="sequence", task="dates", model="bahdanau")  # exported as sequence_dates_bahdanau
    run("rl", "dqn", _app="rl", task="dqn")                         # not exported
    run("segment", "unet", model="unet")                            # no app marker: not written by train
    run("detect", "ssd", _app="detect", model="ssd")
    (runs / "detect" / "ssd" / "config.json").write_text("{trunc")   # damaged: its app says so, not serving
    os.makedirs(runs / "basics" / "figures")                          # not a run folder
    for name in ("classify_lenet5", "sequence_dates_bahdanau"):
        os.makedirs(root / name / "1")
    assert runs_without_export(str(root), runs=str(runs)) == [
        ("classify", str(runs / "classify" / "vgg")), ("rl", str(runs / "rl" / "dqn"))]
