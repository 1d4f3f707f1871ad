"""API keys never appear in a repr, str, history, exception, dump_state, pickle, saved program or log."""

from __future__ import annotations

import copy
import json
import logging
import pickle
from pathlib import Path

import httpx
import pytest
from fixtures.clients import Recorder, openai_reply

import dspex
from dspex.clients import LM
from dspex.clients._secret import Secret
from dspex.errors import AuthenticationError, ProviderUnavailable

KEY = "sk-live-THIS-MUST-NEVER-LEAK-0123456789"


def leaks(obj: object) -> bool:
    return KEY in repr(obj) or KEY in str(obj)


def test_secret_object_masks_itself() -> None:
    s = Secret(KEY)
    assert not leaks(s) and KEY not in f"{s}" and KEY not in f"{s!r}"
    assert s.reveal() == KEY
    assert pickle.loads(pickle.dumps(s)).reveal() is None
    assert copy.deepcopy(s).reveal() == KEY
    assert s.redact(f"bad key {KEY}!") == "bad key **********!"


def test_secret_from_env_pickles_as_a_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", KEY)
    s = Secret.resolve(None, ("MY_KEY",))
    assert s.env_var == "MY_KEY" and s.reveal() == KEY
    blob = pickle.dumps(s)
    assert KEY.encode() not in blob
    assert pickle.loads(blob).reveal() == KEY  # read again from this process's environment
    monkeypatch.delenv("MY_KEY")
    assert pickle.loads(blob).reveal() is None


async def test_lm_surfaces_never_hold_the_key(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    rec = Recorder(
        replies=[httpx.Response(401, json={"error": {"message": f"Incorrect API key provided: {KEY}"}})],
        default=lambda r: httpx.Response(200, json=openai_reply("fine")),
    )
    lm = LM("openai/gpt-4o-mini", api_key=KEY, cache=False, http_transport=rec.transport(), temperature=0.0)
    assert rec.requests == [] and not leaks(lm) and not leaks(lm.__dict__)
    with pytest.raises(AuthenticationError) as info:
        await lm.acall(prompt="hi")
    err = info.value
    assert not leaks(err) and not leaks(err.to_dict()) and not leaks(err.fields)
    assert KEY.encode() not in pickle.dumps(err)
    await lm.acall(prompt="hi", api_key=KEY + "-call")  # a key passed per call is used, not recorded
    assert rec.requests[-1].headers["authorization"] == f"Bearer {KEY}-call"
    assert "api_key" not in rec.bodies[-1]
    with open(tmp_path / "h.txt", "w") as sink:
        assert not leaks(list(lm.history)) and not leaks(dspex.inspect_history(5, file=sink))
    state = lm.dump_state()
    assert not leaks(json.dumps(state))
    assert not leaks(caplog.text) and caplog.text is not None
    blob = pickle.dumps(lm)
    assert KEY.encode() not in blob
    assert not leaks(copy.copy(lm)) and not leaks(copy.deepcopy(lm))
    assert copy.deepcopy(lm)._secret.reveal() == KEY  # an in-process copy still works


async def test_transport_errors_do_not_carry_the_key() -> None:
    rec = Recorder(default=lambda r: (_ for _ in ()).throw(httpx.ConnectError(f"failed for {KEY}")))
    lm = LM("openai/gpt-4o-mini", api_key=KEY, cache=False, num_retries=0, http_transport=rec.transport())
    with pytest.raises(ProviderUnavailable) as info:
        await lm.acall(prompt="hi")
    assert not leaks(info.value) and not leaks(info.value.to_dict())


def test_unpickled_lm_reads_the_key_from_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    lm = LM("openai/gpt-4o-mini", api_key=KEY)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-worker-key")
    clone = pickle.loads(pickle.dumps(lm))
    assert clone._secret.reveal() == "sk-worker-key"
    assert clone.model == lm.model and clone.spec == lm.spec
    assert clone.endpoint is lm.endpoint  # rejoins this process's shared endpoint


def test_saved_program_has_no_key(tmp_path: Path) -> None:
    predict = dspex.Predict("question -> answer")
    predict.lm = LM("openai/gpt-4o-mini", api_key=KEY, api_base="http://127.0.0.1:9/v1", temperature=0.3, rpm=100)
    path = tmp_path / "program.json"
    predict.save(path)
    text = path.read_text()
    assert KEY not in text
    loaded = dspex.Predict("question -> answer")
    loaded.load(path)
    assert isinstance(loaded.lm, LM)
    assert loaded.lm.spec.base_url == "http://127.0.0.1:9/v1" and loaded.lm.kwargs["temperature"] == 0.3
    assert loaded.lm.rpm == 100


def test_dump_state_round_trips_through_the_constructor() -> None:
    lm = LM("anthropic/claude-3-5-haiku-latest", api_key=KEY, api_key_env="ANT_KEY", temperature=0.1,
            max_tokens=50, num_retries=7, tpm=1000, timeout_s=30, cache=False, top_p=0.5)
    state = lm.dump_state()
    assert state == {
        "model": "anthropic/claude-3-5-haiku-latest", "model_type": "chat", "cache": False, "temperature": 0.1,
        "max_tokens": 50, "top_p": 0.5, "num_retries": 7, "api_key_env": "ANT_KEY", "tpm": 1000, "timeout_s": 30.0,
    }
    again = LM(**state)
    assert again.dump_state() == state and again._secret.env_var == "ANT_KEY"
