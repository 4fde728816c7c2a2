"""The ims-gateway command: serve, check-config, report, emulator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from gateway.service import allocator, listening, reload, report_command, workers
from gateway.service.app import build_admin_app, build_app, runner_options
from gateway.service.state import Lifecycle
from gateway.telemetry import logs

log = logging.getLogger("ims_gateway")

COMMANDS = ("serve", "check-config", "report", "emulator")


def _address(text: str) -> str:
    try:
        Address.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {exc}") from None
    return text


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number >= 1")
    return int(text)


EMULATOR_LISTEN = "127.0.0.1:8774"


def parser() -> argparse.ArgumentParser:
    defaults = Settings()
    top = argparse.ArgumentParser(
        prog="ims-gateway",
        description="Migration gateway in front of Huawei Cloud IMS's deprecated PATCH /v2/images API.",
    )
    top.add_argument("--version", action="version", version=f"ims-gateway {__version__}")
    commands = top.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run the gateway (the default command)",
        description="Run the gateway. Settings come from the built-in defaults (shown below), then the --config "
        "file, then IMS_GATEWAY_<SECTION>_<KEY> environment variables, then these flags: the later wins.",
    )  # fmt: skip
    serve.add_argument("--config", metavar="FILE", help="TOML config file, e.g. config/gateway.toml (default: none, built-in defaults)")
    serve.add_argument(
        "--upstream", metavar="URL",
        help="IMS base URL, e.g. https://ims.ap-southeast-1.myhuaweicloud.com (upstream.url; default: none, start the built-in emulator)",
    )  # fmt: skip
    serve.add_argument("--listen", metavar="HOST:PORT", type=_address, help=f"where clients connect (server.listen; default: {defaults.server.listen})")
    serve.add_argument(
        "--admin-listen", metavar="HOST:PORT", type=_address,
        help=f"/healthz, /readyz, /metrics, /deprecations (server.admin_listen; default: {defaults.server.admin_listen})",
    )  # fmt: skip
    serve.add_argument(
        "--workers", metavar="N", type=_count,
        help=f"processes sharing the listeners; more than 1 needs an upstream (server.workers; default: {defaults.server.workers})",
    )  # fmt: skip
    # Set by the supervisor on the workers it starts: serve these sockets (gateway, admin).
    serve.add_argument(workers.INHERIT_FLAG, metavar="FD,FD", help=argparse.SUPPRESS)

    check = commands.add_parser(
        "check-config", help="validate a config file and exit",
        description="Validate a config file as serve would read it: exit 0 and print 'FILE: OK', or exit 2 naming every problem.",
    )  # fmt: skip
    check.add_argument("file", metavar="FILE", help="the TOML config file, e.g. config/gateway.toml (IMS_GATEWAY_* environment variables apply too, as for serve)")

    report_command.add_parser(commands)

    emulator = commands.add_parser(
        "emulator", help="run only the built-in IMS emulator",
        description="Run only the built-in IMS emulator (images in memory), one access log line per request.",
    )  # fmt: skip
    emulator.add_argument("--listen", metavar="HOST:PORT", type=_address, default=EMULATOR_LISTEN, help="where it listens (default: %(default)s)")
    emulator.add_argument(
        "--credentials-file", metavar="FILE",
        help="ACCESS_KEY:SECRET_KEY lines: verify every request's AK/SK signature as IMS does (401 otherwise; default: none, no signature needed)",
    )  # fmt: skip
    for command in commands.choices.values():
        command.set_defaults(command_parser=command)
    return top


def parse(arguments: Sequence[str]) -> argparse.Namespace:
    """The arguments; a flag the command does not know is refused with that command's usage."""
    top = parser()
    args, unknown = top.parse_known_args(arguments)
    if unknown:
        command: argparse.ArgumentParser = getattr(args, "command_parser", top)
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def flag_overrides(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    flags = (("listen", args.listen), ("admin_listen", args.admin_listen), ("workers", args.workers))
    server = {key: value for key, value in flags if value}
    upstream = {"url": args.upstream} if args.upstream is not None else {}
    return {name: table for name, table in (("server", server), ("upstream", upstream)) if table}


class CannotServeTls(Exception):
    """server.tls_cert / server.tls_key do not make a usable certificate and key."""


def server_ssl(settings: Settings) -> ssl.SSLContext | None:
    if not settings.server.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.server.tls_cert, settings.server.tls_key or None)
    except (ssl.SSLError, OSError) as exc:  # SSLError is an OSError: not a listening problem
        named = "server.tls_cert, server.tls_key" if settings.server.tls_key else "server.tls_cert"
        raise CannotServeTls(f"cannot use the TLS certificate and key ({named}): {exc.strerror or exc}") from exc
    return context


def _bound(runner: web.AppRunner) -> str:
    return ", ".join(str(Address(*sock.getsockname()[:2])) for site in runner.sites for sock in site._server.sockets)  # type: ignore[union-attr]


async def serve(
    settings: Settings,
    load: Callable[[], Settings] | None = None,
    sockets: tuple[socket.socket, socket.socket] | None = None,
    tls: ssl.SSLContext | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; SIGHUP (or POST /reload on the admin listener) re-runs ``load``.

    ``sockets`` (gateway, admin) are a worker's listeners, inherited from the supervisor;
    ``tls`` the listener's context, ``server_ssl(settings)`` (made once, by ``main``).
    """
    from ims_emulator.app import start_emulator

    url = settings.upstream.url
    # Whatever was started is stopped again, in reverse order, on the way out: after a
    # drain, or when a listener cannot be opened (nothing is left running then).
    started = contextlib.AsyncExitStack()
    async with started:
        if not url:
            keys = read_credentials(settings.emulator.credentials_file)
            emulator_runner, url = await start_emulator("127.0.0.1", 0, credentials=keys)
            started.push_async_callback(emulator_runner.cleanup)
        lifecycle = Lifecycle()
        gateway = build_app(settings, upstream_url=url, lifecycle=lifecycle, load=load)
        runner = GatewayRunner(gateway, shutdown_timeout=settings.server.drain_timeout, **runner_options(settings))
        admin_runner = web.AppRunner(build_admin_app(gateway), access_log=None)
        # The admin listener closes after the gateway's, so /readyz keeps answering "draining".
        await admin_runner.setup()
        started.push_async_callback(admin_runner.cleanup)
        await runner.setup()
        started.push_async_callback(runner.cleanup)
        listen, admin = settings.server.listen, settings.server.admin_listen
        with listening.opening(listen, "server.listen"):
            if sockets is None:
                await web.TCPSite(runner, listen.host, listen.port, ssl_context=tls).start()
            else:
                await web.SockSite(runner, sockets[0], ssl_context=tls).start()
        with listening.opening(admin, "server.admin_listen"):
            if sockets is None:
                await web.TCPSite(admin_runner, admin.host, admin.port).start()
            else:
                await web.SockSite(admin_runner, sockets[1]).start()
        if not settings.upstream.url:
            log.warning(
                "no upstream configured (upstream.url, IMS_GATEWAY_UPSTREAM_URL or --upstream): "
                "started the built-in IMS emulator at %s; it keeps images in memory only",
                url,
            )
        scheme = "https" if settings.server.tls_cert else "http"

        def started_line() -> None:
            log.info(
                "ims-gateway %s listening on %s://%s (admin on http://%s), forwarding to %s; event loop: %s",
                __version__, scheme, _bound(runner), _bound(admin_runner), url, _loop_name(),
            )

        await _serve_until_stopped(settings, gateway, lifecycle, inherited=sockets is not None, started=started_line)
    log.info("stopped")
    return 0


async def _serve_until_stopped(
    settings: Settings, gateway: web.Application, lifecycle: Lifecycle, *, inherited: bool, started: Callable[[], None]
) -> None:
    """Until SIGTERM or SIGINT, then the drain delay (SIGTERM only); the caller closes the listeners.

    ``started`` (the start line) runs once the signal handlers are in place: whoever waits
    for that line may signal at once.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    delay = 0.0

    def on_signal(signum: int) -> None:
        nonlocal delay
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("second %s: exiting at once", name)
            logs.stop()  # os._exit runs no atexit hook: write what is queued first
            os._exit(1)
        lifecycle.draining = True
        server = settings.server
        if signum == signal.SIGTERM:
            # What orchestrators and process managers send: readiness fails first and the
            # listener keeps serving for drain_delay, so that load balancers stop sending
            # before new connections are refused.
            delay = server.drain_delay
            log.info(
                "%s: draining: /readyz fails now, new connections are refused in %g s, "
                "in-flight requests then get %g s (a second signal exits at once)",
                name, delay, server.drain_timeout,
            )  # fmt: skip
        else:
            # A terminal's Ctrl-C: nobody routes traffic by this process's readiness.
            log.info(
                "%s: draining: new connections are refused now (server.drain_delay is for SIGTERM), "
                "in-flight requests get %g s (a second signal exits at once)",
                name, server.drain_timeout,
            )  # fmt: skip
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    loop.add_signal_handler(signal.SIGHUP, reload.reload, gateway)
    started()
    watching = asyncio.ensure_future(workers.watch_parent(lambda: on_signal(signal.SIGTERM))) if inherited else None
    await stop.wait()
    if watching is not None:
        watching.cancel()
    if delay:
        await asyncio.sleep(delay)


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
    args = parse(arguments)

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
        address = Address.parse(args.listen)
        try:
            with listening.opening(address, "--listen"):
                sock = workers.bind(address)
        except listening.CannotListen as exc:
            print(f"ims-gateway: {exc}", file=sys.stderr)
            return 2
        logs.configure("info")
        run_emulator(address.host, address.port, credentials=keys, sock=sock)
        return 0

    try:
        settings = load_settings(args)
    except SettingsError as exc:
        print(f"ims-gateway: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.logging.level, settings.logging.access_log)
    inherited = args.inherit_sockets
    try:
        tls = server_ssl(settings)  # a certificate that cannot be used stops the start here, before any worker
        if settings.server.workers > 1 and inherited is None:
            return workers.supervise(settings, worker_command(args), settings.server.workers)
        sockets = workers.inherited(inherited) if inherited else None
        log.debug("allocator: %s", allocator.hold_steady())
        # A reload re-reads the same file, environment and flags.
        with asyncio.Runner(loop_factory=loop_factory(settings.server.event_loop)) as runner:
            return runner.run(serve(settings, load=lambda: load_settings(args), sockets=sockets, tls=tls))
    except listening.CannotListen as exc:
        flag = {"server.listen": args.listen and "--listen", "server.admin_listen": args.admin_listen and "--admin-listen"}
        logs.stop()  # the lines logged so far come first
        print(f"ims-gateway: {exc.named(flag.get(exc.setting) or exc.setting)}", file=sys.stderr)
        return 2
    except CannotServeTls as exc:
        logs.stop()
        print(f"ims-gateway: {exc}", file=sys.stderr)
        return 2


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
