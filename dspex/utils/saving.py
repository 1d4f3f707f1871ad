"""``dspex.load(path)``: load a program saved with ``save(dir, save_program=True)``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dspex.errors import ConfigurationError

__all__ = ["load"]


def load(path: str | Path) -> Any:
    path = Path(path)
    pkl = path / "program.pkl"
    if not pkl.exists():
        raise ConfigurationError(
            f"No saved program in {str(path)!r}: expected {str(pkl)!r}, written by program.save(dir, save_program=True). "
            "To load learned state into a program you construct, use program.load('state.json')."
        )
    import cloudpickle

    meta_file = path / "metadata.json"
    if meta_file.exists():
        json.loads(meta_file.read_text(encoding="utf-8"))  # validates the file is readable
    with open(pkl, "rb") as f:
        return cloudpickle.load(f)
