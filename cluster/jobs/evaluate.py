"""``python -m dspex.jobs.evaluate``: Score a program, or a stored version, on a dataset (the ``evaluate`` job kind).

See ``dspex.jobs`` for the options; the job's args are those of
``dspex.pipelines.jobs.workers.evaluate``.
"""

from __future__ import annotations

import sys

from dspex.jobs._entry import main

KIND = "evaluate"

if __name__ == "__main__":
    sys.exit(main(KIND))
