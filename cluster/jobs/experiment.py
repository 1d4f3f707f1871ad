"""``python -m dspex.jobs.experiment``: Run an offline experiment; its record lives in the store (the ``experiment`` job kind).

See ``dspex.jobs`` for the options; the job's args are those of
``dspex.pipelines.jobs.workers.experiment``.
"""

from __future__ import annotations

import sys

from dspex.jobs._entry import main

KIND = "experiment"

if __name__ == "__main__":
    sys.exit(main(KIND))
