"""The distribution must contain every package, and the public surface must not drift."""

import tomllib
from pathlib import Path

import dspex

ROOT = Path(__file__).resolve().parent.parent
MAPPING = {
    "dspex": "dspex",
    "actors": "dspex.actors",
    "pipelines": "dspex.pipelines",
    "cluster": "dspex.cluster",
    "cluster/jobs": "dspex.jobs",  # `python -m dspex.jobs.<kind>`, the Ray job entry points
}


def _packages_on_disk() -> set[str]:
    found = set()
    for top, dotted in MAPPING.items():
        # a folder mapped on its own (cluster/jobs -> dspex.jobs) is not also its parent's subpackage
        nested = [ROOT / other for other in MAPPING if other != top and other.startswith(top + "/")]
        for init in (ROOT / top).rglob("__init__.py"):
            if any(init.is_relative_to(n) for n in nested):
                continue
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join([dotted, *rel.parts]) if rel.parts else dotted)
    return found


def test_every_package_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    missing = _packages_on_disk() - listed
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_public_names_exist():
    for name in dspex.__all__:
        assert getattr(dspex, name) is not None, name


def test_core_does_not_import_ray():
    import subprocess
    import sys

    code = "import sys, dspex, dspex.types, dspex.evaluate; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
