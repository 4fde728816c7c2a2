"""The ims-gateway command: serve, check-config, report, emulator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web

from gateway import __version__, config
from gateway.config.generation import read_credentials
from gateway.config.schema import Address, Settings, SettingsError
from gateway.edge.server import GatewayRunner
from gateway.edge.signing import Credentials, load_keys
from gateway.service import allocator, reload, report_command, workers
from gateway.service.app import build_admin_app, build_app, runner_options
from gateway.service.state import Lifecycle
from gateway.telemetry import logs

log = logging.getLogger("ims_gateway")

COMMANDS = ("serve", "check-config", "report", "emulator")


def _address(text: str) -> str:
    try:
        Address.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return text


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number >= 1")
    return int(text)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="ims-gateway",
        description="Migration gateway in front of Huawei Cloud IMS's deprecated PATCH /v2/images API.",
    )
    top.add_argument("--version", action="version", version=f"ims-gateway {__version__}")
    commands = top.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway (the default command)")
    serve.add_argument("--config", metavar="FILE", help="TOML config file (see config/gateway.toml)")
    serve.add_argument("--upstream", metavar="URL", help="IMS base URL (overrides upstream.url); none: built-in emulator")
    serve.add_argument("--listen", metavar="HOST:PORT", type=_address, help="overrides server.listen")
    serve.add_argument("--admin-listen", metavar="HOST:PORT", type=_address, help="overrides server.admin_listen")
    serve.add_argument("--workers", metavar="N", type=_count, help="processes sharing the listeners (overrides server.workers)")
    # Set by the supervisor on the workers it starts: serve these sockets (gateway, admin).
    serve.add_argument(workers.INHERIT_FLAG, metavar="FD,FD", help=argparse.SUPPRESS)

    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file", metavar="FILE")

    report_command.add_parser(commands)

    emulator = commands.add_parser("emulator", help="run only the built-in IMS emulator")
    emulator.add_argument("--listen", metavar="HOST:PORT", type=_address, default="127.0.0.1:8774")
    emulator.add_argument(
        "--credentials-file", metavar="FILE",
        help="ACCESS_KEY:SECRET_KEY lines: verify every request's AK/SK signature as IMS does (401 otherwise)",
    )  # fmt: skip
    return top


def flag_overrides(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    flags = (("listen", args.listen), ("admin_listen", args.admin_listen), ("workers", args.workers))
    server = {key: value for key, value in flags if value}
    upstream = {"url": args.upstream} if args.upstream is not None else {}
    return {name: table for name, table in (("server", server), ("upstream", upstream)) if table}


def server_ssl(settings: Settings) -> ssl.SSLContext | None:
    if not settings.server.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.server.tls_cert, settings.server.tls_key)
    return context


def _bound(runner: web.AppRunner) -> str:
    return ", ".join(str(Address(*sock.getsockname()[:2])) for site in runner.sites for sock in site._server.sockets)  # type: ignore[union-attr]


async def serve(
    settings: Settings,
    load: Callable[[], Settings] | None = None,
    sockets: tuple[socket.socket, socket.socket] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; SIGHUP (or POST /reload on the admin listener) re-runs ``load``.

    ``sockets`` (gateway, admin) are a worker's listeners, inherited from the supervisor.
    """
    from ims_emulator.app import start_emulator

    url = settings.upstream.url
    emulator_runner = None
    if not url:
        keys = read_credentials(settings.emulator.credentials_file)
        emulator_runner, url = await start_emulator("127.0.0.1", 0, credentials=keys)
        log.warning(
            "no upstream configured (upstream.url, IMS_GATEWAY_UPSTREAM_URL or --upstream): "
            "started the built-in IMS emulator at %s; it keeps images in memory only",
            url,
        )
    lifecycle = Lifecycle()
    gateway = build_app(settings, upstream_url=url, lifecycle=lifecycle, load=load)
    runner = GatewayRunner(gateway, shutdown_timeout=settings.server.drain_timeout, **runner_options(settings))
    admin_runner = web.AppRunner(build_admin_app(gateway), access_log=None)
    await runner.setup()
    await admin_runner.setup()
    listen, admin = settings.server.listen, settings.server.admin_listen
    if sockets is None:
        await web.TCPSite(runner, listen.host, listen.port, ssl_context=server_ssl(settings)).start()
        await web.TCPSite(admin_runner, admin.host, admin.port).start()
    else:
        await web.SockSite(runner, sockets[0], ssl_context=server_ssl(settings)).start()
        await web.SockSite(admin_runner, sockets[1]).start()
    scheme = "https" if settings.server.tls_cert else "http"
    log.info(
        "ims-gateway %s listening on %s://%s (admin on http://%s), forwarding to %s; event loop: %s",
        __version__, scheme, _bound(runner), _bound(admin_runner), url, _loop_name(),
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second %s: exiting at once", signal.Signals(signum).name)
            logs.stop()  # os._exit runs no atexit hook: write what is queued first
            os._exit(1)
        # Readiness fails first; the listener keeps serving for drain_delay so that load
        # balancers stop sending before new connections are refused.
        lifecycle.draining = True
        log.info(
            "%s: draining: /readyz fails now, new connections are refused in %g s, "
            "in-flight requests then get %g s (a second signal exits at once)",
            signal.Signals(signum).name,
            settings.server.drain_delay,
            settings.server.drain_timeout,
        )
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    loop.add_signal_handler(signal.SIGHUP, reload.reload, gateway)
    watching = asyncio.ensure_future(workers.watch_parent(lambda: on_signal(signal.SIGTERM))) if sockets else None
    await stop.wait()
    if watching is not None:
        watching.cancel()
    await asyncio.sleep(settings.server.drain_delay)
    await runner.cleanup()
    await admin_runner.cleanup()
    if emulator_runner is not None:
        await emulator_runner.cleanup()
    log.info("stopped")
    return 0


def _loop_name() -> str:
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"


def emulator_credentials(path: str | None) -> Credentials:
    """The keys of ``emulator --credentials-file``; ValueError naming the problem, never a secret."""
    if path is None:
        return Credentials()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read it ({type(exc).__name__})") from None
    return load_keys(text)


def load_settings(args: argparse.Namespace) -> Settings:
    return config.load(args.config, overrides=flag_overrides(args))


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or (arguments[0].startswith("-") and arguments[0] not in ("-h", "--help", "--version")):
        arguments.insert(0, "serve")
    args = parser().parse_args(arguments)

    if args.command == "check-config":
        try:
            config.load(args.file)
        except SettingsError as exc:
            print(f"ims-gateway: {exc}", file=sys.stderr)
            return 2
        print(f"{args.file}: OK")
        return 0

    if args.command == "report":
        return report_command.run(args)

    if args.command == "emulator":
        from ims_emulator.app import run_emulator

        try:
            keys = emulator_credentials(args.credentials_file)
        except ValueError as exc:
            print(f"ims-gateway: --credentials-file {args.credentials_file}: {exc}", file=sys.stderr)
            return 2
        logs.configure("info")
        address = Address.parse(args.listen)
        run_emulator(address.host, address.port, credentials=keys)
        return 0

    try:
        settings = load_settings(args)
    except SettingsError as exc:
        print(f"ims-gateway: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.logging.level, settings.logging.access_log)
    inherited = args.inherit_sockets
    if settings.server.workers > 1 and inherited is None:
        return workers.supervise(settings, worker_command(args), settings.server.workers)
    sockets = workers.inherited(inherited) if inherited else None
    log.debug("allocator: %s", allocator.hold_steady())
    # A reload re-reads the same file, environment and flags.
    with asyncio.Runner(loop_factory=loop_factory(settings.server.event_loop)) as runner:
        return runner.run(serve(settings, load=lambda: load_settings(args), sockets=sockets))


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """server.event_loop: uvloop's loop (``auto`` when it is installed), or None for asyncio's own."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":  # check-config refuses it too; the environment may have changed since
            raise SystemExit("ims-gateway: server.event_loop = uvloop, but uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def worker_command(args: argparse.Namespace) -> list[str]:
    """The same program with the same file and flags (the environment is inherited too)."""
    command = [sys.executable, "-m", "gateway", "serve"]
    for flag, value in (("--config", args.config), ("--upstream", args.upstream), ("--listen", args.listen), ("--admin-listen", args.admin_listen)):
        if value is not None:
            command += [flag, value]
    return command
