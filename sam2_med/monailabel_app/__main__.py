"""``python -m sam2_med.monailabel_app APP_FOLDER``: write the MONAI Label app folder."""

from __future__ import annotations

import argparse
import sys

from . import write_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sam2_med.monailabel_app",
        description="Write the folder that `monailabel start_server --app FOLDER` serves.",
    )
    parser.add_argument("folder", metavar="APP_FOLDER")
    parser.add_argument("--overwrite", action="store_true", help="replace another main.py")
    args = parser.parse_args(argv)
    from ..errors import Sam2MedError

    try:
        main_py = write_app(args.folder, overwrite=args.overwrite)
    except (Sam2MedError, OSError) as err:
        print(f"sam2-med: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"wrote {main_py}")
    print(
        f"start: monailabel start_server --app {main_py.parent} --studies STUDIES_FOLDER "
        "--conf device cuda  (see `python -m pydoc sam2_med.monailabel_app`)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
