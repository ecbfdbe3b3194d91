"""`edge-llm bench PACKAGE_DIR [options]` and `edge-llm bench compare A.json B.json ...`.

`bench` is a group whose first argument is a subcommand only when it is "compare"; anything else
goes to the hidden `run` command, so a package folder can never be mistaken for a subcommand.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..cli_types import Float, check_threads, output_file, write_text
from ..errors import EdgeLLMError

FAST = {"pp": (16,), "tg": 8, "reps": 1, "warmup": 1, "depths": (0,), "bandwidth_mib": 64, "idle_seconds": 0.5}
FULL = {"pp": (128, 512), "tg": 128, "reps": 3, "warmup": 1, "depths": (0,), "bandwidth_mib": 512, "idle_seconds": 2.0}


class BenchGroup(click.Group):
    def parse_args(self, ctx, args):
        ctx.meta["bench_args"] = list(args)
        if not args or args[0] not in self.commands or args[0] == "run":
            args = ["run", *args]
        return super().parse_args(ctx, args)


class _RunContext(click.Context):
    @property
    def command_path(self) -> str:
        # usage and error hints name `edge-llm bench`, not the hidden `edge-llm bench run`
        return self.parent.command_path if self.parent else super().command_path


class _RunCommand(click.Command):
    context_class = _RunContext

    def format_usage(self, ctx, formatter):
        path = ctx.command_path
        formatter.write_usage(path, "[OPTIONS] [PACKAGE_DIR]")
        formatter.write(f"       {path} compare REPORT.json [REPORT.json ...] [--markdown OUT.md]\n")


class IntList(click.ParamType):
    """Comma-separated integers, each at least `min` ('auto' allowed for thread counts)."""
    name = "N[,N...]"

    def __init__(self, *, allow_auto: bool = False, min: int = 0, threads: bool = False):
        self.allow_auto, self.min, self.threads = allow_auto, min, threads

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        out = []
        for part in str(value).split(","):
            part = part.strip()
            if self.allow_auto and part == "auto":
                out.append(None)
                continue
            try:
                n = int(part)
            except ValueError:
                self.fail(f"'{value}' is not a comma-separated list of integers", param, ctx)
            if n < self.min:
                self.fail(f"{n} is below the minimum {self.min}", param, ctx)
            out.append(check_threads(n, param, ctx) if self.threads else n)
        return tuple(out)


@click.group(cls=BenchGroup, invoke_without_command=True)
def bench():
    """Benchmark a package: tokens/s, latency, memory, energy and cost per token."""


@bench.command("run", hidden=True, cls=_RunCommand,
               epilog="Compare reports from several machines with `edge-llm bench compare A.json B.json`.")
@click.argument("package_dir", required=False, type=click.Path(path_type=Path))
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the full report (JSON).")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the Markdown report.")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write PNG plots here (needs matplotlib).")
@click.option("--threads", type=IntList(allow_auto=True, min=1, threads=True), default=None,
              help="Thread counts to sweep, e.g. 1,2,4 ('auto' = physical cores; default auto).")
@click.option("-p", "--pp", type=IntList(min=1), default=None, help="Prompt sizes to prefill [default 128,512].")
@click.option("-n", "--tg", type=click.IntRange(min=1), default=None, help="Decode steps per tg test [default 128].")
@click.option("-d", "--depth", "depths", type=IntList(min=0), default=None,
              help="Context depths for tg, e.g. 0,1024 [default 0].")
@click.option("-r", "--reps", type=click.IntRange(min=1), default=None,
              help="Measured repetitions per test [default 3].")
@click.option("--warmup", type=click.IntRange(min=0), default=None, help="Warm-up repetitions per test [default 1].")
@click.option("--fast", is_flag=True, help="Tiny settings for CI: pp 16, tg 8, 1 rep, 64 MiB bandwidth probe.")
@click.option("--bandwidth-mib", type=click.IntRange(min=0), default=None,
              help="Memory bandwidth probe size; 0 disables [default 512].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the random prompt ids.")
@click.option("--cpu-watts", type=Float(min=0, min_open=True), default=None,
              help="CPU power at full load on all cores, for the energy estimate when no counter is readable.")
@click.option("--price-per-kwh", type=Float(min=0), default=None, help="Electricity price [default 0.15].")
@click.option("--currency", default="USD", show_default=True, help="Label for prices.")
@click.option("--device-price", type=Float(min=0), default=None, help="Hardware price, amortised over its life.")
@click.option("--lifetime-years", type=Float(min=0, min_open=True), default=None, help="Hardware lifetime [default 5].")
@click.option("--duty-cycle", type=Float(0, 1, min_open=True), default=1.0, show_default=True,
              help="Fraction of the time spent generating.")
@click.pass_context
def run_cmd(ctx, package_dir, json_out, md_out, plots_dir, threads, pp, tg, depths, reps, warmup, fast,
            bandwidth_mib, seed, cpu_watts, price_per_kwh, currency, device_price, lifetime_years, duty_cycle):
    """Benchmark a package (default: the bundled tiny model) like llama-bench, plus memory bandwidth,
    energy and cost per token. Prints the Markdown summary; --json keeps every repetition."""
    from .report import render_markdown, write_json, write_plots
    from .runner import DEFAULT_LIFETIME_YEARS, DEFAULT_PRICE_PER_KWH, run_bench

    preset = FAST if fast else FULL
    given = {"pp": pp, "tg": tg, "depths": depths, "reps": reps, "warmup": warmup, "bandwidth_mib": bandwidth_mib}
    s = {k: preset[k] if given.get(k) is None else given[k] for k in preset}
    _check_outputs(json_out, md_out, plots_dir)
    if package_dir is None:
        from ..paths import BUNDLED
        package_dir = BUNDLED
    progress = _progress_display()
    report = run_bench(
        package_dir, threads_list=threads or (None,), pp=s["pp"], tg=s["tg"], depths=s["depths"], reps=s["reps"],
        warmup=s["warmup"], bandwidth_mib=s["bandwidth_mib"], idle_seconds=s["idle_seconds"], seed=seed,
        progress=progress, cpu_watts=cpu_watts,
        price_per_kwh=DEFAULT_PRICE_PER_KWH if price_per_kwh is None else price_per_kwh,
        device_price=device_price, lifetime_years=DEFAULT_LIFETIME_YEARS if lifetime_years is None else lifetime_years,
        duty_cycle=duty_cycle, currency=currency, command=["edge-llm", "bench", *ctx.meta.get("bench_args", [])])
    if report["interrupted"] and progress:
        sys.stderr.write("\n")  # end the progress line
    plots: list[str] = []
    if plots_dir:
        plots, note = write_plots(report, plots_dir)
        if note:
            report["notes"].append(note)
    if json_out:
        try:
            write_json(report, json_out)
        except OSError as e:
            raise EdgeLLMError(f"--json {json_out}: cannot write ({e.strerror or e})") from None
    # image links relative to the Markdown file, so the report folder can be moved or committed
    base = md_out.resolve().parent if md_out else Path.cwd()
    text = render_markdown(report, plots=[os.path.relpath(Path(p).resolve(), base) for p in plots])
    if md_out:
        write_text(md_out, text, "--markdown")
    click.echo(text)
    if report["interrupted"]:
        click.echo("edge-llm: interrupted; partial results written", err=True)
        sys.exit(130)


@bench.command("compare")
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the table here.")
def compare_cmd(reports, md_out):
    """One table across machines from bench JSON reports; refuses reports that do not compare."""
    from .report import compare_reports
    output_file(md_out, "--markdown")
    text = compare_reports(reports)
    if md_out:
        write_text(md_out, text, "--markdown")
    click.echo(text)


def _check_outputs(json_out, md_out, plots_dir) -> None:
    """Before a run of minutes: the report files' folders exist (none is created) and plots can be drawn."""
    output_file(json_out, "--json")
    output_file(md_out, "--markdown")
    if plots_dir:
        import importlib.util
        if importlib.util.find_spec("matplotlib") is None:
            raise EdgeLLMError("--plots needs matplotlib, which is not installed (pip install matplotlib, or "
                               "pip install -e '.[bench]' in the edge-llm checkout)")
        if not plots_dir.parent.is_dir():
            raise EdgeLLMError(f"--plots {plots_dir}: folder {plots_dir.parent} does not exist")


def _progress_display():
    """`[ 3/12] threads 2 · pp128 · rep 1/3` rewritten in place on stderr; silent unless a terminal."""
    if not sys.stderr.isatty():
        return None

    def show(label: str, done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r\033[K[{done:>{len(str(total))}}/{total}] {label}{end}")
        sys.stderr.flush()

    return show
