"""``python -m dspex.jobs.health``: Probe registered models and record their health (the ``health_check`` job kind).

See ``dspex.jobs`` for the options; the job's args are those of
``dspex.pipelines.jobs.workers.health_check``.
"""

from __future__ import annotations

import sys

from dspex.jobs._entry import main

KIND = "health_check"

if __name__ == "__main__":
    sys.exit(main(KIND))
