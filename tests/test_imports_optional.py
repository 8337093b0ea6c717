"""The optional extras stay optional: the core never imports Dask or MONAI Label."""

from __future__ import annotations

import subprocess
import sys


def test_core_batch_and_app_helpers_import_no_dask_or_monailabel():
    code = (
        "import sys, sam2_med, sam2_med.batch, sam2_med.cli, sam2_med.dask_batch\n"
        "import sam2_med.monailabel_app, sam2_med.monailabel_app._interactive\n"
        "sam2_med.cli.build_parser()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('distributed', 'dask_jobqueue', 'monailabel', 'fastapi', 'uvicorn'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"optional packages imported by the core: {out.stdout}"
