"""Parallel runs (bnlab.lab.executors): ``--jobs N`` and a real local Ray cluster give the numbers
a serial run gives; a lost worker is tried again; a run that fails twice is marked failed."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import worker_tasks
from rich.console import Console
from worker_tasks import dies, raises

from bnlab.cli import main
from bnlab.lab.claims.ledger import LEDGER_JSON, build_ledger
from bnlab.lab.claims.runner import Settings
from bnlab.lab.config import Config
from bnlab.lab.executors import (
    Processes,
    Serial,
    _cores,
    make_executor,
    run_tasks,
    train_folder,
)
from bnlab.lab.experiment import ExperimentInterrupted, run_experiment
from bnlab.lab.record import CHECKPOINTS, load_record

#: the columns that time things: the only ones allowed to differ between executors
TIMINGS = {"epoch_duration", "eval_duration", "run_duration", "samples_per_s"}
TINY_TOML = """\
limit_train = 600
[grid]
network = "keras-mlp"
dataset = "digits"
bn = [false, true]
seed = [0, 1]
epochs = 2
batch_size = 64
"""


def _numbers(folder: Path) -> list[dict]:
    """A record's rows without the timings, and its runs' status."""
    record = load_record(folder)
    rows = [{k: v for k, v in row.items() if k not in TIMINGS} for row in record.rows]
    return rows + [{"status": run["status"], "threads": run["threads"]} for run in record.runs]


def _weights(folder: Path, run: int) -> dict[str, torch.Tensor]:
    return torch.load(folder / CHECKPOINTS / f"run-{run}.pt", weights_only=True)["model"]


def _same_checkpoints(a: Path, b: Path, runs: int) -> None:
    for run in range(1, runs + 1):
        wa, wb = _weights(a, run), _weights(b, run)
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.equal(wa[key], wb[key]), f"run {run}, {key} differs"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny grid's config, and its serial run (the reference), once for the module."""
    root = tmp_path_factory.mktemp("tiny")
    config = root / "tiny.toml"
    config.write_text(TINY_TOML)
    serial = root / "serial"
    assert main(["run", str(config), "--out", str(serial), "--no-report", "--progress", "off"]) == 0
    return config, serial


def test_jobs_2_gives_the_serial_numbers(tiny, tmp_path):
    config, serial = tiny
    out = tmp_path / "jobs"
    assert main(["run", str(config), "--out", str(out), "--jobs", "2", "--no-report"]) == 0
    assert _numbers(out) == _numbers(serial)
    _same_checkpoints(out, serial, 4)
    assert (out / "summary.csv").read_text().count("\n") == (
        (serial / "summary.csv").read_text().count("\n")
    )
    assert not (out / ".incoming").exists()


def test_compare_with_jobs_gives_the_serial_numbers(tmp_path):
    args = ["compare", "mpg", "--epochs", "2", "--seeds", "2", "--no-report", "--progress", "off"]
    assert main([*args, "--out", str(tmp_path / "serial")]) == 0
    assert main([*args, "--out", str(tmp_path / "jobs"), "--jobs", "2"]) == 0
    assert _numbers(tmp_path / "jobs") == _numbers(tmp_path / "serial")


def test_claims_with_jobs_give_the_serial_ledger(tmp_path):
    args = ["claims", "--budget", "smoke", "--only", "C5", "--no-report"]
    assert main([*args, "--out", str(tmp_path / "serial")]) == 0
    assert main([*args, "--out", str(tmp_path / "jobs"), "--jobs", "2"]) == 0
    serial = json.loads((tmp_path / "serial" / LEDGER_JSON).read_text())
    jobs = json.loads((tmp_path / "jobs" / LEDGER_JSON).read_text())
    assert jobs["claims"] == serial["claims"] and jobs["failed"] == []
    runs = sorted(p.name for p in (tmp_path / "serial" / "runs").iterdir())
    assert runs == sorted(p.name for p in (tmp_path / "jobs" / "runs").iterdir())
    for key in runs:
        assert _numbers(tmp_path / "jobs" / "runs" / key) == _numbers(
            tmp_path / "serial" / "runs" / key
        ), key


# -- workers: threads, loss, retries --------------------------------------------------------


def _threads(_: object) -> tuple[int, int]:
    from bnlab.lab import threads

    return torch.get_num_threads(), threads.TORCH_DEFAULT


def test_workers_share_the_cores():
    """Each of N workers starts with cores // N threads: a large model's default is its share."""
    outcomes = list(run_tasks(Processes(2), _threads, {"a": None, "b": None}))
    share = max(1, _cores() // 2)
    assert [o.result for o in outcomes] == [(share, share)] * 2


def test_a_lost_worker_is_tried_again_and_a_second_loss_fails_the_task(tmp_path):
    retried = []
    tasks = {"once": "once", "always": "always", "ok": "ok"}
    tasks = {key: str(tmp_path / name) for key, name in tasks.items()}
    (tmp_path / "ok").touch()  # as if it had died before: this one succeeds at once
    on_retry = lambda key, error: retried.append((key, error))  # noqa: E731
    outcomes = {o.key: o for o in run_tasks(Processes(2), dies, tasks, on_retry=on_retry)}
    assert (outcomes["once"].result, outcomes["once"].attempts) == ("done", 2)
    assert (outcomes["ok"].result, outcomes["ok"].attempts) == ("done", 1)
    always = outcomes["always"]
    assert always.failed and always.attempts == 2 and always.result is None
    assert always.error == "worker process lost (exit code 3)"
    assert sorted(k for k, _ in retried) == ["always", "once"]


def test_a_task_that_raises_fails_with_its_error_after_two_tries():
    for executor in (Serial(), Processes(1)):
        [outcome] = run_tasks(executor, raises, {"k": None})
        assert (outcome.error, outcome.attempts) == ("ValueError: no such data", 2)


def _flaky_run(job: tuple[str, str, object]) -> object:
    """A run's task whose worker dies (see :class:`_Flaky`), else the real one."""
    marker, _, task = job
    if marker:
        dies(marker)
    return train_folder(task)  # type: ignore[arg-type]


class _Flaky(Processes):
    """Processes whose run 2's worker dies on its first try and run 3's on every try."""

    def __init__(self, markers: Path) -> None:
        super().__init__(2)
        self.markers = markers

    def submit(self, key, fn, arg):
        marker = {"2": str(self.markers / "once"), "3": str(self.markers / "always")}
        super().submit(key, _flaky_run, (marker.get(key, ""), key, arg))


def test_a_run_lost_once_is_retried_and_one_lost_twice_is_marked_failed(tiny, tmp_path):
    config_file, serial = tiny
    from bnlab.lab.config import load_config

    config = load_config(config_file)
    out = tmp_path / "flaky"
    quiet = Console(file=open(os.devnull, "w"))  # noqa: SIM115
    record, _ = run_experiment(
        Config(**{**config.__dict__, "out": str(out)}), console=quiet, executor=_Flaky(tmp_path)
    )
    assert record.status == "failed"
    saved = load_record(out)
    assert [r["status"] for r in saved.runs] == ["complete", "complete", "failed", "complete"]
    assert saved.runs[2]["error"] == "worker process lost (exit code 3)"
    assert not any(row["run"] == 3 for row in saved.rows)
    expected = load_record(serial)
    keep = [{k: v for k, v in r.items() if k not in TIMINGS} for r in expected.rows]
    got = [{k: v for k, v in r.items() if k not in TIMINGS} for r in saved.rows]
    assert got == [r for r in keep if r["run"] != 3]
    # --resume trains the failed run again, to the serial numbers
    args = ["run", str(config_file), "--out", str(out), "--resume", "--jobs", "2"]
    assert main([*args, "--no-report", "--progress", "off"]) == 0
    assert _numbers(out) == _numbers(serial)


def test_the_cli_names_failed_runs_and_exits_1(tmp_path, capsys):
    """A record with a failed run: shown, and the command's last line says what to do."""
    out = tmp_path / "bad"
    # the first run's data are found by the driver; the second's, fashion-mnist in an empty
    # folder, only by the worker that trains it: it fails there, twice
    empty = tmp_path / "empty"
    empty.mkdir()
    config = tmp_path / "two.toml"
    config.write_text(
        f'limit_train = 600\ndata_dir = "{empty}"\n[grid]\nnetwork = "keras-mlp"\n'
        'dataset = ["digits", "fashion-mnist"]\nepochs = 1\nbn = true\n'
    )
    args = ["run", str(config), "--out", str(out), "--jobs", "2", "--no-report"]
    assert main([*args, "--progress", "off"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: 1 runs failed on every try (dataset=fashion-mnist)")
    assert "--resume trains them again" in err
    record = load_record(out)
    assert [r["status"] for r in record.runs] == ["complete", "failed"]
    assert record.status == "failed"


def test_ctrl_c_keeps_the_runs_finished_and_resume_completes_them(tiny, tmp_path):
    config_file, serial = tiny
    from bnlab.lab.config import load_config

    config = load_config(config_file)
    out = tmp_path / "stopped"
    quiet = Console(file=open(os.devnull, "w"))  # noqa: SIM115

    def stop(record):
        if any(r["status"] == "complete" for r in record.runs):
            raise KeyboardInterrupt

    executor = Processes(2)
    with pytest.raises(ExperimentInterrupted):
        run_experiment(
            Config(**{**config.__dict__, "out": str(out)}),
            console=quiet,
            executor=executor,
            on_epoch=stop,
        )
    assert not executor._busy and not executor._idle  # every worker stopped
    saved = load_record(out)
    assert saved.status == "interrupted"
    assert [r["status"] for r in saved.runs].count("complete") == 1
    args = ["run", str(config_file), "--out", str(out), "--resume", "--jobs", "2"]
    assert main([*args, "--no-report", "--progress", "off"]) == 0
    assert _numbers(out) == _numbers(serial)


def test_claims_mark_a_run_that_fails_twice_in_the_ledger(tmp_path):
    class AlwaysLost(Processes):
        def __init__(self) -> None:
            super().__init__(2)
            self.first = ""

        def submit(self, key, fn, arg):
            self.first = self.first or key  # the first run planned dies, every time
            marker = str(tmp_path / "always") if key == self.first else ""
            super().submit(key, _flaky_run, (marker, key, arg))

    quiet = Console(file=open(os.devnull, "w"))  # noqa: SIM115
    executor = AlwaysLost()
    done = build_ledger("C5", "smoke", tmp_path / "ledger", Settings(), quiet, False, executor)
    assert done.ledger["claims"] == []
    [failed] = done.ledger["failed"]
    assert failed["id"] == "C5"
    assert failed["runs"] == {executor.first: "worker process lost (exit code 3)"}
    assert "not measured" in (tmp_path / "ledger" / "ledger.md").read_text()
    assert not (tmp_path / "ledger" / "runs" / executor.first).exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--executor", "ray"], "--executor ray needs --ray-address HOST:PORT"),
        (["--ray-address", "127.0.0.1:1"], "--ray-address is for --executor ray"),
        (["--executor", "ray", "--ray-address", "h:1", "--jobs", "2"], "--jobs is for local"),
        (["--jobs", "0"], "--jobs: expected a positive integer, got '0'"),
        (["--nproc", "2", "--jobs", "2"], "--nproc trains each run on N ranks"),
    ],
)
def test_executor_flags_are_checked_in_one_line(tiny, flags, message, capsys, tmp_path):
    config_file, _ = tiny
    try:
        status = main(["run", str(config_file), "--out", str(tmp_path / "x"), *flags])
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert message in err.splitlines()[-1]  # one line (argparse's after its usage)
    assert not (tmp_path / "x").exists()


def test_make_executor_choices():
    assert isinstance(make_executor(), Serial) and not make_executor().remote
    processes = make_executor("local", 3)
    assert isinstance(processes, Processes) and processes.remote
    assert processes.threads == max(1, _cores() // 3)


# -- a real Ray cluster: a head and a second node, alone in a network namespace ---------------
#
# Ray's servers (gcs_server, raylet, a driver's core worker) listen on every interface of the
# machine, whatever --node-ip-address says. So the cluster, and every driver that connects to
# it, runs in a private network namespace whose only interface is loopback: nothing outside it
# can reach them. As root, `unshare --net` makes one; as another user, `--map-root-user` too.

GCS_PORT = 6379  # the namespace is new: every port in it is free
LISTEN = "0A"  # a listening socket's state in /proc/net/tcp


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"the Ray tests need `{name}` (util-linux, iproute2) to isolate their cluster")
    return path


def _unshare() -> list[str]:
    """The prefix that runs a command in a new network namespace with ``lo`` up (a non-root
    user gets a new user namespace too, where it is root)."""
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    lo_up = f'{shlex.quote(_tool("ip"))} link set lo up && exec "$@"'
    return [_tool("unshare"), "--net", *user, "sh", "-c", lo_up, "sh"]


def _enter(pid: int) -> list[str]:
    """The prefix that runs a command in the network namespace of process ``pid``."""
    user = [f"--user=/proc/{pid}/ns/user", "--preserve-credentials"] if os.geteuid() else []
    return [_tool("nsenter"), f"--net=/proc/{pid}/ns/net", *user]


@dataclass(frozen=True)
class Cluster:
    """The tests' Ray cluster: its address, and the process group leaders of its head (whose
    network namespace it lives in) and of its second node."""

    address: str
    head: int
    node: int

    def enter(self) -> list[str]:
        """The prefix that runs a command in the cluster's network namespace."""
        return _enter(self.head)

    def run(self, *command: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """Run ``command`` in the cluster's namespace, its output captured."""
        return subprocess.run(
            [*self.enter(), *command], cwd=cwd, capture_output=True, text=True, timeout=600
        )


def _stop(process: subprocess.Popen) -> None:
    """Stop a `ray start --block` or a driver, and everything it started (its own process
    group)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):  # its children, if any outlived it
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def ray_cluster():
    """``ray start --head`` plus one more node on 127.0.0.1 of a private network namespace,
    stopped by their process groups (never ``ray stop``, which stops every Ray cluster of the
    machine)."""
    pytest.importorskip("ray")
    made = subprocess.run([*_unshare(), "true"], capture_output=True, text=True)
    if made.returncode:
        pytest.fail(f"cannot make a network namespace for the Ray tests: {made.stderr.strip()}")
    ray = str(Path(sys.executable).with_name("ray"))
    temp = Path(tempfile.mkdtemp(prefix="bnray"))  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--block"]
    address = f"127.0.0.1:{GCS_PORT}"
    started = []
    try:
        with (temp / "head.log").open("w") as log:
            head = subprocess.Popen(
                [*_unshare(), ray, "start", "--head", "--port", str(GCS_PORT),
                 "--include-dashboard=false", "--temp-dir", str(temp), *common],
                env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        started.append(head)
        _wait_for_head(head, temp / "head.log")
        node = subprocess.Popen(
            [*_enter(head.pid), ray, "start", "--address", address, *common],
            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        started.append(node)
        cluster = Cluster(address, head.pid, node.pid)
        _wait_for_nodes(cluster, 2)
        yield cluster
    finally:
        for process in reversed(started):
            _stop(process)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_head(head: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Wait until the head has its namespace and its GCS listens in it."""
    probe = f"import socket; socket.create_connection(('127.0.0.1', {GCS_PORT}), 1).close()"
    ours = os.readlink("/proc/self/ns/net")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(
                f"ray start --head exited with status {head.returncode}:\n{log.read_text()}"
            )
        if os.readlink(f"/proc/{head.pid}/ns/net") != ours:  # `unshare` has made it
            probe_in_it = [*_enter(head.pid), sys.executable, "-c", probe]
            if subprocess.run(probe_in_it, stderr=subprocess.DEVNULL).returncode == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"no Ray head on port {GCS_PORT} after {timeout} s")


def _wait_for_nodes(cluster: Cluster, count: int, timeout: float = 120) -> None:
    """Wait until the cluster has ``count`` live nodes (the second one takes a while)."""
    code = (
        "import ray, time\n"
        f"ray.init(address={cluster.address!r}, logging_level='ERROR')\n"
        f"deadline = time.monotonic() + {timeout}\n"
        f"while sum(n['Alive'] for n in ray.nodes()) < {count}:\n"
        "    assert time.monotonic() < deadline, ray.nodes()\n"
        "    time.sleep(0.5)\n"
    )
    waited = cluster.run(sys.executable, "-c", code)
    assert waited.returncode == 0, waited.stderr


def _listening(net: Path) -> set[int]:
    """The inodes of the TCP sockets that listen in the network namespace of ``net``
    (``/proc/PID/net``: the namespace of process PID)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        for line in (net / table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN:
                inodes.add(int(fields[9]))
    return inodes


def _sockets(group: int) -> set[int]:
    """The inodes of the sockets that the processes of process group ``group`` hold."""
    inodes = set()
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
            if not proc.name.isdigit():
                continue
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != group:
                continue
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def test_the_ray_cluster_listens_only_inside_its_namespace(ray_cluster):
    """The head, the second node and a connected driver all listen, in a namespace whose only
    interface is ``lo``; none of them listens in the namespace of this machine's tests."""
    driver_code = (
        "import ray, sys\n"
        f"ray.init(address={ray_cluster.address!r}, logging_level='ERROR')\n"
        "print('connected', flush=True)\n"
        "sys.stdin.read()\n"
    )
    driver = subprocess.Popen(
        [*ray_cluster.enter(), sys.executable, "-c", driver_code],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert driver.stdout is not None and driver.stdout.readline() == "connected\n"
        inside = _listening(Path(f"/proc/{ray_cluster.head}/net"))
        outside = _listening(Path("/proc/self/net"))
        assert inside and outside.isdisjoint(inside)  # two namespaces
        for group in (ray_cluster.head, ray_cluster.node, driver.pid):
            sockets = _sockets(group)
            assert sockets & inside, f"process group {group} listens nowhere in the namespace"
            assert not sockets & outside, f"process group {group} listens outside the namespace"
        net_dev = Path(f"/proc/{ray_cluster.head}/net/dev").read_text().splitlines()[2:]
        assert [line.split(":")[0].strip() for line in net_dev] == ["lo"]
    finally:
        _stop(driver)


def test_ray_gives_the_serial_numbers(ray_cluster, tiny, tmp_path):
    config, serial = tiny
    out = tmp_path / "ray"
    args = ["run", str(config), "--out", str(out), "--no-report", "--progress", "off"]
    ray = ["--executor", "ray", "--ray-address", ray_cluster.address]
    ran = ray_cluster.run(sys.executable, "-m", "bnlab", *args, *ray)
    assert ran.returncode == 0, ran.stderr
    assert _numbers(out) == _numbers(serial)
    _same_checkpoints(out, serial, 4)


def test_ray_tries_a_lost_worker_or_a_failed_run_again(ray_cluster, tmp_path):
    driver = "import sys, worker_tasks; worker_tasks.dies_on_ray(*sys.argv[1:])"
    here = Path(worker_tasks.__file__).parent
    ran = ray_cluster.run(
        sys.executable, "-c", driver, ray_cluster.address, str(tmp_path), cwd=here
    )
    assert ran.returncode == 0, ran.stderr
    outcomes = json.loads(ran.stdout.splitlines()[-1])
    assert (outcomes["once"]["result"], outcomes["once"]["attempts"]) == ("done", 2)
    assert outcomes["always"]["attempts"] == 2
    assert outcomes["always"]["error"].startswith("Ray worker lost")
    raised = outcomes["raise"]
    assert (raised["error"], raised["attempts"]) == ("ValueError: no such data", 2)
