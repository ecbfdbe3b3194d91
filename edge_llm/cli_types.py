"""Parameter types, checks and options shared by the commands: every user-facing value is validated at
the CLI edge, so a bad one is a one-line error (exit 2) before any model is loaded. The commands
(cli.py, serve/cli.py, bench/cli.py, eval_cli.py) import this module, never each other."""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import click

from .errors import EdgeLLMError


class Float(click.FloatRange):
    """FloatRange that also refuses nan and ±inf (a range check alone lets nan through)."""

    def convert(self, value, param, ctx):
        v = super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


def max_threads() -> int:
    from .session import physical_cores
    return 2 * physical_cores()


def check_threads(n: int, param=None, ctx=None) -> int:
    """1..2× the physical cores. Above that is refused, not clamped: a typo like 1000 slows a reply
    100× and clamping would hide it."""
    if n < 1:
        raise click.BadParameter(f"{n} is not a thread count (use 1 or more)", ctx=ctx, param=param)
    limit = max_threads()
    if n > limit:
        raise click.BadParameter(f"{n} threads on {limit // 2} physical core(s): use 1..{limit}", ctx=ctx, param=param)
    return n


class Threads(click.ParamType):
    name = "N"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return check_threads(value, param, ctx)
        try:
            n = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not an integer", param, ctx)
        return check_threads(n, param, ctx)


ESCAPES = {"0": "\0", "n": "\n", "t": "\t", "\\": "\\"}


def unescape(text: str) -> str:
    """'\\0' → NUL, '\\n' → newline, '\\t' → tab, '\\\\' → backslash; any other backslash stays as typed."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in ESCAPES:
            out.append(ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def read_stdin_text() -> str:
    """All of stdin as UTF-8; invalid bytes are a one-line error, not a traceback."""
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    return decode_utf8(data, "stdin")


def decode_utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EdgeLLMError(f"{what} is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def output_file(path: Path | None, option: str) -> None:
    """A file to write at the end of a long command: its folder must exist and be writable now,
    not after the work is done (and no folders are created for it)."""
    if path is None:
        return
    folder = Path(path).parent
    if not folder.is_dir():
        raise EdgeLLMError(f"{option} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise EdgeLLMError(f"{option} {path}: folder {folder} is not writable")
    if Path(path).is_dir():
        raise EdgeLLMError(f"{option} {path}: is a folder, not a file")


def write_text(path: Path, text: str, option: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise EdgeLLMError(f"{option} {path}: cannot write ({e.strerror or e})") from None


def _log_replies(ctx, param, value):
    if value is not None:
        from .records import log_replies_to
        log_replies_to(value)
    return value


def metrics_log_option(*, expose_value: bool = False):
    """--metrics-log FILE.jsonl: one JSON line per reply (chat, generate and serve share it)."""
    return click.option("--metrics-log", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        callback=_log_replies, expose_value=expose_value,
                        help="Append one JSON line per reply (tokens, speed, energy, cost) to this file.")


def speculate_option(*, expose_value: bool = False):
    """--speculate auto|off|lookup|draft:PACKAGE (edge_llm.speculative), checked at the command line.
    The value also goes to ctx.meta["edge_llm.speculate"] (where chat/generate's loader reads it)."""
    def check(ctx, param, value):
        from .speculative import parse_speculate
        try:
            parse_speculate(value)
        except ValueError as e:
            raise click.BadParameter(str(e)) from e
        ctx.meta["edge_llm.speculate"] = value
        return value
    return click.option("--speculate", default="auto", show_default=True, callback=check, expose_value=expose_value,
                        metavar="auto|off|lookup|draft:PACKAGE",
                        help="Speculative decoding: n-gram prompt lookup or a same-tokenizer draft model. "
                             "'auto' is lookup, drafting only while measured acceptance and cost say it pays "
                             "(docs/speculative.md).")


def note_context_clamp(asked: int | None, model) -> None:
    """--context past the package's positions is clamped to them (the rotary table and the trained
    range end there): said once, on stderr."""
    if asked is not None and asked > model.context_length:
        click.echo(f"note: --context {asked} is beyond this package's {model.context_length} positions "
                   f"(export with --context-length to change it); using {model.context_length}", err=True)
