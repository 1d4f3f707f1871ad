"""The README's example runs as written, against the simulator on a free port."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs(sim_server, tmp_path, monkeypatch):
    text = README.read_text()
    assert text.lstrip().startswith("# dspex") and "make demo" in text and "make test" in text
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert len(block.splitlines()) <= 25  # "a 20-line example"
    code = block.replace("http://127.0.0.1:8765", sim_server.base_url)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "qa.json").exists()
    optimized = namespace["optimized"]
    assert any(d.get("augmented") for d in optimized.predictors()[0].demos)  # bootstrapped, not only labeled
    score = namespace["dspy"].Evaluate(devset=namespace["dev"], metric=namespace["metric"])(optimized).score
    assert score > 50
