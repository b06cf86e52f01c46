"""Training-budget search for the detect app's defaults, on the validation split only.

Each config is the app's own `train` (apps/detect/app.py; apps/detect/config.py's TrainConfig with the config's
overrides) into runs/detect_search/<name>/, scored on the 1,000 validation scenes with the app's own
`inference_model`, `score` and `mask_iou` (`apps.detect evaluate` reads the test split; this search never loads
it). One JSON line per config joins bench/results/detect_search.jsonl: the config, validation mAP@0.5,
mAP@[.5:.95] and mask IoU (rcnn), the training seconds and load, the machine and the commit. A config already
in the file is not run again; a killed one resumes in its run folder.

    python bench/detect_search.py '{"model": "ssd", "epochs": 24, "mirror": false}'
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

RESULTS = os.path.join(ROOT, "bench", "results", "detect_search.jsonl")


def done(overrides):
    if not os.path.exists(RESULTS):
        return False
    with open(RESULTS) as f:
        return any(json.loads(line)["config"] == overrides for line in f if line.strip())


def search(overrides):
    from apps.detect import app
    from apps.detect.config import TrainConfig
    from apps.detect.data import load_scenes
    from core import results

    config = TrainConfig(**overrides)
    run = os.path.join(ROOT, "runs", "detect_search", "-".join(f"{k}{v}" for k, v in sorted(overrides.items())))
    app.train(config, run_dir=run)
    inference, recorded = app.inference_model(run)
    scenes = load_scenes(config.dataset, "validation", None, config.data_dir)
    metrics, detections = app.score(inference, scenes, len(recorded["class_names"]))
    line = {"config": overrides, "val_map50": round(metrics["map50"], 4), "val_map50_95": round(metrics["map50_95"], 4),
            "training_seconds": results.training_seconds(run), "training_load_max": results.training_load(run),
            **results.environment()}
    if "masks" in detections[0]:
        line["val_mask_iou"] = round(app.mask_iou(detections, scenes), 4)
    print(json.dumps(line), flush=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    if done(config):
        print(f"{config}: already in {os.path.relpath(RESULTS, ROOT)}")
    else:
        search(config)
