"""``accel`` and ``python -m accel``: the command line, with Ctrl-C handled from the start.

The console script enters here rather than in :mod:`accel.cli`, whose imports
(numpy, the zoo) take a moment: an interrupt while they load is the same
one-line ``accel: interrupted`` as an interrupt later, never a traceback.
"""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from accel.cli import main as run

        return run()
    except KeyboardInterrupt:
        print("accel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
