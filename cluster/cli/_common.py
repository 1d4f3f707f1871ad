"""What every CLI command shares: output as a rich table or JSON, and errors as one sentence.

Exit codes scripts can trust: 0 success, 1 a dspex error (the sentence says what to do),
2 bad usage (typer's own), 3 an unexpected internal error.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dspex.errors import DSPexError

__all__ = ["EXIT_ERROR", "EXIT_INTERNAL", "console", "err_console", "fail", "guarded", "print_json", "print_table"]

EXIT_ERROR = 1
EXIT_INTERNAL = 3

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = EXIT_ERROR) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def guarded(fn: F) -> F:
    """Turn dspex errors into one clear sentence and a non-zero exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except DSPexError as exc:
            fail(str(exc))
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            fail(f"{exc.strerror or exc}: {exc.filename}. Check the path and try again.")
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            err_console.print_exception(max_frames=5) if "--debug" in sys.argv else None
            fail(f"internal error: {type(exc).__name__}: {exc}. Re-run with --debug for a traceback.", EXIT_INTERNAL)
        return None

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
