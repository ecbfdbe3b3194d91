"""`edge-llm` command line. Thin: parse, call one library function, print.

Domain errors (EdgeLLMError) become one line on stderr and exit code 1; tracebacks only with --debug.
Heavy imports (onnx, onnxruntime) happen inside the commands.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .errors import EdgeLLMError

BUNDLED = Path(__file__).parent / "bundled" / "minicpm-tiny-int4"


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeLLMError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"edge-llm: error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("\nedge-llm: interrupted", err=True)
            sys.exit(130)


@click.group(cls=Group)
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.version_option(package_name="edge-llm")
@click.pass_context
def main(ctx, debug):
    """Run 2B-class language models on ordinary CPUs."""
    ctx.obj = {"debug": debug}


def _progress_bar(label):
    """Progress over tensors on stderr: a bar in a terminal, a line every 10% otherwise (logs, pipes)."""
    state = {"next": 0.1}

    def update(name, i, n):
        if not sys.stderr.isatty():
            if i / n >= state["next"] or i == n:
                click.echo(f"{label}: {i}/{n} ({i / n:.0%}) {name}", err=True)
                state["next"] = int(i / n * 10 + 1) / 10
            return
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = click.progressbar(length=n, label=label, file=sys.stderr, show_pos=True)
            bar.__enter__()
        bar.update(1)
        if i == n:
            bar.__exit__(None, None, None)

    return update


@main.command("export")
@click.argument("checkpoint_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path), help="Package folder to write.")
@click.option("--precision", type=click.Choice(["int4", "fp32"]), default="int4", show_default=True)
@click.option("--recipe", "recipe_name", default=None, help="Named quantization recipe (see README); overrides defaults.")
@click.option("--block-size", type=int, default=None, help="int4 block size along K: 16, 32, 64, 128 or 256.")
@click.option("--asymmetric/--symmetric", default=None, help="int4 blocks with a zero point, or symmetric.")
@click.option("--accuracy-level", type=int, default=None, help="MatMulNBits accuracy level (4 = int8 activations).")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Text file for activation-aware recipes (default: bundled calibration text).")
@click.option("--target", type=click.Choice(["any", "arm"]), default="any", show_default=True,
              help="'arm' keeps every tensor on onnxruntime's ARM (KleidiAI) fast path.")
@click.option("--force", is_flag=True, help="Replace an existing package folder.")
@click.option("--no-validate", is_flag=True, help="Skip loading the result and checking it against a reference.")
def export_cmd(checkpoint_dir, output, precision, recipe_name, block_size, asymmetric, accuracy_level, calibration,
               target, force, no_validate):
    """Export a Hugging Face MiniCPM checkpoint folder to an int4 ONNX package."""
    from .export.cli_support import run_export
    result = run_export(checkpoint_dir, output, precision=precision, recipe_name=recipe_name, block_size=block_size,
                        asymmetric=asymmetric, accuracy_level=accuracy_level, calibration=calibration, target=target,
                        force=force, validate=not no_validate, progress=_progress_bar("tensors"))
    click.echo(result)


@main.command()
@click.option("--shape", type=click.Choice(["minicpm-2b", "minicpm-1b"]), default="minicpm-2b", show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path))
@click.option("--format", "weight_format", type=click.Choice(["bin", "safetensors"]), default="bin", show_default=True)
@click.option("--layers", type=int, default=None, help="Override the number of layers (quick experiments).")
@click.option("--seed", type=int, default=0, show_default=True)
def synth(shape, output, weight_format, layers, seed):
    """Write a checkpoint with MiniCPM's real shapes and tokenizer and random bf16 weights (for speed tests)."""
    from .export.synth import write_synthetic
    write_synthetic(output, shape=shape, weight_format=weight_format, seed=seed, layers=layers,
                    progress=_progress_bar("tensors"))
    click.echo(f"wrote {output}")


def _sampling_options(f):
    for opt in reversed([
        click.option("--max-new-tokens", type=int, default=256, show_default=True),
        click.option("--temperature", type=float, default=None, help="0 means greedy (default: generation_config)."),
        click.option("--top-k", type=int, default=None),
        click.option("--top-p", type=float, default=None),
        click.option("--min-p", type=float, default=None),
        click.option("--repetition-penalty", type=float, default=None),
        click.option("--seed", type=int, default=None, help="Makes sampled output reproducible."),
        click.option("--threads", type=int, default=None, help="Intra-op threads (default: physical cores)."),
        click.option("--context", "context_length", type=int, default=None, help="KV cache length (default: the model's)."),
        click.option("--stats", is_flag=True, help="Print prompt and decode tokens/s after each reply (stderr)."),
    ]):
        f = opt(f)
    return f


def _load(package_dir, threads, context_length):
    from .api import Model
    return Model.load(package_dir or BUNDLED, threads=threads, context_length=context_length)


def _params(model, temperature, top_k, top_p, min_p, repetition_penalty, seed):
    return model.sampling(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                          repetition_penalty=repetition_penalty, seed=seed)


@main.command()
@click.argument("package_dir", required=False, type=click.Path(path_type=Path))
@click.option("--prompt", default=None, help="One-shot: reply to this message and exit ('-' reads stdin).")
@_sampling_options
def chat(package_dir, prompt, max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty, seed, threads,
         context_length, stats):
    """Multi-turn chat in the model's template (default: the bundled tiny model)."""
    from .chat import one_shot, repl
    model = _load(package_dir, threads, context_length)
    params = _params(model, temperature, top_k, top_p, min_p, repetition_penalty, seed)
    if prompt is not None:
        text = sys.stdin.read() if prompt == "-" else prompt
        one_shot(model, text, params=params, max_new_tokens=max_new_tokens, stats=stats)
    else:
        repl(model, params=params, max_new_tokens=max_new_tokens, stats=stats)


@main.command()
@click.argument("package_dir", required=False, type=click.Path(path_type=Path))
@click.option("--prompt", required=True, help="Text to continue ('-' reads stdin).")
@_sampling_options
def generate(package_dir, prompt, max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty, seed, threads,
             context_length, stats):
    """Plain completion of the prompt as given (no chat template); prints only the continuation."""
    from .chat import print_stream
    model = _load(package_dir, threads, context_length)
    params = _params(model, temperature, top_k, top_p, min_p, repetition_penalty, seed)
    text = sys.stdin.read() if prompt == "-" else prompt
    print_stream(model.stream(text, params=params, max_new_tokens=max_new_tokens), stats=stats)


def _register_optional():
    from . import commands  # noqa: F401  (bench / eval register themselves on `main`)


_register_optional()


if __name__ == "__main__":
    # run the registered instance (commands.py adds bench/eval to edge_llm.cli.main, not to __main__.main)
    from edge_llm.cli import main as registered
    registered(prog_name="edge-llm")
