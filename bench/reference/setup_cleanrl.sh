#!/usr/bin/env bash
# Builds .venv-cleanrl/ at the repo root: the side environment in which `make bench` runs CleanRL's
# dqn_atari.py as the reference of its DQN rates (bench/run.py, case_cleanrl). Never the suite's .venv:
# PyTorch on the CPU, the suite's gymnasium/ale-py, pins in requirements.txt and constraints.txt here.
# CleanRL is not vendored: this fetches the pinned release's wheel from PyPI, checks the sha256 of its
# dqn_atari.py, applies dqn_atari.patch (gymnasium 1.x; each hunk explained in its header) and puts the
# result in .venv-cleanrl/cleanrl/dqn_atari.py. The stamp .venv-cleanrl/.installed is written last and
# holds the hash of these inputs: a rerun with the same inputs does nothing, with others it rebuilds.
#
#   bench/reference/setup_cleanrl.sh            # `make bench-reference`
#   PYTHON=python3.11 bench/reference/setup_cleanrl.sh
#   CLEANRL_TORCH_INDEX= bench/reference/setup_cleanrl.sh   # no PyTorch CPU index (torch from --find-links)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv-cleanrl"
CLEANRL_VERSION=1.2.0
SCRIPT_SHA256=a62da65df6333d0c9c6f70062f960c60be75f34d7f55cbc2535cd4fd4cbc6979  # cleanrl/dqn_atari.py of 1.2.0
TORCH_INDEX="${CLEANRL_TORCH_INDEX-https://download.pytorch.org/whl/cpu}"

say() { echo "setup_cleanrl: $*"; }
fail() { echo "setup_cleanrl: $*" >&2; exit 2; }

inputs="$(cat "$HERE/requirements.txt" "$HERE/constraints.txt" "$HERE/dqn_atari.patch" "$0" | sha256sum | cut -d' ' -f1)"
if [ -f "$VENV/.installed" ] && [ "$(cat "$VENV/.installed")" = "$inputs" ]; then
  say "$VENV is up to date (CleanRL $CLEANRL_VERSION dqn_atari.py, patched)"
  exit 0
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  || fail "Python >= 3.11 is needed; '$PYTHON' is $("$PYTHON" --version 2>&1 || echo missing) (try PYTHON=python3.11)"
command -v patch >/dev/null || fail "the 'patch' program is missing (Debian/Ubuntu: sudo apt install patch)"

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV" || { rm -rf "$VENV"; fail "'$PYTHON -m venv' failed (Debian/Ubuntu: sudo apt install python3-venv)"; }
PY="$VENV/bin/python"
"$PY" -m pip install --quiet --upgrade pip
say "installing PyTorch (CPU), gymnasium, ale-py, stable-baselines3 into $VENV"
"$PY" -m pip install --quiet ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} \
  -r "$HERE/requirements.txt" -c "$HERE/constraints.txt"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
say "fetching cleanrl==$CLEANRL_VERSION from PyPI (the wheel only, not its dependencies: it pins gymnasium 0.28)"
# --ignore-requires-python: the 1.2.0 wheel declares Python < 3.11; the one script used here runs on 3.11+ once patched.
"$PY" -m pip download --quiet --no-deps --ignore-requires-python --only-binary=:all: \
  --dest "$tmp" "cleanrl==$CLEANRL_VERSION"
"$PY" - "$tmp" <<'EOF'
import glob, sys, zipfile
(wheel,) = glob.glob(f"{sys.argv[1]}/cleanrl-*.whl")
with zipfile.ZipFile(wheel) as z, open(f"{sys.argv[1]}/dqn_atari.py", "wb") as f:
    f.write(z.read("cleanrl/dqn_atari.py"))
EOF
got="$(sha256sum "$tmp/dqn_atari.py" | cut -d' ' -f1)"
[ "$got" = "$SCRIPT_SHA256" ] || fail "cleanrl==$CLEANRL_VERSION's dqn_atari.py has sha256 $got, not the pinned $SCRIPT_SHA256: upstream changed; check bench/reference/dqn_atari.patch against it, then update SCRIPT_SHA256"
patch --quiet --forward --no-backup-if-mismatch -p1 -d "$tmp" < "$HERE/dqn_atari.patch" \
  || fail "bench/reference/dqn_atari.patch does not apply to cleanrl==$CLEANRL_VERSION's dqn_atari.py"
mkdir -p "$VENV/cleanrl"
mv "$tmp/dqn_atari.py" "$VENV/cleanrl/dqn_atari.py"

# A smoke check: the imports, the ROM of the bench's game, the patched script's argument parser.
smoke='import ale_py, gymnasium as gym, torch, stable_baselines3, cv2; gym.register_envs(ale_py); gym.make("PongNoFrameskip-v4").close()'
out="$("$PY" -c "$smoke" 2>&1)" || fail "the new environment does not work: $(echo "$out" | tail -1)"
"$PY" "$VENV/cleanrl/dqn_atari.py" --help >/dev/null || fail "the patched dqn_atari.py does not start"
echo "$inputs" > "$VENV/.installed"
say "ready: $PY $VENV/cleanrl/dqn_atari.py (torch $("$PY" -c 'import torch; print(torch.__version__)'))"
