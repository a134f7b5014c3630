"""Shared output for every ops command: ``--json`` or a rich table, plus error handling.

JSON goes to stdout as plain text (no rich markup, no wrapping) so it pipes into
``jq``; tables, progress bars and messages are rich. Errors print to stderr and exit
non-zero.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.errors import GuardtuneError

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

F = TypeVar("F", bound=Callable[..., Any])
WORKER_EXTRA = {"torch", "transformers", "peft", "safetensors", "numpy", "gguf", "tqdm"}


def console() -> Console:
    """stdout console; wide when not a terminal so ids are never cut in logs and pipes."""
    c = Console(highlight=False)
    if not c.is_terminal and "COLUMNS" not in os.environ:
        c = Console(highlight=False, width=200)
    return c


def err_console() -> Console:
    c = Console(stderr=True, highlight=False)
    if not c.is_terminal and "COLUMNS" not in os.environ:
        c = Console(stderr=True, highlight=False, width=200)
    return c


def fmt_time(value: float | int | None) -> str:
    if value is None:
        return ""
    return datetime.fromtimestamp(float(value), tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def fmt_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


def echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    *,
    title: str | None = None,
    times: Iterable[str] = ("created_at", "revoked_at", "last_used_at", "finished_at", "started_at"),
) -> Table:
    t = Table(title=title, show_lines=False, header_style="bold")
    for col in columns:
        t.add_column(col, overflow="fold")
    time_cols = set(times)
    for row in rows:
        t.add_row(*[fmt_time(row.get(c)) if c in time_cols else fmt_value(row.get(c)) for c in columns])
    return t


def render(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    *,
    as_json: bool,
    title: str | None = None,
    empty: str = "nothing to show",
) -> None:
    """A listing: the rows as a JSON array, or a table of ``columns``."""
    if as_json:
        echo_json(list(rows))
        return
    if not rows:
        err_console().print(f"[dim]{empty}[/dim]")
        return
    console().print(table(rows, columns, title=title))


def render_record(obj: dict[str, Any], *, as_json: bool, title: str | None = None) -> None:
    """One object: JSON, or a two-column key/value table."""
    if as_json:
        echo_json(obj)
        return
    t = Table(title=title, show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    for key, value in obj.items():
        t.add_row(key, fmt_time(value) if key.endswith("_at") and isinstance(value, (int, float)) else fmt_value(value))
    console().print(t)


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console().print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Turn service errors into a red message and exit status 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GuardtuneError as exc:
            raise fail(exc.message) from None
        except FileNotFoundError as exc:
            raise fail(str(exc)) from None
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] in WORKER_EXTRA:
                raise fail(
                    f"this command needs the worker extra (missing {exc.name}): pip install 'guardtune[worker]'"
                ) from None
            raise
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None

    return wrapper  # type: ignore[return-value]


def progress_bar() -> Progress:
    """The bar of long CLI work (done/total, elapsed), on stderr, gone when it ends."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console(),
        transient=True,
    )
