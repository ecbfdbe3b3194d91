"""`edge-llm eval`: perplexity, and KL / top-1 / Δp against a reference package.

Progress (windows, tokens/s, ETA) goes to stderr; Ctrl-C keeps the windows already scored: the JSON
(if asked) and the row are written with "partial": true, and the exit code is 130.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from .cli_types import Threads, output_file, write_text


class EvalProgress:
    """`eval: window 12/117 · 4,700 tok/s · ETA 2m05s` on stderr: rewritten in place in a terminal,
    a line every 10% otherwise."""

    def __init__(self, window: int):
        self.window, self.t0, self.next = window, time.perf_counter(), 0.1
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.perf_counter() - self.t0
        tps = done * self.window / elapsed if elapsed > 0 else 0.0
        eta = (total - done) * elapsed / done
        line = f"eval: window {done}/{total} · {tps:,.0f} tok/s · ETA {_duration(eta)}"
        if self.tty:
            click.echo(f"\r\033[K{line}", err=True, nl=done == total)
        elif done == 1 or done / total >= self.next or done == total:
            click.echo(line, err=True)
            self.next = int(done / total * 10 + 1) / 10

    def end_line(self) -> None:
        if self.tty:
            click.echo("", err=True)


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


@click.command("eval")
@click.argument("package_dir", type=click.Path(path_type=Path))
@click.option("--text", "text", required=True, type=click.Path(path_type=Path),
              help="Text file (documents split on \\x1e).")
@click.option("--reference", "reference", type=click.Path(path_type=Path), default=None,
              help="Reference package (e.g. the fp32 export) for KL divergence and top-1 agreement.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--max-tokens", type=click.IntRange(min=1), default=None,
              help="Tokens to score [default 60000; the fixture protocol uses 200000].")
@click.option("--window", type=click.IntRange(min=2), default=512, show_default=True,
              help="Tokens per window, at most the model's context.")
@click.option("--threads", type=Threads(), default=None)
def eval_cmd(package_dir, text, reference, json_out, max_tokens, window, threads):
    """Perplexity of a package on a text file (and agreement with a reference package)."""
    from .errors import EdgeLLMError
    from .evaluate import DEFAULT_MAX_TOKENS, EvalInterrupted, corpus_tokens, evaluate, markdown_row

    max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    if max_tokens < window:
        raise click.BadParameter(f"{max_tokens} is less than one window of {window} tokens (--window)",
                                 param_hint="'--max-tokens'")
    output_file(json_out, "--json")
    from .api import Model
    model = Model.load(package_dir, threads=threads)
    if window > model.context_length:
        raise EdgeLLMError(f"--window {window} exceeds the model's context of {model.context_length} tokens")
    ref = Model.load(reference, threads=threads) if reference else None
    ids = corpus_tokens(model, text)
    n_windows = min(max_tokens, len(ids) - 1) // window
    if n_windows:
        click.echo(f"eval: {n_windows} window(s) of {window} tokens from {text} ({len(ids):,} tokens)"
                   + (" against the reference" if ref else "") + "; ETA after the first window", err=True)
    progress = EvalProgress(window)
    interrupted = False
    try:
        result = evaluate(model, text, reference=ref, window=window, max_tokens=max_tokens, progress=progress,
                          ids=ids)
    except EvalInterrupted as e:
        progress.end_line()
        result, interrupted = e.result, True
    result["command"] = sys.argv
    if json_out:
        write_text(json_out, json.dumps(result, indent=2), "--json")
    click.echo(markdown_row(result, header=True))
    if interrupted:
        click.echo(f"edge-llm: interrupted after {result['tokens_scored']} tokens; partial results "
                   f"{'written to ' + str(json_out) if json_out else 'above'}", err=True)
        sys.exit(130)
