"""Terminal chat: a streaming REPL (/reset, /exit; Ctrl-C stops the reply, not the program) and one-shot mode."""
from __future__ import annotations

import sys
from typing import Iterable

import click

from .api import Conversation, Model
from .generate import TokenRecord
from .sampling import SamplingParams


def print_stream(records: Iterable[TokenRecord], *, stats: bool = False, out=None) -> list[TokenRecord]:
    """Write each record's text as it arrives; returns the records. Ctrl-C ends the stream early."""
    out = out or sys.stdout
    got: list[TokenRecord] = []
    try:
        for rec in records:
            got.append(rec)
            if rec.text:
                out.write(rec.text)
                out.flush()
    except KeyboardInterrupt:
        out.write(" [interrupted]")
    out.write("\n")
    out.flush()
    if stats and got:
        click.echo(format_stats(got), err=True)
    return got


def format_stats(records: list[TokenRecord]) -> str:
    first = records[0]
    prompt_tps = first.prompt_tokens / first.seconds if first.seconds else float("inf")
    decode = records[1:]
    dsec = sum(r.seconds for r in decode)
    decode_tps = len(decode) / dsec if dsec else float("nan")
    return (f"[prompt {first.prompt_tokens} tok, {prompt_tps:.1f} tok/s, first token {first.seconds * 1000:.0f} ms | "
            f"decode {len(decode)} tok, {decode_tps:.1f} tok/s | stop: {records[-1].finish_reason}]")


def one_shot(model: Model, text: str, *, params: SamplingParams, max_new_tokens: int, stats: bool) -> None:
    conv = Conversation(model)
    print_stream(conv.send(text, params=params, max_new_tokens=max_new_tokens), stats=stats)


def repl(model: Model, *, params: SamplingParams, max_new_tokens: int, stats: bool) -> None:
    conv = Conversation(model)
    tty = sys.stdin.isatty()
    click.echo(f"edge-llm chat · {model.manifest.path.name} · /reset clears the conversation, /exit quits, "
               f"Ctrl-C stops a reply", err=True)
    while True:
        try:
            # in a pipe each input line is one user turn and only the replies go to stdout
            line = input("you> " if tty else "")
        except EOFError:
            click.echo("", err=True)
            return
        except KeyboardInterrupt:
            click.echo("", err=True)
            continue
        cmd = line.strip()
        if not cmd:
            continue
        if cmd in ("/exit", "/quit"):
            return
        if cmd == "/reset":
            conv.reset()
            click.echo("(conversation cleared)", err=True)
            continue
        if tty:
            sys.stdout.write("ai> ")
        dropped = conv.dropped_turns
        print_stream(conv.send(line, params=params, max_new_tokens=max_new_tokens), stats=stats)
        if conv.dropped_turns > dropped:
            click.echo(f"(context full: dropped the {conv.dropped_turns - dropped} oldest exchange(s))", err=True)
