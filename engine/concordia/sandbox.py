"""Evaluate CEL where it can be stopped: a few long-lived child processes with budgets.

The CEL library has no cost limit (no step counter, no deadline, no allocation cap), and
a comprehension inside a comprehension, or a string doubled inside ``map``, can run for
minutes or take every byte of memory, holding the GIL all the while. Such expressions
are evaluated here instead, in a child process that can be killed: each evaluation has a
wall-clock budget (the parent stops waiting and kills the child), a CPU budget the child
enforces on itself (``RLIMIT_CPU``, should the parent be gone), and an address-space cap
(``RLIMIT_AS``: the allocator fails and the child dies, not the caller).

Children are started on first use with ``subprocess`` (fork-exec: a fresh interpreter
that inherits no threads, locks or state, unlike a plain fork) and serve one evaluation at
a time, so the pool hands out one child per concurrent evaluation and makes callers wait
when all are busy. Requests and replies cross a pipe as length-prefixed pickles: both ends
are this module, and the parent unpickles only the types a CEL result can hold. A child
that fails is killed and replaced on the next use; all are stopped at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from functools import lru_cache
from typing import Any

from concordia.cel_library import cel
from concordia.errors import ExpressionError, ValueLimitError
from concordia.values import Limits, check_result

_HEADER = struct.Struct(">Q")
_START_TIMEOUT = 30.0  # seconds for a child to start: generous, a loaded machine is slow
_STDERR_KEPT = 64 * 1024
# A reply is a pickle of a result that passed the size check in the child; pickle may
# take a few times the JSON size (a list of one-letter strings), never more.
_REPLY_FACTOR = 4
# Beyond plain data (which pickle builds without naming a class), a CEL result holds
# timestamps (aware datetimes) and durations, and nothing else.
_ALLOWED_GLOBALS = frozenset({
    ("datetime", "datetime"), ("datetime", "timedelta"), ("datetime", "timezone"),
})
# The errors a CEL evaluation raises, rebuilt as the same built-in type in the parent so
# that the caller maps them exactly as it maps errors raised in its own process.
_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls for cls in (
        KeyError, ValueError, TypeError, RuntimeError, ArithmeticError, ZeroDivisionError,
        OverflowError, IndexError)
}


def evaluate(source: str, context: dict[str, Any], limits: Limits) -> Any:
    """Evaluate ``source`` over ``context`` in a sandbox process within ``limits``.

    Raises :class:`ExpressionError` when a budget runs out or the child dies,
    :class:`ValueLimitError` when the result is too large, and the evaluation's own
    error (``KeyError``, ``TypeError``, ...) when it fails as it would in-process.
    """
    try:
        request = pickle.dumps((source, context, limits), protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise TypeError(f"the context cannot be sent to the sandbox: {exc}") from None
    reply = _pool(limits).run(source, request, limits)
    kind = reply[0]
    if kind == "ok":
        return reply[1]
    if kind == "raised":
        raise _ERRORS.get(reply[1], RuntimeError)(reply[2])
    if kind == "too_large":
        raise ValueLimitError("expression result", reply[1], reply[2])
    if kind == "memory":
        raise ExpressionError(source, _memory_reason(limits))
    raise ExpressionError(source, f"the sandbox replied {kind!r}")  # pragma: no cover


class _Pool:
    """Up to ``size`` children, each lent to one evaluation at a time."""

    def __init__(self, size: int, memory: int) -> None:
        self.size = size
        self.memory = memory
        self.pid = os.getpid()
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._all: set[_Child] = set()
        self._closed = False

    def run(self, source: str, request: bytes, limits: Limits) -> tuple[Any, ...]:
        with self._slots:
            for attempt in (1, 2):
                child = self._take(source)
                healthy = False
                try:
                    reply = child.run(source, request, limits)
                    healthy = reply[0] != "memory"
                    return reply
                except _Stale:
                    # The child died while idle (killed from outside): the request never
                    # reached it, so one fresh child may take it.
                    if attempt == 2:
                        raise ExpressionError(source, "two sandbox processes in a row "
                                                      "died before they could evaluate "
                                                      "it") from None
                finally:
                    self._give_back(child, healthy)
        raise AssertionError("unreachable")  # pragma: no cover

    def process_ids(self) -> list[int]:
        with self._lock:
            return sorted(child.proc.pid for child in self._all)

    def close(self, *, busy_too: bool) -> None:
        """Stop the idle children now, and busy ones now too or when they come back."""
        with self._lock:
            self._closed = True
            children = list(self._all) if busy_too else list(self._idle)
            self._all.difference_update(children)
            self._idle.clear()
        for child in children:
            child.stop()

    def _take(self, source: str) -> _Child:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        child = _Child.start(self.memory, source)  # slow (~50 ms): outside the lock
        with self._lock:
            self._all.add(child)
        return child

    def _give_back(self, child: _Child, healthy: bool) -> None:
        with self._lock:
            if healthy and not self._closed and child.alive():
                self._idle.append(child)
                return
            self._all.discard(child)
        child.stop()


class _Stale(Exception):
    """A child found dead before it received the request."""


class _Child:
    """One sandbox process and its pipes."""

    def __init__(self, proc: subprocess.Popen[bytes], memory: int) -> None:
        self.proc = proc
        self.memory = memory
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        self._stdin = proc.stdin
        self._out = proc.stdout.fileno()
        self._err = proc.stderr.fileno()
        os.set_blocking(self._err, False)

    @classmethod
    def start(cls, memory: int, source: str) -> _Child:
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else ""),
               "RUST_BACKTRACE": "0"}
        proc = subprocess.Popen(
            # -P: the working directory is not put on sys.path (a stray cel.py there
            # must not be imported by the sandbox).
            [sys.executable, "-P", "-c", "from concordia.sandbox import serve; serve()",
             str(memory)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            # Its own session: a Ctrl-C at the terminal is the parent's to handle.
            start_new_session=True)
        child = cls(proc, memory)
        try:
            ready = child._read(time.monotonic() + _START_TIMEOUT)
        except (_Timeout, _Died):
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            said = child.stderr_text().splitlines() or ["no output"]
            child.stop()
            raise ExpressionError(source, "the expression sandbox could not start: "
                                          f"{said[-1]}") from None
        if ready[0] != "ready":  # pragma: no cover - a protocol error between our two ends
            child.stop()
            raise ExpressionError(source, f"the expression sandbox said {ready!r}")
        return child

    def run(self, source: str, request: bytes, limits: Limits) -> tuple[Any, ...]:
        try:
            self._stdin.write(_HEADER.pack(len(request)) + request)
            self._stdin.flush()
        except (BrokenPipeError, ConnectionResetError, ValueError):
            raise _Stale from None
        budget = limits.expression_time
        try:
            return self._read(time.monotonic() + budget,
                              limit=limits.max_output_bytes * _REPLY_FACTOR + 4096)
        except _Timeout:
            self.stop()
            raise ExpressionError(source,
                                  f"exceeded its time budget of {budget:g}s") from None
        except _Died:
            raise ExpressionError(source, self._death(limits)) from None
        except pickle.UnpicklingError as exc:
            self.stop()
            raise ExpressionError(source, f"the sandbox sent an invalid reply: {exc}") from None
        except _TooLarge:
            self.stop()
            raise ValueLimitError("expression result", "larger than the "
                                  f"{limits.max_output_bytes} bytes allowed", "") from None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()

    def stderr_text(self) -> str:
        try:
            data = os.read(self._err, _STDERR_KEPT)
        except (BlockingIOError, OSError):
            return ""
        return data.decode("utf-8", "replace").strip()

    def _death(self, limits: Limits) -> str:
        """Why the child died during an evaluation, as the reason of the error."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        text = self.stderr_text()
        code = self.proc.returncode
        self.stop()
        # The Rust allocator aborts with this message when RLIMIT_AS refuses memory.
        if "memory allocation of" in text or "MemoryError" in text:
            return _memory_reason(limits)
        if code == -signal.SIGXCPU:
            return f"exceeded its time budget of {limits.expression_time:g}s"
        return f"stopped the expression sandbox ({_exit_description(code)})"

    def _read(self, deadline: float, limit: int | None = None) -> tuple[Any, ...]:
        header = self._read_exact(_HEADER.size, deadline)
        (length,) = _HEADER.unpack(header)
        if limit is not None and length > limit:
            raise _TooLarge
        return _loads(self._read_exact(length, deadline))

    def _read_exact(self, count: int, deadline: float) -> bytes:
        chunks: list[bytes] = []
        poller = select.poll()
        poller.register(self._out, select.POLLIN)
        while count:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(max(1, int(left * 1000) + 1)):
                if time.monotonic() >= deadline:
                    raise _Timeout
                continue
            chunk = os.read(self._out, min(count, 1 << 20))
            if not chunk:
                raise _Died
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)


class _Timeout(Exception):
    pass


class _Died(Exception):
    pass


class _TooLarge(Exception):
    pass


class _ResultUnpickler(pickle.Unpickler):
    """Rebuilds only plain data and the datetime types a CEL result may hold."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"the sandbox may not send {module}.{name}")
        return super().find_class(module, name)


def _loads(data: bytes) -> tuple[Any, ...]:
    reply = _ResultUnpickler(io.BytesIO(data)).load()
    if not isinstance(reply, tuple) or not reply:  # pragma: no cover - our own protocol
        raise pickle.UnpicklingError("malformed reply from the sandbox")
    return reply


def _exit_description(code: int | None) -> str:
    if code is None or code >= 0:
        return f"exit status {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


def _memory_reason(limits: Limits) -> str:
    return f"exceeded its memory budget of {limits.expression_memory >> 20} MiB"


# -- the pool in use, per process


_pool_lock = threading.Lock()
_current: _Pool | None = None


def _pool(limits: Limits) -> _Pool:
    global _current
    with _pool_lock:
        pool = _current
        if (pool is None or pool.pid != os.getpid() or pool.size != limits.sandbox_processes
                or pool.memory != limits.expression_memory):
            if pool is not None and pool.pid == os.getpid():
                # Budgets changed: children started under the old ones go, the busy ones
                # once their evaluation is done.
                pool.close(busy_too=False)
            pool = _current = _Pool(limits.sandbox_processes, limits.expression_memory)
        return pool


def process_ids() -> list[int]:
    """The ids of this process's sandbox processes (for monitoring; none before first use)."""
    with _pool_lock:
        pool = _current
    return pool.process_ids() if pool is not None and pool.pid == os.getpid() else []


def shutdown() -> None:
    """Stop every sandbox process of this process (run at interpreter exit)."""
    global _current
    with _pool_lock:
        pool, _current = _current, None
    if pool is not None and pool.pid == os.getpid():
        pool.close(busy_too=True)


def _forget_after_fork() -> None:
    # A forked child must not share (or kill, at its exit) its parent's sandboxes.
    global _current, _pool_lock
    _current = None
    _pool_lock = threading.Lock()


atexit.register(shutdown)
os.register_at_fork(after_in_child=_forget_after_fork)


# -- the child's side


def serve() -> None:
    """The sandbox process: evaluate requests from stdin until it closes."""
    import resource

    memory = int(sys.argv[1])
    replies = _private_stdout()
    cel()  # imported before any expression arrives
    compile_program = lru_cache(maxsize=256)(_compile)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a killed child leaves no core
    # The cap counts from what the interpreter and the library already take, so that
    # the budget is what an evaluation may use.
    _set_limit(resource.RLIMIT_AS, _address_space() + memory)
    _send(replies, ("ready", os.getpid()))
    requests = sys.stdin.buffer
    while True:
        header = requests.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return  # the parent closed the pipe, or exited
        source, context, limits = pickle.loads(requests.read(_HEADER.unpack(header)[0]))
        _arm_cpu_budget(limits.expression_time)
        try:
            value = compile_program(source).execute(context)
            check_result(value, limits)  # here, before a huge result is pickled and sent
            reply: tuple[Any, ...] = ("ok", value)
        except MemoryError:
            _send(replies, ("memory",))
            os._exit(1)  # the heap may be in any state: a fresh child takes over
        except ValueLimitError as exc:
            reply = ("too_large", exc.reason, exc.path)
        except Exception as exc:
            reply = ("raised", type(exc).__name__, _message(exc))
        except BaseException as exc:  # a Rust panic surfaces as a BaseException
            reply = ("raised", "RuntimeError", f"the CEL library failed: {_message(exc)}")
        try:
            _send(replies, reply)
        except MemoryError:
            _send(replies, ("memory",))
            os._exit(1)
        except (pickle.PicklingError, TypeError, AttributeError):
            _send(replies, ("raised", "TypeError", "its result of type "
                            f"{type(reply[1]).__name__} cannot leave the sandbox"))


def _private_stdout() -> io.BufferedWriter:
    """The reply channel: the original stdout, out of reach of stray prints."""
    channel = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    # Python-level output and warnings go nowhere; native messages (the Rust allocator's
    # last words) still reach fd 2, the parent's evidence of why a child died.
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as we do
    return os.fdopen(channel, "wb")


def _compile(source: str) -> Any:
    return cel().compile(source)


def _send(channel: io.BufferedWriter, reply: tuple[Any, ...]) -> None:
    data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    channel.write(_HEADER.pack(len(data)) + data)
    channel.flush()


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def _arm_cpu_budget(budget: float) -> None:
    """Let this evaluation use ``budget`` more seconds of CPU (plus a second), not more."""
    import math
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    spent = usage.ru_utime + usage.ru_stime
    _set_limit(resource.RLIMIT_CPU, math.ceil(spent + budget) + 1, soft_only=True)


def _set_limit(which: int, value: int, soft_only: bool = False) -> None:
    import resource

    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(which, (value, hard if soft_only else value))


def _address_space() -> int:
    """This process's mapped address space now, in bytes (0 where it cannot be read)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
