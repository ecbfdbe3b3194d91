"""`edge-llm eval`: perplexity, and KL / top-1 / Δp against a reference package."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command("eval")
@click.argument("package_dir", type=click.Path(path_type=Path))
@click.option("--text", "text", required=True, type=click.Path(path_type=Path), help="Text file (documents split on \\x1e).")
@click.option("--reference", "reference", type=click.Path(path_type=Path), default=None,
              help="Reference package (e.g. the fp32 export) for KL divergence and top-1 agreement.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None)
@click.option("--max-tokens", type=int, default=200_000, show_default=True)
@click.option("--window", type=int, default=512, show_default=True)
@click.option("--threads", type=int, default=None)
def eval_cmd(package_dir, text, reference, json_out, max_tokens, window, threads):
    """Perplexity of a package on a text file (and agreement with a reference package)."""
    from .api import Model
    from .evaluate import evaluate, markdown_row

    model = Model.load(package_dir, threads=threads)
    ref = Model.load(reference, threads=threads) if reference else None

    def progress(i, n):
        if sys.stderr.isatty():
            click.echo(f"\rwindow {i}/{n}", err=True, nl=(i == n))

    result = evaluate(model, text, reference=ref, window=window, max_tokens=max_tokens, progress=progress)
    result["command"] = sys.argv
    if json_out:
        json_out.write_text(json.dumps(result, indent=2))
    click.echo(markdown_row(result, header=True))
