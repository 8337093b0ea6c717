#!/usr/bin/env bash
# The release files, checked as a user meets them: build the sdist and the wheel (the wheel from
# the sdist), `twine check` both, install the wheel alone into a fresh venv, and from a folder
# outside the checkout (nothing of it on sys.path) run the README's main job and napari's own
# command line with the plugin. CI runs it from .ci/run, with the project's venv active (it has
# build and twine: the `release` extra). By hand:
#
#   bash scripts/check_wheel.sh            # about 3-6 minutes; KEEP=1 keeps the work folder
#
# Environment: PYTHON (default python: the interpreter with build and twine), WORK (default a
# new temporary folder), KEEP=1 (do not delete WORK at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python}

# The README's main job runs the demo model shipped inside the wheel
# (sam2_med/weights/sam2med_demo_phantom.pt), offline: its `sam2-med segment` step must succeed as
# printed and report Dice against the phantom's labels. Without the shipped weights (a checkout
# that has not run scripts/train_demo_model.py) the step must instead stop within seconds with
# exit code 2 and a few lines saying how to get weights, and then runs with a random-weight
# checkpoint in Meta's format, which goes through the same loading, propagation and writing code.
if [ -f sam2_med/weights/sam2med_demo_phantom.pt ]; then
  MAIN_NEEDS_WEIGHTS=${MAIN_NEEDS_WEIGHTS:-0}
else
  MAIN_NEEDS_WEIGHTS=${MAIN_NEEDS_WEIGHTS:-1}
fi

WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/sam2-med-wheel.XXXXXX")}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
say() { printf "\n== check_wheel (%ss): %s\n" "$SECONDS" "$*"; }
fail() { printf 'check_wheel: FAILED: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------- build
say "build the sdist and the wheel (from the sdist) into $WORK/dist"
"$PYTHON" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || {
  tail -40 "$WORK/build.log" >&2
  fail "python -m build (log above)"
}
rm -rf sam2_med.egg-info  # setuptools leaves it in the checkout
SDIST=$(ls "$WORK"/dist/sam2_med-*.tar.gz)
WHEEL=$(ls "$WORK"/dist/sam2_med-*-py3-none-any.whl)
VERSION=$(basename "$WHEEL" | cut -d- -f2)
"$PYTHON" -m twine check --strict "$SDIST" "$WHEEL"

say "contents: licence files, package data"
"$PYTHON" - "$SDIST" "$WHEEL" "$VERSION" <<'EOF'
import sys, tarfile, zipfile

sdist, wheel, version = sys.argv[1:]
names = set(zipfile.ZipFile(wheel).namelist())
info = f"sam2_med-{version}.dist-info"
need = {
    f"{info}/licenses/LICENSE", f"{info}/licenses/NOTICE", "sam2_med/py.typed",
    "sam2_med/napari_plugin/napari.yaml", "sam2_med/configs/intensity.yaml",
    "sam2_med/configs/models/sam2.1_hiera_tiny.yaml",
}
missing = sorted(need - names)
assert not missing, f"wheel lacks {missing}"
meta = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
assert "License-Expression: Apache-2.0" in meta and "Classifier: Framework :: napari" in meta
models = sorted(n for n in names if n.startswith("sam2_med/configs/models/"))
top = f"sam2_med-{version}/"
snames = set(tarfile.open(sdist).getnames())
missing = sorted(top + n for n in ("LICENSE", "NOTICE", "CHANGELOG.md", "README.md")
                 if top + n not in snames)
assert not missing, f"sdist lacks {missing}"
print(f"wheel: {len(names)} files, {len(models)} model configs; sdist: {len(snames)} entries")
EOF

# ---------------------------------------------------------------------------------- install
say "fresh venv: torch==2.13.0 first (the CPU build), then the wheel with the napari extra"
python3 -m venv "$WORK/venv"
V="$WORK/venv/bin"
"$V/python" -m pip install -q torch==2.13.0
"$V/python" -m pip install -q "$WHEEL[napari]"
"$V/python" -m pip check

# Run from a folder outside the checkout, with nothing of it on the path, offline, with an
# empty weights cache and an empty user config folder (no model YAML of the person running it).
RUN="$WORK/run"
mkdir -p "$RUN/sample_data"
cp sample_data/make_phantom.py "$RUN/sample_data/"  # the README's main job runs this script
export SAM2_MED_OFFLINE=1 SAM2_MED_CACHE="$WORK/cache" SAM2_MED_CONFIG_DIR="$WORK/config"
export NAPARI_CONFIG="$WORK/napari/settings.yaml"
unset PYTHONPATH QT_QPA_PLATFORM
in_venv() { (cd "$RUN" && PATH="$V:$PATH" VIRTUAL_ENV="$WORK/venv" bash -c "$1"); }

say "the installed package, not the checkout"
in_venv "python - '$ROOT' '$VERSION'" <<'EOF'
import importlib.metadata as md, pathlib, sys, sysconfig

import sam2_med

root, version = pathlib.Path(sys.argv[1]), sys.argv[2]
where = pathlib.Path(sam2_med.__file__).resolve()
site = pathlib.Path(sysconfig.get_paths()["purelib"]).resolve()
assert where.is_relative_to(site) and not where.is_relative_to(root), where
assert sam2_med.__version__ == md.version("sam2-med") == version
from sam2_med.models import list_models  # the model YAML files are package data
assert "sam2.1_hiera_tiny" in list_models(), list_models()
print(f"sam2_med {sam2_med.__version__} from {where.parent}; {len(list_models())} models")
EOF
[ "$(in_venv 'sam2-med --version')" = "sam2-med $VERSION" ] || fail "sam2-med --version"
LISTING=$(in_venv "sam2-med weights list")
head -3 <<<"$LISTING"

# ---------------------------------------------------------------------------------- main job
say "the README's main job, step by step as printed there (after its install steps)"
mapfile -t STEPS < <("$PYTHON" - "$ROOT/README.md" <<'EOF'
import re, sys

text = open(sys.argv[1], encoding="utf-8").read()
section = text.split("\n## Set up and run", 1)[1].split("\n### ", 1)[0]
install = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0].strip()
for step in (s.strip() for s in install.split("&&")):
    if not re.match(r"(python3 -m venv|\. |source |pip |python -m pip )", step):
        print(step)
EOF
)
[ "${#STEPS[@]}" -ge 2 ] || fail "could not read the main job from README.md: ${STEPS[*]}"
MASK=""
for step in "${STEPS[@]}"; do
  echo "\$ $step"
  if [[ "$step" != "sam2-med segment "* ]]; then
    in_venv "$step"
    continue
  fi
  MASK=$(sed -E 's/.*--out +([^ ]+).*/\1/' <<<"$step")
  if [ "$MAIN_NEEDS_WEIGHTS" = 1 ]; then
    set +e
    in_venv "$step" 2>"$WORK/segment.err"
    code=$?
    set -e
    cat "$WORK/segment.err"
    [ "$code" = 2 ] && [ "$(wc -l <"$WORK/segment.err")" -le 8 ] \
      && grep -q "sam2-med weights import" "$WORK/segment.err" \
      || fail "without weights, '$step' must stop with exit 2 and a few lines (got exit $code)"
    [ ! -e "$RUN/$MASK" ] || fail "a failed run left $MASK behind"
    echo "(no weights offline, as expected: the same step with a random-weight checkpoint)"
    in_venv "python - '$WORK'" <<'EOF'
import json, pathlib, sys

from sam2_med.models import TINY_ARCH, random_model, save_meta_checkpoint, tiny_config

work = pathlib.Path(sys.argv[1])
save_meta_checkpoint(random_model(tiny_config(), seed=0), work / "random_tiny.pt")
(work / "random_tiny.json").write_text(json.dumps(TINY_ARCH))
EOF
    step="$step --checkpoint $WORK/random_tiny.pt --arch $WORK/random_tiny.json"
    echo "\$ $step"
    in_venv "$step"
  else
    in_venv "$step" | tee "$WORK/segment.out"
    grep -q "Dice" "$WORK/segment.out" || fail "'$step' printed no Dice against the labels"
  fi
done
[ -n "$MASK" ] || fail "the README's main job has no sam2-med segment step"
in_venv "sam2-med info sample_data/generated/phantom_ct.nii.gz"
in_venv "python - '$MASK'" <<'EOF'
import json, pathlib, sys

import nibabel as nib
import numpy as np

mask = pathlib.Path(sys.argv[1])
image = nib.load("sample_data/generated/phantom_ct.nii.gz")
got = nib.load(mask)
assert got.shape == image.shape, (got.shape, image.shape)
assert np.allclose(got.affine, image.affine, atol=1e-5)
side = json.loads(mask.with_name(mask.name.replace(".nii.gz", ".json")).read_text())
run = side["extra"]["sam2_med_run"]
print(f"{mask}: {got.shape} on the image grid; labels {side['label_names']}; model {run['model']}")
EOF

# ---------------------------------------------------------------------------------- napari
say "napari: npe2 validates the installed plugin, then napari's command line opens the phantom"
in_venv "npe2 validate sam2-med --imports"
mkdir -p "$(dirname "$NAPARI_CONFIG")"
printf 'application:\n  startup_script: %s\n' "$ROOT/scripts/napari_smoke.py" >"$NAPARI_CONFIG"
NAPARI_CMD="napari sample_data/generated/phantom_ct.nii.gz --plugin sam2-med -w sam2-med"
echo "\$ $NAPARI_CMD"
if [ -n "${DISPLAY:-}" ]; then
  in_venv "timeout 180 $NAPARI_CMD"
else
  in_venv "timeout 180 xvfb-run -a -s '-screen 0 1280x1024x24' $NAPARI_CMD"
fi

say "passed: sam2-med $VERSION (sdist and wheel in $WORK/dist)"
