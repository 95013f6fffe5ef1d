"""The bus commands: ``relay`` (the outbox to NATS JetStream) and ``consume`` (JetStream
into the engine), and the ``--bus``/``--relay``/``--consume`` options that run both
inside ``concordia worker``.

Each runs until SIGTERM or Ctrl-C, then finishes the round or batch in hand and exits 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import TYPE_CHECKING, Any

from concordia.cli.common import (
    DEFAULT_PATHS,
    EXIT_OK,
    EXIT_USAGE,
    EnvDefault,
    UsageError,
    command,
    env_paths,
)

if TYPE_CHECKING:
    import asyncio

    from concordia.events.nats import JetStreamSettings
    from concordia.runtime.aengine import AsyncEngine

DEFAULT_BUS = "nats://127.0.0.1:4222"

_RELAY_EPILOG = """\
Publishes the store's persistent events, in order, to NATS JetStream on the subject
<prefix>.<event type>, with the event id as Nats-Msg-Id (JetStream drops copies), and
marks each published once JetStream acknowledged it. While NATS is down it tries again
every round. Any number of relays may run on one store.
"""

_CONSUME_EPILOG = """\
Delivers the events of a durable JetStream consumer into the store: each resumes the runs
awaiting it and starts the sagas it triggers (the workers drive them). A message is
acknowledged only after its delivery is committed; the same event delivered twice has
one effect. An event the taxonomy refuses is logged and dropped.
"""


def bus_options(p: argparse.ArgumentParser, env: EnvDefault, *, inside_worker: bool) -> None:
    """The options naming the bus (and, inside a worker, what to run on it)."""
    p.add_argument("--bus", metavar="URL", default=env("bus", None if inside_worker
                                                       else DEFAULT_BUS),
                   help="NATS server with JetStream, e.g. nats://127.0.0.1:4222 (env "
                        "CONCORDIA_BUS)")
    p.add_argument("--stream", default=env("stream", "CONCORDIA"), metavar="NAME",
                   help="the JetStream stream (created if missing; env CONCORDIA_STREAM; "
                        "default CONCORDIA)")
    p.add_argument("--subject-prefix", default=env("subject_prefix", "concordia.events"),
                   metavar="PREFIX",
                   help="events go on PREFIX.<event type> (env CONCORDIA_SUBJECT_PREFIX; "
                        "default concordia.events)")
    p.add_argument("--durable", default=env("durable", "concordia"), metavar="NAME",
                   help="the durable consumer's name; consumers of one name share the "
                        "events (env CONCORDIA_DURABLE; default concordia)")
    if inside_worker:
        p.add_argument("--relay", action="store_true",
                       help="also relay the outbox to the bus (needs --bus)")
        p.add_argument("--consume", action="store_true",
                       help="also deliver the bus's events into the store (needs --bus)")


def nats_bus() -> ModuleType:
    """The NATS bus module; without the optional ``nats`` extra, a usage error that says
    what to install (only the commands and options that use the bus need it)."""
    try:
        import concordia.events.nats as module
    except ImportError as exc:
        raise UsageError(f"the NATS bus needs nats-py (pip install 'concordia-sagas[nats]'): "
                         f"{exc}") from None
    return module


def settings_of(args: argparse.Namespace) -> JetStreamSettings:
    settings: JetStreamSettings = nats_bus().JetStreamSettings(
        url=args.bus, stream=args.stream, prefix=args.subject_prefix)
    return settings


def register(sub: Any, env: EnvDefault, common: Callable[[argparse.ArgumentParser], None]
             ) -> None:
    for name, helptext, epilog, func in (
            ("relay", "publish the outbox's persistent events to NATS JetStream",
             _RELAY_EPILOG, cmd_relay),
            ("consume", "deliver events from NATS JetStream into the store", _CONSUME_EPILOG,
             cmd_consume)):
        p = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:]
                           + ", until stopped (SIGTERM or Ctrl-C).", epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        bus_options(p, env, inside_worker=False)
        common(p)
        p.add_argument("--definitions", nargs="+", metavar="PATH",
                       default=env_paths() or list(DEFAULT_PATHS),
                       help="definition files or directories: the taxonomy events are "
                            "checked against, the sagas they start or resume (env "
                            f"CONCORDIA_DEFINITIONS, '{os.pathsep}'-separated)")
        p.set_defaults(func=func)


def _engine(args: argparse.Namespace, bus: Any) -> AsyncEngine:
    from concordia.definitions.catalog import Catalog
    from concordia.logging import ensure_configured
    from concordia.registry import Registry
    from concordia.runtime.aengine import AsyncEngine

    ensure_configured()
    catalog = Catalog.load_strict([p for p in args.definitions if os.path.exists(p)])
    # It drives no run: runs it starts are left to the workers at once.
    return AsyncEngine(catalog, Registry(), args.store, bus=bus, check_bindings=False,
                       claim_new_runs=False)


def _serve(engine: AsyncEngine, main: Callable[[Callable[[], bool]], Coroutine[Any, Any, Any]]
           ) -> None:
    """Run ``main(stopping)`` until SIGTERM or Ctrl-C, then close the engine."""
    import asyncio  # not at module level: every command's start-up imports this module

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with engine:
            await main(stop.is_set)

    asyncio.run(run())


@command
def cmd_relay(args: argparse.Namespace) -> int:
    from concordia.errors import ConcordiaError
    from concordia.runtime.streams import relay_forever

    bus = nats_bus().NatsBus(settings_of(args))
    try:
        engine = _engine(args, bus)
    except ConcordiaError as exc:
        print(f"concordia: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"concordia relay: {args.store} -> {args.bus} ({args.stream}); Ctrl-C to stop",
          file=sys.stderr)

    async def main(stopping: Callable[[], bool]) -> None:
        try:
            await relay_forever(engine, stop_when=stopping)
        finally:
            await bus.aclose()

    _serve(engine, main)
    return EXIT_OK


@command
def cmd_consume(args: argparse.Namespace) -> int:
    from concordia.errors import ConcordiaError
    from concordia.runtime.streams import consume_forever

    try:
        engine = _engine(args, None)
    except ConcordiaError as exc:
        print(f"concordia: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    consumer = nats_bus().NatsConsumer(settings_of(args), durable=args.durable)
    print(f"concordia consume: {args.bus} ({args.stream}, consumer {args.durable}) -> "
          f"{args.store}; Ctrl-C to stop", file=sys.stderr)

    async def main(stopping: Callable[[], bool]) -> None:
        await consume_forever(engine, consumer, stop_when=stopping)

    _serve(engine, main)
    return EXIT_OK


def check_worker_options(args: argparse.Namespace) -> str | None:
    """What is wrong with a worker's bus options, if anything."""
    if (args.relay or args.consume) and not args.bus:
        return "--relay and --consume need --bus URL"
    return None


def worker_bus(args: argparse.Namespace) -> Any:
    """The bus a worker publishes through (None without --bus)."""
    return nats_bus().NatsBus(settings_of(args)) if args.bus else None


async def work_with_bus(engine: AsyncEngine, args: argparse.Namespace) -> None:
    """``engine.work`` with, as asked, the relay and the consumer beside it; all three
    stop together when the engine is stopped."""
    import asyncio

    from concordia.runtime.streams import consume_forever, relay_forever

    done = False

    def stopping() -> bool:
        return done or engine.stopping

    tasks: list[asyncio.Task[Any]] = []
    if args.relay:
        tasks.append(asyncio.create_task(relay_forever(engine, stop_when=stopping)))
    if args.consume:
        consumer = nats_bus().NatsConsumer(settings_of(args), durable=args.durable)
        tasks.append(asyncio.create_task(consume_forever(engine, consumer,
                                                         stop_when=stopping)))
    try:
        await engine.work(concurrency=args.concurrency, poll_interval=args.poll_interval)
    finally:
        done = True
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        bus = engine.core.bus
        if args.bus and isinstance(bus, nats_bus().NatsBus):
            await bus.aclose()
