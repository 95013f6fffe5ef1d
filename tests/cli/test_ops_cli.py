"""The run commands an operator uses: run, events send, cancel, retry, inspect, runs.

Each test runs the real command on a real SQLite store in a temporary project and checks
the exit code, what was printed, and that nothing ended in a traceback.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

from concordia import Engine
from concordia.definitions import Catalog
from concordia.registry import load_registry
from tests.cli.conftest import Project

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}"


# -- run -------------------------------------------------------------------------------------

def test_run_returns_suspended_and_says_how_to_follow(project: Project) -> None:
    code, out, err = project.run()
    assert code == 0
    assert "suspended" in out
    # The step in hand while it ran, then the await and its deadline.
    assert "reserve (attempt 1)" in err
    assert re.search(rf"step wait_payment awaits shop\.payment\.confirmed until {ISO}", err)
    assert re.search(rf"waiting     step wait_payment awaits shop\.payment\.confirmed until "
                     rf"{ISO}\S* \(in 5\dm", out)
    assert "concordia inspect " in out
    assert "--follow" in out
    assert "concordia events send" in out


def test_run_drives_only_the_run_it_started(project: Project) -> None:
    engine = Engine(Catalog.load_strict(["definitions"]), load_registry(project.handlers),
                    project.store)
    other = engine.start("order", {"order_id": "elsewhere"})
    engine.close()
    code, _out, _ = project.run()
    assert code == 0
    by_id = {r["id"]: r for r in project.runs()}
    assert by_id[other.id]["status"] == "running"  # untouched: a worker's business
    assert by_id[other.id]["state_label"] == "reserve"


def test_run_that_fails_compensates_and_exits_one(project: Project) -> None:
    code, out, err = project.run(declined=True)
    assert code == 1
    assert "compensated" in out
    assert "card declined" in out
    assert "retry of charge (attempt 2)" in err  # the retry timer, waited for in-process
    assert "run_0" not in out + err  # states are named as the saga names them
    assert "reserve -> charge (done)" in out


def test_run_json(project: Project) -> None:
    code, out, _ = project.run("--format", "json", "--quiet")
    assert code == 0
    data = json.loads(out)
    assert data["status"] == "suspended"
    assert data["state_label"] == "wait_payment"
    assert [s["name"] for s in data["steps"]] == ["reserve", "charge", "wait_payment", "ship"]


def test_handlers_that_do_not_import_are_named_with_their_own_error(project: Project) -> None:
    (project.root / "broken_handlers.py").write_text("import no_such_dependency_here\n")
    (project.root / "x.json").write_text('{"order_id": "o"}')
    code, out, err = project.cli("run", "order", "--input", "x.json", "--handlers",
                                 "broken_handlers", "--store", project.store)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "broken_handlers" in err
    assert "No module named 'no_such_dependency_here'" in err
    code, _, err = project.cli("run", "order", "--input", "x.json", "--handlers",
                               "not_a_module_at_all", "--store", project.store)
    assert code == 2
    assert "no module named 'not_a_module_at_all'" in err


# -- events send -----------------------------------------------------------------------------

def test_events_send_resumes_the_awaiting_run(project: Project) -> None:
    project.run("-q")
    [run] = project.runs("suspended")
    event = project.event("shop.payment.confirmed", "o-1")
    code, out, _ = project.cli("events", "send", str(event), "--store", project.store)
    assert code == 0
    assert f"resumed run {run['id']} (order v1)" in out
    assert "a worker drives them" in out
    code, out, _ = project.cli("events", "send", str(event), "--store", project.store)
    assert code == 0
    assert out.startswith("duplicate: ")
    assert project.runs()[0]["status"] == "running"


def test_events_send_starts_triggered_runs_and_can_drive_them(project: Project) -> None:
    event = project.event("shop.order.placed", "o-7")
    code, out, err = project.cli("events", "send", str(event), "--store", project.store,
                                 "--handlers", project.handlers, "--format", "json")
    assert code == 0
    [delivered] = json.loads(out)["delivered"]
    [started] = delivered["started"]
    assert delivered["duplicate"] is False
    assert delivered["runs"] == {started: "order v1"}
    # Driven in this process until it suspended on its await.
    assert [r["status"] for r in project.runs()] == ["suspended"]
    assert "wait_payment awaits shop.payment.confirmed" in err


def test_events_send_buffers_an_early_event(project: Project) -> None:
    event = project.event("shop.payment.confirmed", "o-early")
    code, out, _ = project.cli("events", "send", str(event), "--store", project.store)
    assert code == 0
    assert "buffered: no run awaits it yet" in out
    # The run that awaits it later finds it and goes straight on.
    code, out, _ = project.run("-q", order="o-early")
    assert code == 0
    assert project.runs()[0]["status"] == "completed"


def test_events_send_delivers_nothing_if_one_event_is_invalid(project: Project) -> None:
    good = json.loads(project.event("shop.order.placed", "o-1").read_text())
    bad = {**good, "id": "not-a-uuid", "time": "yesterday", "data": {"order": 1}}
    path = project.root / "batch.json"
    path.write_text(json.dumps([good, bad]))
    code, out, _ = project.cli("events", "send", str(path), "--store", project.store)
    assert code == 1
    lines = [ln for ln in out.splitlines() if ln.startswith("invalid: ")]
    # Every problem of the bad envelope, attributes and payload in one pass, each once;
    # nothing of the good one.
    assert len(lines) == 4
    assert all("batch.json[1]" in ln for ln in lines)
    assert "attribute 'id'" in lines[0]
    assert "attribute 'time'" in lines[1]
    assert "payload field 'order'" in lines[2]
    assert "payload field 'order_id'" in lines[3]
    assert "nothing delivered" in out
    assert not project.db.exists()  # not even the store was created


# -- cancel and retry --------------------------------------------------------------------------

def test_cancel_compensates_and_exits_zero(project: Project) -> None:
    project.run("-q")
    [run] = project.runs()
    code, out, _ = project.cli("cancel", run["id"][:12], "--reason", "customer asked",
                               "--handlers", project.handlers, "--store", project.store)
    assert code == 0
    assert "cancelled" in out
    assert "customer asked" in out
    assert project.runs()[0]["status"] == "cancelled"
    code, _, err = project.cli("cancel", run["id"], "--reason", "again", "--handlers",
                               project.handlers, "--store", project.store)
    assert code == 2
    assert "only a run moving forward can be cancelled" in err


def test_retry_resumes_a_failed_compensation_after_the_fix(project: Project) -> None:
    (project.root / "release.broken").write_text("")
    code, out, _ = project.run("-q", "--wait", "30", declined=True)
    assert code == 1
    [run] = project.runs()
    assert run["status"] == "compensation_failed"
    # Still broken: retry exits 1 and says so.
    code, out, _ = project.cli("retry", run["id"], "--handlers", project.handlers,
                               "--store", project.store, "-q", "--wait", "30")
    assert code == 1
    assert "compensation_failed" in out
    (project.root / "release.broken").unlink()
    code, out, _ = project.cli("retry", run["id"][:14], "--handlers", project.handlers,
                               "--store", project.store, "-q")
    assert code == 0
    assert project.runs()[0]["status"] == "compensated"
    code, _, err = project.cli("retry", run["id"], "--handlers", project.handlers,
                               "--store", project.store)
    assert code == 2
    assert "is compensated" in err


# -- inspect -------------------------------------------------------------------------------

def test_inspect_by_unique_prefix_with_times_and_deadline(project: Project) -> None:
    project.run("-q")
    [run] = project.runs()
    code, out, _ = project.cli("inspect", run["id"][:10], "--store", project.store, "--utc")
    assert code == 0
    assert f"run {run['id']}" in out
    assert re.search(rf"started     {ISO}Z", out)
    assert re.search(rf"waiting     step wait_payment awaits shop\.payment\.confirmed until "
                     rf"{ISO}Z", out)
    assert re.search(rf"^{ISO}Z  await\.suspended", out, re.MULTILINE)
    assert "run_" not in out


def test_inspect_prefix_errors(project: Project) -> None:
    for order in ("a", "b", "c"):
        project.run("-q", order=order)
    ids = [r["id"] for r in project.runs()]
    common = ids[0][: next(i for i in range(36) if len({x[: i + 1] for x in ids}) > 1)]
    code, _, err = project.cli("inspect", common, "--store", project.store)
    assert code == 2
    assert "ambiguous" in err
    code, _, err = project.cli("inspect", "zzzz", "--store", project.store)
    assert code == 2
    assert "no run 'zzzz'" in err
    code, _, err = project.cli("inspect", "", "--store", project.store)
    assert code == 2
    assert "too short" in err


def test_inspect_follow_prints_new_lines_until_the_run_ends(project: Project) -> None:
    project.run("-q")
    [run] = project.runs()
    env_root = str(project.root)
    follower = subprocess.Popen(
        [sys.executable, "-m", "concordia.cli", "inspect", run["id"][:13], "--follow",
         "--interval", "0.05", "--store", project.store], cwd=env_root,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(project))
    try:
        time.sleep(1.0)  # it has printed the history so far and polls
        event = project.event("shop.payment.confirmed", "o-1")
        code, _, _ = project.cli("events", "send", str(event), "--store", project.store,
                                 "--handlers", project.handlers, "-q")
        assert code == 0
        out, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0
    assert "Traceback" not in err
    kinds = [m.group(1) for m in re.finditer(rf"^{ISO}\S*  (\S+)", out, re.MULTILINE)]
    assert kinds.index("await.suspended") < kinds.index("await.resumed") < kinds.index(
        "run.completed")
    assert out.rstrip().endswith("ended completed")


def _env(project: Project) -> dict[str, str]:
    import os

    from tests.conftest import ROOT

    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(project.root), ROOT])}


# -- runs ------------------------------------------------------------------------------------

def test_runs_table_keeps_statuses_whole_at_80_columns(project: Project) -> None:
    project.run("-q", order="a")
    (project.root / "release.broken").write_text("")
    project.run("-q", "--wait", "30", order="b", declined=True)
    result = subprocess.run(
        [sys.executable, "-m", "concordia.cli", "runs", "--store", project.store],
        cwd=project.root, capture_output=True, text=True, timeout=60,
        env={**_env(project), "COLUMNS": "80"}, check=False)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= 80
    assert any("compensation_failed" in ln for ln in lines)
    assert any(" suspended " in ln for ln in lines)
    ids = [r["id"] for r in project.runs()]
    shown = [ln.split()[0] for ln in lines if ln.split() and ids[0].startswith(ln.split()[0])]
    assert shown
    assert 8 <= len(shown[0]) < 36
    code, _out, _ = project.cli("inspect", shown[0], "--store", project.store)
    assert code == 0


def test_runs_filters_and_refuses_unknown_statuses(project: Project) -> None:
    project.run("-q")
    assert [r["status"] for r in project.runs("suspended")] == ["suspended"]
    assert project.runs("completed") == []
    code, _, err = project.cli("runs", "--status", "done", "--store", project.store)
    assert code == 2
    assert "invalid choice: 'done'" in err
    assert "compensation_failed" in err  # the valid ones are listed


# -- graph of a run ----------------------------------------------------------------------------

def test_graph_of_a_run_colours_what_it_did(project: Project) -> None:
    project.run("-q", declined=True)
    [run] = project.runs()
    code, out, _ = project.cli("graph", "--run", run["id"][:12], "--store", project.store)
    assert code == 0
    marked = dict(re.findall(r"^    class (\S+) (done|failed|undone|active)$", out, re.MULTILINE))
    by_mark = {mark: set(ids.split(",")) for ids, mark in marked.items()}
    assert by_mark["done"] == {"step_reserve", "compensated"}
    assert by_mark["failed"] == {"step_charge"}
    assert by_mark["undone"] == {"undo_reserve"}
    code, out, _ = project.cli("graph", "--run", run["id"], "--store", project.store,
                               "--format", "svg")
    assert code == 0
    assert out.startswith("<svg")


# -- the store: read-only commands never create it; failures are one line --------------------

def test_read_only_commands_never_create_a_store(project: Project) -> None:
    missing = project.root / "nowhere" / "runs.db"
    for args in (["runs"], ["inspect", "abc"], ["graph", "--run", "abc"]):
        code, _out, err = project.cli(*args, "--store", f"sqlite:///{missing}")
        assert code == 2, args
        assert str(missing) in err
        assert err.count("\n") == 1
    assert not (project.root / "nowhere").exists()
    code, _, err = project.cli("runs", "--store", f"sqlite:///{project.root / 'absent.db'}")
    assert code == 2
    assert not (project.root / "absent.db").exists()


def test_a_store_in_a_missing_directory_is_not_created(project: Project) -> None:
    code, _, err = project.run("--store", f"sqlite:///{project.root / 'typo' / 'runs.db'}")
    assert code == 2
    assert "does not exist" in err
    assert not (project.root / "typo").exists()


def test_a_file_that_is_not_a_store_is_one_line(project: Project) -> None:
    junk = project.root / "junk.db"
    junk.write_bytes(b"this is not an SQLite database" * 100)
    for args in (["runs"], ["inspect", "abc"]):
        code, _, err = project.cli(*args, "--store", f"sqlite:///{junk}")
        assert code == 2
        assert err.count("\n") == 1
        assert "junk.db" in err or "not a database" in err
    code, _, err = project.run("--store", f"sqlite:///{junk}")
    assert code == 2
    assert err.count("\n") == 1


def test_a_store_locked_past_the_busy_timeout_is_one_line(project: Project) -> None:
    import sqlite3

    import pytest

    project.run("-q")
    holder = sqlite3.connect(project.db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a writer that does not let go
    real_connect = sqlite3.connect

    def quick(*args: object, **kwargs: object) -> sqlite3.Connection:
        kwargs["timeout"] = 0.2  # the store's busy timeout, shortened for the test
        return real_connect(*args, **kwargs)  # type: ignore[arg-type]

    mp = pytest.MonkeyPatch()
    mp.setattr(sqlite3, "connect", quick)
    try:
        code, _, err = project.run("-q", order="o-2")
    finally:
        mp.undo()
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 2
    assert err.count("\n") == 1
    assert "locked" in err


def test_a_read_only_store_file_is_one_line(project: Project) -> None:
    import os
    import shutil

    import pytest

    project.run("-q")
    # Root writes through file modes; an immutable file stops even root (where allowed).
    immutable = os.geteuid() == 0
    if immutable:
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(project.db)],
                                            capture_output=True, check=False).returncode:
            pytest.skip("cannot make a file read-only for root here")
    else:
        project.db.chmod(0o444)
    try:
        code, _, err = project.run("-q", order="o-2")
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(project.db)], check=True)
    assert code == 2
    assert err.count("\n") == 1
    assert "readonly" in err or "read-only" in err


# -- the shell: broken pipes, colour, --version, completion, help ---------------------------

def test_a_closed_pipe_exits_quietly(project: Project) -> None:
    for order in "abcdef":
        project.run("-q", order=order)
    proc = subprocess.Popen([sys.executable, "-m", "concordia.cli", "runs", "--store",
                             project.store, "--format", "json", "--limit", "500"],
                            cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env(project))
    assert proc.stdout is not None
    proc.stdout.close()  # the reader goes away before the first line
    _, err = proc.communicate(timeout=60)
    assert err == b""
    assert proc.returncode == 141


def test_errors_are_red_on_a_terminal_and_plain_when_piped(project: Project) -> None:
    import os
    import pty

    args = [sys.executable, "-m", "concordia.cli", "runs", "--store",
            f"sqlite:///{project.root / 'absent.db'}"]
    piped = subprocess.run(args, cwd=project.root, env=_env(project), capture_output=True,
                           text=True, timeout=60, check=False)
    assert piped.returncode == 2
    assert piped.stderr.startswith("concordia: error: ")
    assert "\x1b[" not in piped.stderr
    leader, follower = pty.openpty()
    env = {**_env(project), "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    proc = subprocess.run(args, cwd=project.root, env=env, stdout=subprocess.PIPE,
                          stderr=follower, timeout=60, check=False)
    os.close(follower)
    seen = os.read(leader, 4096).decode()
    os.close(leader)
    assert proc.returncode == 2
    assert "\x1b[31mconcordia: error: " in seen


def test_version_and_completion(project: Project) -> None:
    from concordia import __version__

    done = project.subprocess("--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"concordia {__version__}")
    done = project.subprocess("completion", "bash")
    assert done.returncode == 0
    assert "complete " in done.stdout
    assert "concordia" in done.stdout


def test_completion_completes_commands_and_options(project: Project) -> None:
    # What the shell does on TAB: argcomplete answers on file descriptor 8.
    line = "concordia runs --st"
    env = {**_env(project), "_ARGCOMPLETE": "1", "COMP_LINE": line,
           "COMP_POINT": str(len(line)), "_ARGCOMPLETE_IFS": "\n"}
    proc = subprocess.run(["bash", "-c", f"{sys.executable} -m concordia.cli 8>&1 9>/dev/null"],
                          cwd=project.root, env=env, capture_output=True, text=True,
                          timeout=60, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0
    assert set(proc.stdout.split()) == {"--status", "--store"}


def test_every_option_has_help_text() -> None:
    import argparse

    from concordia.cli import build_parser

    def walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
        missing = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if not any(c.dest == name for c in action._choices_actions):
                        missing.append(f"{path} {name}: no help")
                    missing += walk(sub, f"{path} {name}")
            elif not action.help and not isinstance(action, argparse._HelpAction):
                missing.append(f"{path}: {'/'.join(action.option_strings) or action.dest}")
        return missing

    assert walk(build_parser(), "concordia") == []


def test_help_of_run_commands_documents_exit_codes(project: Project) -> None:
    for command in (["run"], ["cancel"], ["retry"], ["inspect"], ["runs"], ["graph"],
                    ["events", "send"], ["validate"], ["lint"]):
        done = project.subprocess(*command, "--help")
        assert done.returncode == 0, command
        assert "exit status" in done.stdout, command
        assert "Traceback" not in done.stderr


def test_worker_help_keeps_its_options_described(project: Project) -> None:
    done = project.subprocess("worker", "--help")
    assert done.returncode == 0
    assert "--poll-interval SECONDS" in done.stdout
