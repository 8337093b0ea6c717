"""``python -m sam2_med``: the same as the ``sam2-med`` command."""

import sys

from .cli import console_main

if __name__ == "__main__":
    sys.exit(console_main())
