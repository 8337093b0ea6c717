#!/usr/bin/env bash
# Build the MONAI Label server environment (default: .venv-monailabel beside .venv): sam2-med's
# core, MONAI Label's server dependencies, and monailabel itself without its declared
# dependencies, which cannot live beside sam2-med (numpy<2 and pydicom 2 through pydicom-seg,
# Meta's sam2 with a CUDA torch and torchvision). README: "Serving 3D Slicer and OHIF".
#   bash scripts/monailabel_env.sh [VENV] [TORCH_SPEC]
# TORCH_SPEC defaults to this machine's CPU build (torch==2.13.0); a GPU server passes its own.
# With .venv present, its versions of the shared packages are used (same engine in both).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-monailabel}
TORCH=${2:-torch==2.13.0}
PY=${PYTHON:-python3}

"$PY" -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
CONSTRAINTS=()
if [ -x .venv/bin/python ]; then
  .venv/bin/python -m pip freeze --exclude-editable | grep -v -e '^-e ' -e ' @ ' \
    | grep -iv -e '^sam2-med' -e '^torch=' >"$VENV/constraints.txt" || true
  CONSTRAINTS=(-c "$VENV/constraints.txt")
fi
python -m pip install -q "$TORCH" "${CONSTRAINTS[@]}"
python -m pip install -q -e ".[monailabel]" "${CONSTRAINTS[@]}"
python -m pip install -q --no-deps "monailabel==0.8.5" "pydicom-seg==0.4.1" "girder-client>=3.2"
python -c "import sam2_med.monailabel_app.server" >/dev/null
echo "MONAI Label server environment ready: $VENV (monailabel $(python -c 'import monailabel; print(monailabel.__version__)'))"
