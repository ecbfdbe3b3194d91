"""`edge-llm serve`: load one package and serve it over HTTP (OpenAI API, chat page, /metrics)."""
from __future__ import annotations

import ipaddress
import signal
from pathlib import Path

import click

from ..cli_types import Threads, metrics_log_option, note_context_clamp, speculate_option
from ..errors import Terminated

DEFAULT_MAX_TOKENS = 1024      # the same as edge_llm.serve.app's (not imported: starlette may be missing)

LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_cache_mb() -> float:
    """The prompt cache's default budget: an eighth of the memory available at start, at most 1 GiB
    (a 4 GiB board with 2 GiB free gets 256 MiB; a laptop with 16 GiB free, 1 GiB)."""
    from ..session import available_memory
    avail = available_memory()
    return 1024.0 if avail is None else max(16.0, min(1024.0, avail / 8 / 2 ** 20))


@click.command("serve")
@click.argument("package_dir", required=False, type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (other machines: 0.0.0.0).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--api-key", envvar="EDGE_LLM_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' on the API (env EDGE_LLM_API_KEY).")
@click.option("--model-name", default=None, help="Model id in the API (default: the package folder's name).")
@click.option("-n", "--max-tokens", type=click.IntRange(0), default=DEFAULT_MAX_TOKENS, show_default=True,
              help="Reply length for a request that names no max_tokens, and the most any request gets "
                   "(more is clamped; finish_reason 'length'). 0: only the context limits it.")
@click.option("--slots", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Requests generating at once, decoded together: one forward per step with a row per "
                   "request (llama-server's -np). With --speculate lookup|draft they take turns instead.")
@click.option("--max-queue", type=click.IntRange(0, 10_000), default=16, show_default=True,
              help="Requests waiting for a slot; more get 429 with Retry-After.")
@click.option("--cache-mb", type=click.FloatRange(0), default=None,
              help="Memory budget of the prompt cache (KV of recent conversations), MiB "
                   "(default: 1/8 of the memory available at start, at most 1024).")
@click.option("--max-body-kb", type=click.IntRange(1), default=2048, show_default=True, help="Request body limit, KiB.")
@click.option("-t", "--threads", type=Threads(), default=None,
              help="Intra-op threads, 1..2x physical cores (default: physical cores).")
@click.option("-c", "--context", "context_length", type=click.IntRange(2), default=None,
              help="Context length per request (default: the model's); caps max_tokens.")
@metrics_log_option()
@click.option("--cpu-watts", type=click.FloatRange(0, min_open=True), default=None,
              help="Full-load CPU power for the energy estimate when no energy counter exists (as bench).")
@click.option("--price-per-kwh", type=click.FloatRange(0), default=None, help="Electricity price (default 0.15).")
@click.option("--currency", default="USD", show_default=True)
@click.option("--device-price", type=click.FloatRange(0), default=None, help="Hardware price, amortised per reply.")
@click.option("--lifetime-years", type=click.FloatRange(0, min_open=True), default=None,
              help="Hardware lifetime (default 5).")
@click.option("--duty-cycle", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True)
@speculate_option(expose_value=True)
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True)
def serve(package_dir, host, port, api_key, model_name, max_tokens, slots, max_queue, cache_mb, max_body_kb, threads,
          context_length, cpu_watts, price_per_kwh, currency, device_price, lifetime_years, duty_cycle,
          speculate, log_level):
    """OpenAI-compatible server and chat page on one loaded model (default: the bundled tiny model)."""
    try:
        import uvicorn

        from .app import build_app
        from .server import GRACE_S, Server, bind_socket
    except ImportError as e:
        raise click.ClickException(f"`edge-llm serve` needs the serve extra: pip install -e '.[serve]' in the "
                                   f"edge-llm checkout ({e.name} is missing)") from None
    from ..api import Model
    from ..metering.step import StepMeter
    from ..records import DEFAULT_LIFETIME_YEARS, DEFAULT_PRICE_PER_KWH, CostSettings
    from .engine import Engine

    if not is_loopback(host) and not api_key:
        click.secho(f"WARNING: serving on {host} to other machines WITHOUT an API key: anyone who can reach "
                    f"port {port} can use this model. Pass --api-key or set EDGE_LLM_API_KEY.", fg="red", bold=True,
                    err=True)
    sock = bind_socket(host, port)     # before the model loads: a port in use is one line, exit 1
    port = sock.getsockname()[1]
    model = Model.load(package_dir, threads=threads, context_length=context_length, speculate=speculate)
    note_context_clamp(context_length, model)
    meter = StepMeter(cpu_watts=cpu_watts)
    if meter.measured:
        click.echo("measuring idle power for 2 s (subtracted from each reply's energy, as bench does)…", err=True)
        meter.measure_idle(2.0)
    costs = CostSettings(price_per_kwh=DEFAULT_PRICE_PER_KWH if price_per_kwh is None else price_per_kwh,
                         currency=currency, device_price=device_price, duty_cycle=duty_cycle,
                         lifetime_years=DEFAULT_LIFETIME_YEARS if lifetime_years is None else lifetime_years)
    name = model_name or model.manifest.path.resolve().name
    cache_mb = default_cache_mb() if cache_mb is None else cache_mb
    engine = Engine(model, name=name, slots=slots, max_queue=max_queue, cache_bytes=int(cache_mb * 2 ** 20),
                    costs=costs, meter=meter)
    app = build_app(engine, api_key=api_key, max_body_bytes=max_body_kb * 1024, max_tokens=max_tokens or None,
                    allowed_hosts=LOOPBACK_HOSTS if is_loopback(host) else None)
    engine.start()
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"edge-llm serve · {name} · context {model.context_length} · max tokens "
               f"{max_tokens or 'context'} · {slots} slot(s) "
               f"{'decoding together' if engine.batched else 'taking turns'}, "
               f"queue {max_queue} · prompt cache {cache_mb:.0f} MiB · "
               f"energy {meter.describe()} · speculation {engine.speculation_label}", err=True)
    click.echo(f"chat page: http://{shown}:{port}/   API: http://{shown}:{port}/v1", err=True)
    server = Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, server_header=False,
                                   timeout_graceful_shutdown=GRACE_S), engine)
    try:
        server.run(sockets=[sock])
    finally:
        engine.close()
    if signal.SIGTERM in server.signals:
        raise Terminated(signal.SIGTERM)
    if server.signals:
        raise KeyboardInterrupt
