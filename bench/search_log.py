"""The record of a validation search (bench/*_search.py): one JSON line per finished config in
bench/results/<name>.jsonl, each config trained in its own folder under runs/<name>/ (a killed one resumes there).
A config already in the record is not run again."""

import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SearchLog:
    def __init__(self, name):
        self.path = os.path.join(ROOT, "bench", "results", f"{name}.jsonl")
        self.runs = os.path.join(ROOT, "runs", name)

    def lines(self):
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def finished(self, config):
        return any(line["config"] == config for line in self.lines())

    def run_folder(self, config):
        return os.path.join(self.runs, "-".join(f"{k}{v}" for k, v in sorted(config.items())))

    def append(self, line):
        print(json.dumps(line), flush=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")

    def main(self, search, argv):
        """`search(config)` for the JSON config in argv[1], unless the record has it."""
        config = json.loads(argv[1])
        if self.finished(config):
            print(f"{config}: already in {os.path.relpath(self.path, ROOT)}")
        else:
            search(config)
