"""``python -m dspex.jobs.run --job-id <id>``: run any job in the store by its id, to its end."""

from __future__ import annotations

import sys

from dspex.jobs._entry import main

if __name__ == "__main__":
    sys.exit(main(None))
