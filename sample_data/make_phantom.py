"""Write the sam2-med synthetic CT phantom (NIfTI image + labels, and a DICOM series).

Usage::

    python sample_data/make_phantom.py [OUT_DIR] [--overwrite] [--seed N] [--orientation O]
    python sample_data/make_phantom.py [OUT_DIR] --random SEED [--overwrite]

``OUT_DIR`` defaults to ``sample_data/generated/`` next to this script (git-ignored). The data
are computed by :func:`sam2_med.phantom.write_phantom`; nothing is downloaded. ``--random SEED``
writes a random anatomy instead (:func:`sam2_med.phantom.write_random_phantom`: NIfTI image,
labels and a prompt file; seeds from 1000000 on are the evaluation seeds, never trained on).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "generated"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write the sam2-med synthetic CT phantom (NIfTI + DICOM)."
    )
    parser.add_argument(
        "out_dir", nargs="?", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--seed", type=int, default=0, help="noise and UID seed (default 0)")
    parser.add_argument(
        "--orientation",
        choices=("oblique", "LPS", "RAS"),
        default="oblique",
        help="voxel grid orientation of every output (default oblique)",
    )
    parser.add_argument(
        "--random",
        type=int,
        metavar="SEED",
        help="write the random phantom of this seed instead (random anatomy, CT or MR)",
    )
    args = parser.parse_args(argv)

    from sam2_med.phantom import write_phantom, write_random_phantom

    try:
        if args.random is not None:
            written = write_random_phantom(args.out_dir, args.random, overwrite=args.overwrite)
        else:
            written = write_phantom(
                args.out_dir, overwrite=args.overwrite, seed=args.seed, orientation=args.orientation
            )
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for key, path in written.items():
        print(f"{key:12s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
