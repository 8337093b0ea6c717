"""Regenerate the README's picture of a report: ``docs/images/report.png``.

Usage::

    python scripts/report_screenshot.py [--out docs/images/report.png]

Writes the phantom (DICOM series + exact labels) to a temporary folder, measures the liver,
spleen and left kidney with :func:`sam2_med.report.write_report`, and photographs the HTML with
headless Chromium (Debian's ``chromium`` package). The labels are the phantom's exact ones, so
the numbers are the phantom's geometry, not a model's output.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "report.png")
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=1150)
    args = parser.parse_args(argv)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("error: needs headless Chromium (apt-get install chromium)", file=sys.stderr)
        return 1

    from sam2_med.io import load_volume
    from sam2_med.labels import LabelVolume
    from sam2_med.measure import load_labels
    from sam2_med.phantom import write_phantom
    from sam2_med.report import write_report

    with tempfile.TemporaryDirectory() as tmp:
        written = write_phantom(Path(tmp) / "phantom")
        image = load_volume(written["dicom"])
        labels = load_labels(written["labels"], image)
        keep = (1, 2, 4)  # liver, spleen, left kidney: a page that fits one screenshot
        chosen = np.where(np.isin(labels.array, keep), labels.array, 0).astype(np.uint8)
        labels = LabelVolume(chosen, image, {k: labels.names[k] for k in keep})
        report = write_report(labels, Path(tmp) / "report", title="Synthetic CT phantom")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--window-size={args.width},{args.height}",
                f"--screenshot={args.out.resolve()}",
                report.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
