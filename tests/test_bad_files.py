"""Every CLI refuses a bad input file in one line: exit status 2, one line on stderr, no traceback.

One table, CLI x file kind. Each file input of each CLI (a run folder's model.keras and
config.json, an image, a .npy array, a .tflite file, a SavedModel folder, an .h5 weights file,
the server's models.config) is given files that are

  empty        0 bytes
  truncated    the first part of a good file of that kind (a kill mid-copy)
  text         a text file where a binary one belongs
  binary       random bytes where text (JSON, a text proto) belongs
  wrong kind   a whole, valid file that is not what the CLI needs: a JSON list or an object
               without the run's keys, a Keras model of another shape, a PNG named .npy, a
               SavedModel or .tflite file of another model, a pickled object array

The cases run in this process through the `run_cli(main, argv, prog)` the modules' `__main__`
blocks call (a subprocess would cost ~15 s of TensorFlow import each). The bad inputs rejected
before TensorFlow loads, and a few of the kinds here, are in tests/test_cli_errors.py; this
table does not repeat them.
"""

import io
import json
import os
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image
from test_cli_errors import error_lines

from core.errors import run_cli

CLASS_NAMES = [str(i) for i in range(10)]
CLASSIFY = dict(app="classify", model="lenet5", dataset="fashion_mnist", val_fraction=0.1, seed=0, limit=None,
                class_names=CLASS_NAMES, image_shape=[28, 28, 1])
DETECT = dict(app="detect", model="ssd", dataset="fashion_mnist_96", image_size=96, class_names=CLASS_NAMES)
SEGMENT = dict(app="segment", model="unet", dataset="fashion_mnist_96", image_shape=[96, 96, 1],
               class_names=["background"] + CLASS_NAMES)
GENERATIVE = dict(_app="generative", model="ae", family="autoencoder", dataset="fashion_mnist", latent_dim=2,
                  val_fraction=0.1, seed=0, limit=None, class_names=CLASS_NAMES, image_shape=[28, 28, 1])
TEXTCLASS = dict(app="sequence", task="textclass", model="bag", sequence_length=8, class_names=["a", "b"],
                 vocab=["", "[UNK]", "the"])
CHARLM = dict(app="sequence", task="charlm", cell="lstm", units=8, num_layers=1, vocab=["a", "b"])
DATES = dict(app="sequence", task="dates", model="bahdanau", vocab=["", "[UNK]", "1"])
DQN = dict(env="CartPole-v1", network="mlp", hidden=8, num_envs=1, buffer_size=64, batch_size=8)
MCTS = dict(task="mcts", simulations=10, c_puct=1.5, input_shape=[9])


def _png(size=(28, 28), mode="L", seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3 if mode == "RGB" else 1), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze()).save(buffer, format="PNG")
    return buffer.getvalue()


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _half(data):
    return data[:len(data) // 2]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{name: path} of the bad files and of run folders holding them."""
    import keras

    from apps.classify.models import build_model
    from core import export

    root = tmp_path_factory.mktemp("bad_files")
    paths = {"root": str(root)}

    def write(name, data):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        paths[name.replace("/", "_").replace(".", "_")] = str(path)
        return str(path)

    text = "these are notes, not the file you wanted\n"
    binary = bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8))

    # Images: 28x28 grey (what LeNet-5 takes), and broken ones.
    png = _png()
    write("ok.png", png)
    write("big.png", _png((64, 64)))
    for suffix in ("png", "npy", "keras", "tflite", "h5", "json", "config"):
        write(f"empty.{suffix}", b"")
        write(f"text.{suffix}", text)
    write("truncated.png", _half(_png((64, 64), "RGB")))
    write("npy_as.png", _npy(np.zeros((28, 28), np.float32)))

    # Arrays.
    good_npy = _npy(np.zeros((4, 3), np.float32))
    write("ok.npy", good_npy)
    write("truncated.npy", good_npy[:len(good_npy) - 8])
    write("objects.npy", _npy(np.array([{"a": 1}, None], dtype=object)))
    write("png_as.npy", png)

    # Keras models: LeNet-5 (what a classify run holds), one of another shape, broken ones.
    keras.utils.set_random_seed(0)
    lenet = root / "lenet5.keras"
    build_model("lenet5", (28, 28, 1), 10).save(lenet)
    write("truncated.keras", _half(lenet.read_bytes()))
    damaged = bytearray(lenet.read_bytes())  # a whole zip whose weights member has flipped bits
    middle = len(damaged) // 2
    damaged[middle:middle + 64] = bytes(255 - b for b in damaged[middle:middle + 64])
    write("damaged.keras", bytes(damaged))
    foreign = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    foreign.save(root / "foreign.keras")
    bad_zip = io.BytesIO()
    with zipfile.ZipFile(bad_zip, "w") as z:
        z.writestr("notes.txt", text)
    write("zip_as.keras", bad_zip.getvalue())

    # A SavedModel and .tflite of another model (x: (None, 3) -> y), and broken ones.
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    paths["dense_saved_model"] = export.export_saved_model(dense, str(root / "dense"), ["x"], ["y"])
    tflite = export.convert_to_tflite(str(root / "dense"), str(root / "dense.tflite"))
    paths["dense_tflite"] = tflite
    with open(tflite, "rb") as f:
        write("truncated.tflite", _half(f.read()))
    write("garbage_saved_model/saved_model.pb", binary)
    paths["garbage_saved_model"] = str(root / "garbage_saved_model")
    write("png_as.tflite", png)
    image_model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    export.export_saved_model(image_model, str(root / "image_model"), ["images"], ["scores"])
    paths["image_tflite"] = export.convert_to_tflite(str(root / "image_model"), str(root / "image.tflite"))

    # VGG19 weights (.h5): a truncated HDF5 file.
    import h5py

    with h5py.File(root / "small.h5", "w") as f:
        f.create_dataset("w", data=np.zeros((64, 64), np.float32))
    write("truncated.h5", _half((root / "small.h5").read_bytes()))

    # JSON files and the server's text-proto config.
    write("binary.json", binary)
    write("list.json", "[1, 2, 3]")
    write("object.json", json.dumps({"notes": text}))
    write("truncated.json", _half(json.dumps(CLASSIFY)))
    write("binary.config", binary)
    write("json.config", json.dumps({"model_config_list": [{"name": "classify"}]}))
    write("truncated.config", 'model_config_list {\n  config {\n    name: "classify"\n    base_pa')

    def run(name, config, model=lenet):
        """A run folder: `config` (a dict, or a path whose bytes to copy) and `model` (a path)."""
        folder = root / "runs" / name
        folder.mkdir(parents=True)
        if isinstance(config, dict):
            (folder / "config.json").write_text(json.dumps(config))
        else:
            shutil.copy(config, folder / "config.json")
        if model is not None:
            shutil.copy(model, folder / "model.keras")
        paths[f"run_{name}"] = str(folder)

    for kind in ("empty", "text", "truncated", "zip_as", "damaged"):
        run(f"classify_model_{kind}", CLASSIFY, root / f"{kind}.keras")
    for kind in ("empty", "binary", "list", "object", "truncated"):
        run(f"classify_config_{kind}", str(root / f"{kind}.json"))
    run("classify", CLASSIFY)
    run("classify_foreign", CLASSIFY, root / "foreign.keras")
    run("detect_model_empty", DETECT, root / "empty.keras")
    run("detect_config_binary", str(root / "binary.json"))
    run("detect_config_object", str(root / "object.json"))
    run("detect_foreign", DETECT, root / "foreign.keras")
    run("segment_model_truncated", SEGMENT, root / "truncated.keras")
    run("segment_config_list", str(root / "list.json"))
    run("segment_foreign", SEGMENT, root / "foreign.keras")
    run("generative_model_text", GENERATIVE, root / "text.keras")
    run("generative_config_empty", str(root / "empty.json"))
    run("generative_foreign", GENERATIVE, root / "foreign.keras")
    run("textclass_model_empty", TEXTCLASS, root / "empty.keras")
    run("textclass_config_object", {k: v for k, v in TEXTCLASS.items() if k not in ("vocab", "sequence_length")})
    run("textclass_foreign", TEXTCLASS, root / "foreign.keras")
    run("charlm_model_truncated", CHARLM, root / "truncated.keras")
    run("dates_config_binary", str(root / "binary.json"))
    run("dates_foreign", DATES, root / "foreign.keras")
    run("visualize_config_truncated", str(root / "truncated.json"))
    for kind in ("binary", "list", "empty"):
        run(f"dqn_config_{kind}", str(root / f"{kind}.json"), model=None)
    run("dqn_config_classify", CLASSIFY, model=None)
    run("mcts_model_truncated", MCTS, root / "truncated.keras")
    run("mcts_foreign", MCTS, root / "foreign.keras")

    # A DQN export whose dqn_config.json is damaged: saved_models/rl/dqn/{1/dqn_config.json, tflite/1/float.tflite}
    write("dqn_export/1/dqn_config.json", binary)
    os.makedirs(root / "dqn_export" / "tflite" / "1")
    shutil.copy(tflite, root / "dqn_export" / "tflite" / "1" / "float.tflite")
    paths["dqn_export_tflite"] = str(root / "dqn_export" / "tflite" / "1" / "float.tflite")

    paths["unwritable"] = os.path.join(write("a_file", text), "out")  # a folder under a regular file
    return paths


# (CLI, argv, words the one line must contain). {name} is a path of the `files` fixture; the comment
# before each group says which file of the CLI is bad, and how.
NOT_KERAS = "not a .keras model file"
CASES = [
    # apps.classify predict: the run's model.keras and config.json, the images, a --saved-model folder
    ("apps.classify", ["predict", "{ok_png}", "--run", "{run_classify_model_empty}"], NOT_KERAS),
    ("apps.classify", ["predict", "{ok_png}", "--run", "{run_classify_model_text}"], NOT_KERAS),
    ("apps.classify", ["predict", "{ok_png}", "--run", "{run_classify_model_truncated}"], NOT_KERAS),
    ("apps.classify", ["predict", "{ok_png}", "--run", "{run_classify_model_zip_as}"], "no config.json"),
    ("apps.classify", ["predict", "{ok_png}", "--run", "{run_classify_model_damaged}"], "cannot load"),
    ("apps.classify", ["predict", "{ok_png}", "--run", "{run_classify_foreign}"], "takes inputs of shape (3,)"),
    ("apps.classify", ["predict", "{ok_png}", "--run", "{run_classify_config_empty}"], "corrupt"),
    ("apps.classify", ["predict", "{ok_png}", "--run", "{run_classify_config_binary}"], "not UTF-8 text"),
    ("apps.classify", ["predict", "{ok_png}", "--run", "{run_classify_config_list}"], "not a JSON object"),
    ("apps.classify", ["predict", "{ok_png}", "--run", "{run_classify_config_object}"], "has no 'class_names'"),
    ("apps.classify", ["evaluate", "--run", "{run_classify_config_truncated}"], "corrupt"),
    ("apps.classify", ["predict", "{empty_png}", "--run", "{run_classify}"], "cannot read image"),
    ("apps.classify", ["predict", "{truncated_png}", "--run", "{run_classify}"], "cannot read image"),
    ("apps.classify", ["predict", "{text_png}", "--run", "{run_classify}"], "cannot read image"),
    ("apps.classify", ["predict", "{npy_as_png}", "--run", "{run_classify}"], "cannot read image"),
    ("apps.classify", ["predict", "{big_png}", "--run", "{run_classify}"], "is 64x64 pixels"),
    ("apps.classify", ["predict", "{ok_png}", "--saved-model", "{garbage_saved_model}"], "cannot load the SavedModel"),
    ("apps.classify", ["predict", "{ok_png}", "--saved-model", "{dense_saved_model}"], "not a classifier export"),
    # apps.detect predict: model.keras, config.json
    ("apps.detect", ["predict", "{ok_png}", "--run", "{run_detect_model_empty}"], NOT_KERAS),
    ("apps.detect", ["predict", "{ok_png}", "--run", "{run_detect_config_binary}"], "not UTF-8 text"),
    ("apps.detect", ["predict", "{ok_png}", "--run", "{run_detect_config_object}"], "has no 'image_size'"),
    ("apps.detect", ["predict", "{ok_png}", "--run", "{run_detect_foreign}"], "takes inputs of shape (3,)"),
    # apps.segment predict: model.keras, config.json, --saved-model
    ("apps.segment", ["predict", "{ok_png}", "--run", "{run_segment_model_truncated}"], NOT_KERAS),
    ("apps.segment", ["predict", "{ok_png}", "--run", "{run_segment_config_list}"], "not a JSON object"),
    ("apps.segment", ["predict", "{ok_png}", "--run", "{run_segment_foreign}"], "takes inputs of shape (3,)"),
    ("apps.segment", ["predict", "{ok_png}", "--saved-model", "{garbage_saved_model}"], "cannot load the SavedModel"),
    ("apps.segment", ["predict", "{ok_png}", "--saved-model", "{dense_saved_model}"], "not a segment export"),
    # apps.generative sample: model.keras, config.json
    ("apps.generative", ["sample", "--run", "{run_generative_model_text}"], NOT_KERAS),
    ("apps.generative", ["sample", "--run", "{run_generative_config_empty}"], "corrupt"),
    ("apps.generative", ["sample", "--run", "{run_generative_foreign}"], "holds a Sequential"),
    # apps.sequence: the runs of predict --task textclass/charlm/dates; --saved-model folders
    ("apps.sequence", ["predict", "--task", "textclass", "hi", "--run", "{run_textclass_model_empty}"], NOT_KERAS),
    ("apps.sequence", ["predict", "--task", "textclass", "hi", "--run", "{run_textclass_config_object}"],
     "has no 'sequence_length'"),
    ("apps.sequence", ["predict", "--task", "textclass", "hi", "--run", "{run_textclass_foreign}"],
     "takes inputs of shape (3,)"),
    ("apps.sequence", ["predict", "--task", "charlm", "ab", "--run", "{run_charlm_model_truncated}"], NOT_KERAS),
    ("apps.sequence", ["predict", "--task", "dates", "1 May 2020", "--run", "{run_dates_config_binary}"],
     "not UTF-8 text"),
    ("apps.sequence", ["predict", "--task", "dates", "1 May 2020", "--run", "{run_dates_foreign}"],
     "cannot use the model"),
    ("apps.sequence", ["predict", "--task", "textclass", "hi", "--saved-model", "{garbage_saved_model}"],
     "cannot load the SavedModel"),
    ("apps.sequence", ["predict", "--task", "textclass", "hi", "--saved-model", "{dense_saved_model}"],
     "not a text-classifier export"),
    ("apps.sequence", ["predict", "--task", "caption", "{ok_png}", "--saved-model", "{dense_saved_model}"],
     "not a captioner export"),
    # apps.style transfer: --content and --style images, --weights (.h5)
    ("apps.style", ["transfer", "--content", "{empty_png}", "--steps", "1"], "cannot read image"),
    ("apps.style", ["transfer", "--content", "{truncated_png}", "--steps", "1"], "cannot read image"),
    ("apps.style", ["transfer", "--style", "{npy_as_png}", "--steps", "1"], "cannot read image"),
    ("apps.style", ["transfer", "--features", "vgg19", "--weights", "{text_h5}", "--steps", "1"],
     "cannot load VGG19 weights"),
    ("apps.style", ["transfer", "--features", "vgg19", "--weights", "{truncated_h5}", "--steps", "1"],
     "cannot load VGG19 weights"),
    ("apps.style", ["transfer", "--features", "vgg19", "--weights", "{empty_h5}", "--steps", "1"],
     "cannot load VGG19 weights"),
    # apps.visualize: --images, the --run folder (a run or a SavedModel)
    ("apps.visualize", ["saliency", "--run", "{run_classify}", "--images", "{truncated_png}"], "cannot read image"),
    ("apps.visualize", ["saliency", "--run", "{run_classify}", "--images", "{empty_png}"], "cannot read image"),
    ("apps.visualize", ["kernels", "--run", "{run_classify_model_text}"], NOT_KERAS),
    ("apps.visualize", ["kernels", "--run", "{run_visualize_config_truncated}"], "corrupt"),
    ("apps.visualize", ["saliency", "--run", "{run_classify_foreign}"], "takes inputs of shape (3,)"),
    ("apps.visualize", ["saliency", "--run", "{garbage_saved_model}"], "cannot load the SavedModel"),
    # apps.rl dqn: the run's config.json, --tflite, the export's dqn_config.json, an unwritable --run
    ("apps.rl", ["evaluate", "--task", "dqn", "--run", "{run_dqn_config_binary}"], "not UTF-8 text"),
    ("apps.rl", ["evaluate", "--task", "dqn", "--run", "{run_dqn_config_list}"], "not a JSON object"),
    ("apps.rl", ["evaluate", "--task", "dqn", "--run", "{run_dqn_config_empty}"], "corrupt"),
    ("apps.rl", ["evaluate", "--task", "dqn", "--run", "{run_dqn_config_classify}"], "not a DQN run's config"),
    ("apps.rl", ["play", "--task", "dqn", "--tflite", "{text_tflite}", "--env", "CartPole-v1"], "cannot load"),
    ("apps.rl", ["play", "--task", "dqn", "--tflite", "{empty_tflite}", "--env", "CartPole-v1"], "cannot load"),
    ("apps.rl", ["play", "--task", "dqn", "--tflite", "{truncated_tflite}", "--env", "CartPole-v1"], "cannot load"),
    ("apps.rl", ["play", "--task", "dqn", "--tflite", "{dense_tflite}", "--env", "CartPole-v1"], "not a DQN policy"),
    ("apps.rl", ["play", "--task", "dqn", "--tflite", "{dqn_export_tflite}"], "not UTF-8 text"),
    ("apps.rl", ["train", "--task", "dqn", "--preset", "cartpole", "--steps", "10", "--run", "{unwritable}"],
     "cannot write to the output folder"),
    # apps.segment crf --from-run: the run's model.keras and config.json
    ("apps.segment", ["crf", "--from-run", "{run_segment_model_truncated}"], NOT_KERAS),
    ("apps.segment", ["crf", "--from-run", "{run_segment_config_list}"], "not a JSON object"),
    ("apps.segment", ["crf", "--from-run", "{run_segment_foreign}"], "takes inputs of shape (3,)"),
    ("apps.segment", ["crf", "--from-run", "{run_classify}"], "unknown scene dataset 'fashion_mnist'"),
    # apps.rl mcts: the run's config.json and model.keras, --tflite, an unwritable --run
    ("apps.rl", ["evaluate", "--task", "mcts", "--run", "{run_classify_config_binary}"], "not UTF-8 text"),
    ("apps.rl", ["evaluate", "--task", "mcts", "--run", "{run_classify}"],
     "not the config of a 'train --task mcts' run"),
    ("apps.rl", ["export", "--task", "mcts", "--run", "{run_mcts_model_truncated}"], NOT_KERAS),
    ("apps.rl", ["evaluate", "--task", "mcts", "--run", "{run_mcts_foreign}"], "takes inputs of shape (3,)"),
    ("apps.rl", ["play", "--task", "mcts", "--tflite", "{empty_tflite}", "--opponent", "random"], "cannot load"),
    ("apps.rl", ["play", "--task", "mcts", "--tflite", "{truncated_tflite}", "--opponent", "random"], "cannot load"),
    ("apps.rl", ["play", "--task", "mcts", "--tflite", "{dense_tflite}", "--opponent", "random"],
     "not a tic-tac-toe policy-value net"),
    ("apps.rl", ["train", "--task", "mcts", "--small", "--run", "{unwritable}"], "cannot write to the output folder"),
    # core.tflite_run: the model, .npy and image inputs, --labels
    ("core.tflite_run", ["{empty_tflite}"], "cannot load"),
    ("core.tflite_run", ["{truncated_tflite}"], "cannot load"),
    ("core.tflite_run", ["{png_as_tflite}"], "cannot load"),
    ("core.tflite_run", ["{dense_tflite}", "{empty_npy}"], "not a NumPy .npy file"),
    ("core.tflite_run", ["{dense_tflite}", "{truncated_npy}"], "cannot read"),
    ("core.tflite_run", ["{dense_tflite}", "{text_npy}"], "not a NumPy .npy file"),
    ("core.tflite_run", ["{dense_tflite}", "{png_as_npy}"], "not a NumPy .npy file"),
    ("core.tflite_run", ["{dense_tflite}", "{objects_npy}"], "cannot read"),
    ("core.tflite_run", ["{image_tflite}", "{truncated_png}"], "cannot read image"),
    ("core.tflite_run", ["{image_tflite}", "{text_png}"], "cannot read image"),
    ("core.tflite_run", ["{image_tflite}", "{empty_png}"], "cannot read image"),
    ("core.tflite_run", ["{dense_tflite}", "{ok_png}"], "is not an image"),
    ("core.tflite_run", ["{dense_tflite}", "{ok_npy}", "--labels", "{binary_json}"], "not UTF-8 text"),
    ("core.tflite_run", ["{dense_tflite}", "{ok_npy}", "--labels", "{root}/missing.txt"], "cannot read the labels"),
    # serving: serve --config (models.config), client --npy
    ("serving", ["serve", "--config", "{empty_config}"], "must hold a model_config_list"),
    ("serving", ["serve", "--config", "{text_config}"], "not a valid ModelServerConfig"),
    ("serving", ["serve", "--config", "{binary_config}"], "not a valid ModelServerConfig"),
    ("serving", ["serve", "--config", "{json_config}"], "not a valid ModelServerConfig"),
    ("serving", ["serve", "--config", "{truncated_config}"], "not a valid ModelServerConfig"),
    ("serving", ["client", "--model", "classify", "--npy", "{truncated_npy}"], "cannot read"),
    ("serving", ["client", "--model", "classify", "--npy", "{objects_npy}"], "cannot read"),
    ("serving", ["client", "--model", "classify", "--npy", "{empty_npy}"], "cannot read"),
]


def _main(module):
    import importlib

    if module == "core.tflite_run":
        from core import tflite_run

        return tflite_run.main
    return importlib.import_module(f"{module}.__main__").main


def _case_id(case):
    module, argv, _ = case.values if hasattr(case, "values") else case
    return f"{module} " + " ".join(a.strip("{}") for a in argv)


@pytest.mark.parametrize("module, argv, message", CASES, ids=[_case_id(c) for c in CASES])
def test_cli_refuses_a_bad_file_in_one_line(files, capsys, module, argv, message):
    from core import tflite_run

    prog = {"core.tflite_run": "tflite-run"}.get(module, module)
    with pytest.raises(SystemExit) as exit_info:
        if module == "core.tflite_run":
            tflite_run.cli([a.format(**files) for a in argv])
        else:
            run_cli(_main(module), [a.format(**files) for a in argv], prog=module)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    lines = error_lines(err)
    assert exit_info.value.code == 2, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), lines
    assert message in lines[0], lines


def test_the_table_covers_every_cli_that_reads_files():
    covered = {_case_id(case).split()[0] for case in CASES}
    assert covered >= {"apps.classify", "apps.detect", "apps.segment", "apps.generative", "apps.sequence",
                       "apps.style", "apps.visualize", "apps.rl", "core.tflite_run", "serving"}


def test_every_numpy_load_refuses_pickles_and_every_keras_load_is_safe():
    """Loading a file must never run code from it: NumPy without pickles, Keras in safe mode."""
    import re

    from conftest import ROOT

    problems = []
    for folder in ("apps", "core", "layers", "losses", "bench"):
        for directory, _, names in os.walk(os.path.join(ROOT, folder)):
            for name in names:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(directory, name)
                with open(path) as f:
                    source = f.read()
                for call in re.finditer(r"\b(np|numpy)\.load\(([^()]|\([^()]*\))*\)", source):
                    if "allow_pickle=False" not in call.group(0):
                        problems.append(f"{path}: {call.group(0)}")
                for call in re.finditer(r"\bload_model\(([^()]|\([^()]*\))*\)", source):
                    if "safe_mode=True" not in call.group(0):
                        problems.append(f"{path}: {call.group(0)}")
    assert not problems, problems
