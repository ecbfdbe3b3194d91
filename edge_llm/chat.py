"""Terminal chat: a streaming REPL (/reset, /exit; Ctrl-C stops the reply, not the program) and one-shot mode."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterable, Iterator

import click

from .api import Conversation, Model
from .errors import EdgeLLMError
from .records import TokenRecord
from .sampling import SamplingParams


def print_stream(records: Iterable[TokenRecord], *, stats: bool = False, out=None,
                 prefix: str = "", end: str = "\n") -> list[TokenRecord]:
    """Write `prefix`, then each record's text as it arrives, then `end`; returns the records. Ctrl-C
    ends the stream early. An error before the first record propagates with nothing written."""
    out = out or sys.stdout
    got: list[TokenRecord] = []
    try:
        for rec in records:
            if not got and prefix:
                out.write(prefix)
            got.append(rec)
            if rec.text:
                out.write(rec.text)
                out.flush()
    except KeyboardInterrupt:
        out.write(" [interrupted]")
    out.write(end)
    out.flush()
    if stats and got:
        click.echo(format_stats(got), err=True)
    return got


def format_stats(records: list[TokenRecord]) -> str:
    """The reply's record on one line: tokens (cached), tokens/s, TTFT, energy (measured or estimated), cost."""
    from .records import format_record, reply_record
    return format_record(reply_record(records))


def one_shot(model: Model, text: str, *, params: SamplingParams, max_new_tokens: int, stats: bool,
             system: str | None = None) -> None:
    conv = Conversation(model, system=system)
    print_stream(conv.send(text, params=params, max_new_tokens=max_new_tokens), stats=stats)


COMMANDS = ("/reset", "/exit", "/quit")


def _command(line: str) -> str | None:
    """'/word' alone on a line is a command; anything else (including '//text' and '/usr/bin ...') is a message."""
    cmd = line.strip()
    if cmd.startswith("/") and not cmd.startswith("//") and cmd[1:].isalpha():
        return cmd
    return None


def _prompt(text: str) -> tuple[str | None, bool]:
    """input(text), and on Ctrl-C (None, whether text had been typed on the line). The line is read
    in the SIGINT handler, while readline still holds it (it is gone once input() has returned)."""
    if threading.current_thread() is not threading.main_thread():
        return input(text), False      # signal handlers belong to the main thread (a library caller's)
    typed = [""]

    def on_sigint(signum, frame):
        with contextlib.suppress(ImportError):
            import readline
            typed[0] = readline.get_line_buffer()
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        return input(text), False
    except KeyboardInterrupt:
        return None, bool(typed[0])
    finally:
        signal.signal(signal.SIGINT, old)


def _lines(tty: bool) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text, error) per input line until EOF. In a pipe lines are read as bytes and
    decoded one by one, so a line that is not UTF-8 is reported and skipped, not fatal."""
    n = 0
    while True:
        n += 1
        if tty:
            try:
                line, typed = _prompt("you> ")
            except EOFError:
                return
            except UnicodeDecodeError as e:
                yield n, None, f"input is not valid UTF-8 ({e.reason}); not sent"
                continue
            if line is None:
                click.echo("", err=True)
                if not typed:
                    return              # Ctrl-C at an empty prompt quits, as llama-cli does
                continue                # with text typed it only clears the line
            yield n, line, None
            continue
        raw = sys.stdin.buffer.readline()
        if not raw:
            return
        try:
            yield n, raw.decode("utf-8").rstrip("\r\n"), None
        except UnicodeDecodeError as e:
            yield n, None, f"line {n} is not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); skipped"


def repl(model: Model, *, params: SamplingParams, max_new_tokens: int, stats: bool, system: str | None = None,
         separator: str = "\n") -> int:
    """Chat until EOF, /exit or Ctrl-C at an empty prompt; returns the number of turns that failed
    (each reported on stderr). In a pipe each reply ends with `separator` (a newline unless given)."""
    conv = Conversation(model, system=system)
    tty = sys.stdin.isatty()
    if tty:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
    click.echo(f"edge-llm chat · {model.manifest.path.name} · /reset clears the conversation, /exit or Ctrl-C "
               f"at an empty prompt quits, Ctrl-C stops a reply", err=True)
    failed = 0
    for _, line, error in _lines(tty):
        if error:
            click.echo(f"edge-llm: error: {error}", err=True)
            failed += 1
            continue
        if not line.strip():
            continue
        cmd = _command(line)
        if cmd in ("/exit", "/quit"):
            break
        if cmd == "/reset":
            conv.reset()
            click.echo("(conversation cleared)", err=True)
            continue
        if cmd is not None:
            click.echo(f"edge-llm: unknown command {cmd}; /reset, /exit (start a message with // to send a "
                       f"leading /)", err=True)
            continue
        if line.lstrip().startswith("//"):
            line = line.lstrip()[1:]
        dropped = conv.dropped_turns
        try:
            print_stream(conv.send(line, params=params, max_new_tokens=max_new_tokens), stats=stats,
                         prefix="ai> " if tty else "", end="\n" if tty else separator)
        except EdgeLLMError as e:
            # e.g. one message longer than the context: say so, keep the conversation, read the next line
            conv.dropped_turns = dropped
            click.echo(f"edge-llm: error: {e}", err=True)
            failed += 1
            continue
        if conv.dropped_turns > dropped:
            click.echo(f"(context full: dropped the {conv.dropped_turns - dropped} oldest exchange(s))", err=True)
    if not tty:
        return failed
    click.echo("", err=True)
    return 0
