"""Adapters: prompt formats between signatures and LMs (DSPy's ChatAdapter and JSONAdapter)."""

from dspex.adapters.base import Adapter
from dspex.adapters.chat_adapter import ChatAdapter
from dspex.adapters.json_adapter import JSONAdapter

__all__ = ["Adapter", "ChatAdapter", "JSONAdapter"]
