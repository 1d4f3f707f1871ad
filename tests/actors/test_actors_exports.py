"""The public surface of dspex.actors, and the layering rule: importing it does not import Ray."""

from __future__ import annotations

import subprocess
import sys

import dspex.actors as actors


def test_every_exported_name_exists() -> None:
    missing = [name for name in actors.__all__ if not hasattr(actors, name)]
    assert missing == []
    assert sorted(actors.__all__) == actors.__all__


def test_importing_the_actor_layer_does_not_import_ray() -> None:
    code = "import sys, dspex.actors, dspex.cluster; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
