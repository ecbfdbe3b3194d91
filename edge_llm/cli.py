"""`edge-llm` command line. Thin: parse, call one library function, print.

Every error is one line on stderr ("edge-llm: error: ..." or "edge-llm: internal error: ..."); tracebacks
only with --debug. Exit codes: 0 ok · 1 domain error (bad checkpoint, package, file, serve's port in use;
EdgeLLMError) · 2 bad usage or value (click, one line) · 70 internal error (a bug: one line naming the exception) ·
130 Ctrl-C · 141 stdout closed (`| head`) · 143 SIGTERM. docs/bad-input.md lists the cases.
Heavy imports (onnx, onnxruntime) happen inside the commands.
"""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import click

from .bench.cli import bench
from .cli_types import (
    Float,
    Threads,
    metrics_log_option,
    note_context_clamp,
    read_stdin_text,
    speculate_option,
    unescape,
)
from .errors import EdgeLLMError, Terminated
from .eval_cli import eval_cmd
from .manifest import KV_DTYPES
from .paths import BUNDLED
from .serve.cli import serve  # its heavy imports (starlette, uvicorn) happen when it runs

EXIT_ERROR, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_PIPE = 1, 2, 70, 130, 141


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _undecodable(args) -> str | None:
    for a in args:
        try:
            a.encode("utf-8")
        except UnicodeEncodeError:
            return a
    return None


def _debug(ctx) -> bool:
    return bool(ctx.obj and ctx.obj.get("debug"))


class Group(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        argv = sys.argv[1:] if args is None else list(args)
        bad = _undecodable(argv)
        if bad is not None:
            shown = bad.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
            click.echo(f"edge-llm: error: argument '{shown}' is not valid UTF-8 (text and file names must be)",
                       err=True)
            sys.exit(EXIT_USAGE)
        try:
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:
            hint = f" (see '{e.ctx.command_path} --help')" if getattr(e, "ctx", None) else ""
            click.echo(f"edge-llm: error: {_one_line(e.format_message()).rstrip('.')}{hint}", err=True)
            sys.exit(e.exit_code)
        except click.exceptions.Abort:
            click.echo("edge-llm: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except EdgeLLMError as e:
            if _debug(ctx):
                raise
            click.echo(f"edge-llm: error: {_one_line(e, 1000)}", err=True)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo("\nedge-llm: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Terminated as e:
            click.echo("edge-llm: terminated", err=True)
            sys.exit(128 + e.signum)
        except BrokenPipeError:
            # the reader went away (`edge-llm generate ... | head -1`): stop quietly, like `yes | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_PIPE)
        except Exception as e:  # noqa: BLE001  (the last line of defence: one line, not a traceback)
            if _debug(ctx):
                raise
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                click.echo(f"edge-llm: error: disk full ({_one_line(e)})", err=True)
                sys.exit(EXIT_ERROR)
            click.echo(f"edge-llm: internal error: {type(e).__name__}: {_one_line(e)} "
                       f"(run with --debug for the traceback)", err=True)
            sys.exit(EXIT_INTERNAL)


@click.group(cls=Group)
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.version_option(package_name="edge-llm")
@click.pass_context
def main(ctx, debug):
    """Run 2B-class language models on ordinary CPUs."""
    ctx.obj = {"debug": debug}


class Progress:
    """Progress over tensors on stderr: a bar in a terminal, a line every 10% otherwise (logs, pipes).
    finish() ends it at 100% on a line of its own, whatever count the caller reached."""

    def __init__(self, label: str):
        self.label, self.next, self.bar, self.n, self.shown = label, 0.1, None, 0, 0

    def __call__(self, name: str, i: int, n: int) -> None:
        self.n = n
        if not sys.stderr.isatty():
            if i / n >= self.next or i == n:
                click.echo(f"{self.label}: {i}/{n} ({i / n:.0%}) {name}", err=True)
                self.next, self.shown = int(i / n * 10 + 1) / 10, i
            return
        if self.bar is None:
            self.bar = click.progressbar(length=n, label=self.label, file=sys.stderr, show_pos=True)
            self.bar.__enter__()
        self.bar.update(i - self.bar.pos)

    def abort(self) -> None:
        """End a terminal bar's line so an error message starts on its own."""
        if self.bar is not None:
            self.bar = None
            click.echo("", err=True)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.update(self.n - self.bar.pos)
            self.bar.__exit__(None, None, None)
            self.bar = None
        elif self.n and self.shown < self.n:
            click.echo(f"{self.label}: {self.n}/{self.n} (100%) done", err=True)
            self.shown = self.n


BLOCK_SIZES = ("16", "32", "64", "128", "256")


@main.command("export")
@click.argument("checkpoint_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="Package folder to write.")
@click.option("--precision", type=click.Choice(["int4", "fp32"]), default="int4", show_default=True)
@click.option("--recipe", "recipe_name", default=None,
              help="Named quantization recipe (see README); overrides defaults.")
@click.option("--bpw", type=click.FloatRange(2.0, 16.0), default=None,
              help="Bits-per-weight budget: weight bytes <= BPW x parameters / 8, each tensor's bits (4, 6, 8) and "
                   "block chosen by measured error on calibration text. Presets: see README.")
@click.option("--block-size", type=click.Choice(BLOCK_SIZES), default=None, help="int4 block size along K.")
@click.option("--asymmetric/--symmetric", default=None, help="int4 blocks with a zero point, or symmetric.")
@click.option("--accuracy-level", type=click.IntRange(0, 4), default=None,
              help="MatMulNBits accuracy level 0-4 (4 = int8 activations).")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Text file for activation-aware recipes (default: bundled calibration text).")
@click.option("--target", type=click.Choice(["any", "arm"]), default="any", show_default=True,
              help="'arm' keeps every tensor on onnxruntime's ARM (KleidiAI) fast path (block size <= 128).")
@click.option("--force", is_flag=True, help="Replace an existing edge-llm package folder (never anything else).")
@click.option("--no-validate", is_flag=True, help="Skip loading the result and checking it against a reference.")
@click.option("--kv-dtype", type=click.Choice(KV_DTYPES), default="float32", show_default=True,
              help="KV cache type recorded in the package (float16 halves its memory; see README).")
@click.option("--context-length", type=click.IntRange(min=1), default=None,
              help="Longest context the package serves (default: the model's, capped at 32768).")
def export_cmd(checkpoint_dir, output, precision, recipe_name, bpw, block_size, asymmetric, accuracy_level, calibration,
               target, force, no_validate, kv_dtype, context_length):
    """Export a Hugging Face checkpoint folder (Llama, Mistral, Qwen2, Qwen3, MiniCPM) or a GGUF file to an int4
    ONNX package. A GGUF's Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K/Q6_K tensors are carried exactly; the recipe
    quantizes its float tensors."""
    from .export.recipe import ARM_MAX_BLOCK, arm_block
    block_size = int(block_size) if block_size else None
    if target == "arm" and block_size and arm_block(block_size) != block_size:
        raise click.BadParameter(f"{block_size} with --target arm: the ARM int4 kernels take blocks of at most "
                                 f"{ARM_MAX_BLOCK}", param_hint="'--block-size'")
    from .export.cli_support import run_export
    progress = Progress("tensors")
    try:
        result = run_export(checkpoint_dir, output, precision=precision, recipe_name=recipe_name,
                            block_size=block_size, asymmetric=asymmetric, accuracy_level=accuracy_level,
                            calibration=calibration, target=target, force=force, validate=not no_validate,
                            kv_dtype=kv_dtype, context_length=context_length, progress=progress, bpw=bpw)
    except BaseException:
        progress.abort()
        raise
    progress.finish()
    click.echo(result)


@main.command()
@click.option("--shape", type=click.Choice(["minicpm-2b", "minicpm-1b", "qwen2.5-1.5b"]), default="minicpm-2b",
              show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path))
@click.option("--format", "weight_format", type=click.Choice(["bin", "safetensors"]), default="bin", show_default=True)
@click.option("--layers", type=click.IntRange(min=1), default=None,
              help="Override the number of layers (quick experiments).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def synth(shape, output, weight_format, layers, seed):
    """Write a checkpoint with a release's real shapes (and MiniCPM-2B's tokenizer) and random bf16 weights
    (speed tests)."""
    from .export.synth import write_synthetic
    progress = Progress("tensors")
    write_synthetic(output, shape=shape, weight_format=weight_format, seed=seed, layers=layers, progress=progress)
    progress.finish()
    click.echo(f"wrote {output}")


def _sampling_options(f):
    for opt in reversed([
        click.option("-n", "--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True),
        click.option("--temperature", type=Float(min=0), default=None,
                     help="0 means greedy (default: generation_config)."),
        click.option("--top-k", type=click.IntRange(min=0), default=None, help="0 = off."),
        click.option("--top-p", type=Float(0, 1, min_open=True), default=None, help="In (0, 1]; 1 = off."),
        click.option("--min-p", type=Float(0, 1, max_open=True), default=None, help="In [0, 1); 0 = off."),
        click.option("--repetition-penalty", type=Float(min=0, min_open=True), default=None, help="> 0; 1 = off."),
        click.option("-s", "--seed", type=click.IntRange(min=0), default=None,
                     help="Makes sampled output reproducible."),
        click.option("-t", "--threads", type=Threads(), default=None,
                     help="Intra-op threads, 1..2x physical cores (default: physical cores)."),
        click.option("-c", "--context", "context_length", type=click.IntRange(min=1), default=None,
                     help="KV cache length (default: the model's)."),
        click.option("--stats", is_flag=True,
                     help="After each reply print tokens, tokens/s, TTFT, energy, cost (stderr)."),
        metrics_log_option(),   # --metrics-log FILE.jsonl (cli_types.py: chat, generate and serve share it)
        speculate_option(),     # --speculate (cli_types.py: chat, generate and serve share it)
    ]):
        f = opt(f)
    return f


def _load(package_dir, threads, context_length):
    from .api import Model
    speculate = click.get_current_context().meta.get("edge_llm.speculate")
    model = Model.load(package_dir or BUNDLED, threads=threads, context_length=context_length, speculate=speculate)
    note_context_clamp(context_length, model)
    return model


def _params(model, temperature, top_k, top_p, min_p, repetition_penalty, seed):
    return model.sampling(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                          repetition_penalty=repetition_penalty, seed=seed)


@main.command()
@click.argument("package_dir", required=False, type=click.Path(path_type=Path))
@click.option("-p", "--prompt", default=None, help="One-shot: reply to this message and exit ('-' reads stdin).")
@click.option("-sys", "--system", default=None,
              help="System prompt: first in every prompt, kept by /reset and when old turns are dropped.")
@click.option("--separator", default="\\n", show_default=True, callback=lambda c, p, v: unescape(v),
              help="Written after each reply in a pipe, so replies with blank lines can be split; "
                   "escapes \\0 \\n \\t \\\\ (e.g. '\\0' for NUL, as xargs -0 reads).")
@_sampling_options
def chat(package_dir, prompt, system, separator, max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty,
         seed, threads, context_length, stats):
    """Multi-turn chat in the model's template (default: the bundled tiny model).

    In a pipe, each input line is one user turn and each reply ends with --separator; a line that
    fails (too long, not UTF-8) is an error line on stderr, the chat goes on, and the exit code is 1
    at the end. In a terminal, Ctrl-C stops a reply, and at an empty prompt quits."""
    from .chat import one_shot, repl
    text = read_stdin_text() if prompt == "-" else prompt
    model = _load(package_dir, threads, context_length)
    params = _params(model, temperature, top_k, top_p, min_p, repetition_penalty, seed)
    if text is not None:
        one_shot(model, text, params=params, max_new_tokens=max_new_tokens, stats=stats, system=system)
    elif repl(model, params=params, max_new_tokens=max_new_tokens, stats=stats, system=system, separator=separator):
        sys.exit(EXIT_ERROR)


@main.command()
@click.argument("package_dir", required=False, type=click.Path(path_type=Path))
@click.option("-p", "--prompt", required=True, help="Text to continue ('-' reads stdin).")
@_sampling_options
def generate(package_dir, prompt, max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty, seed, threads,
             context_length, stats):
    """Plain completion of the prompt as given (no chat template); prints only the continuation."""
    from .chat import print_stream
    text = read_stdin_text() if prompt == "-" else prompt
    model = _load(package_dir, threads, context_length)
    params = _params(model, temperature, top_k, top_p, min_p, repetition_penalty, seed)
    print_stream(model.stream(text, params=params, max_new_tokens=max_new_tokens), stats=stats)


main.add_command(bench)
main.add_command(eval_cmd)
main.add_command(serve)

if __name__ == "__main__":
    main(prog_name="edge-llm")
