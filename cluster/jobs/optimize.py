"""``python -m dspex.jobs.optimize``: Optimize a program with an optimizer and save it as a new version (the ``optimize`` job kind).

See ``dspex.jobs`` for the options; the job's args are those of
``dspex.pipelines.jobs.workers.optimize``.
"""

from __future__ import annotations

import sys

from dspex.jobs._entry import main

KIND = "optimize"

if __name__ == "__main__":
    sys.exit(main(KIND))
