"""``Secret``: an API key that never shows itself.

The value lives in a closure-free slot and is only read by ``reveal()`` where a request header
is built. ``repr``/``str``/``format`` print a mask, and pickling keeps only the name of the
environment variable it came from (so a saved or shipped program never carries the key; the
receiving process reads the key from its own environment).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["Secret"]

_MASK = "**********"


class Secret:
    __slots__ = ("_value", "env_var")

    def __init__(self, value: str | None, env_var: str | None = None) -> None:
        self._value = value or None
        #: the environment variable the key is read from (a name, never the key)
        self.env_var = env_var

    @classmethod
    def resolve(cls, api_key: str | None, env_vars: tuple[str, ...]) -> Secret:
        """The key given as an argument, else the first of ``env_vars`` that is set."""
        if api_key:
            return cls(api_key, None)
        for name in env_vars:
            value = os.environ.get(name)
            if value:
                return cls(value, name)
        return cls(None, env_vars[0] if env_vars else None)

    def reveal(self) -> str | None:
        """The key itself, for building an auth header. Re-reads the env var when it was unset."""
        if self._value is None and self.env_var:
            self._value = os.environ.get(self.env_var) or None
        return self._value

    def __bool__(self) -> bool:
        return self.reveal() is not None

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the key replaced by a mask (for provider messages)."""
        value = self._value
        if value and value in text:
            return text.replace(value, _MASK)
        return text

    def __repr__(self) -> str:
        source = f"env:{self.env_var}" if self.env_var and self._value is None else "set"
        return f"Secret({_MASK if self._value else 'unset'}, {source})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self.env_var))

    # Pickle the reference, never the value.
    def __reduce__(self) -> tuple[Any, ...]:
        return (Secret, (None, self.env_var))

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        # A deep copy stays in this process, so it may keep the value.
        return Secret(self._value, self.env_var)
