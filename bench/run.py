"""`python bench/run.py [flags]`: the same as `python -m bench [flags]` (bench/cli.py), for a checkout where
`bench` is not importable from the current folder.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
