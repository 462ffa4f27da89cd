"""The local launcher gives each rank torchrun's environment and reports which rank failed."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from bnlab.lab.launch import env_world, launch_local

WRITE_ENV = (
    "import json, os, sys; keys = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', "
    "'MASTER_PORT'); open(os.path.join(sys.argv[1], os.environ['RANK']), 'w')"
    ".write(json.dumps({k: os.environ[k] for k in keys}))"
)


def test_every_rank_gets_torchrun_environment(tmp_path: Path) -> None:
    assert launch_local([sys.executable, "-c", WRITE_ENV, str(tmp_path)], 3) == 0
    envs = [json.loads((tmp_path / str(r)).read_text()) for r in range(3)]
    assert [e["RANK"] for e in envs] == ["0", "1", "2"]
    assert {e["WORLD_SIZE"] for e in envs} == {"3"}
    assert {e["MASTER_ADDR"] for e in envs} == {"127.0.0.1"}
    assert len({e["MASTER_PORT"] for e in envs}) == 1


def test_failing_rank_is_named_and_others_are_stopped(capfd: pytest.CaptureFixture[str]) -> None:
    code = "import os, sys, time\nif os.environ['RANK'] == '1': sys.exit(3)\ntime.sleep(60)\n"
    assert launch_local([sys.executable, "-c", code], 2, grace_s=0.5) == 3
    err = capfd.readouterr().err
    assert "rank 1 exited with code 3" in err
    assert "rank 0 was killed by SIGTERM" in err


def test_env_world(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert env_world() is None
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("MASTER_PORT", "1234")
    env = env_world()
    assert env is not None and (env.rank, env.world_size, env.master_port) == (1, 4, 1234)
    monkeypatch.setenv("WORLD_SIZE", "four")
    with pytest.raises(ValueError, match="must be integers"):
        env_world()


def test_ranks_get_time_to_save_after_ctrl_c(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C reaches the ranks too (one process group): they finish saving on their own
    before the launcher would terminate them. Here only the launcher is interrupted."""
    import bnlab.lab.launch as launch

    code = "import sys, time; time.sleep(1.0); open(sys.argv[1], 'w').write('saved')"
    real_sleep = time.sleep
    calls = []

    def interrupted_sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 1:  # the first wait of the launcher's watch loop
            raise KeyboardInterrupt
        real_sleep(seconds)

    monkeypatch.setattr(launch.time, "sleep", interrupted_sleep)
    with pytest.raises(KeyboardInterrupt):
        launch_local([sys.executable, "-c", code, str(tmp_path / "rank-file")], 1)
    assert (tmp_path / "rank-file").read_text() == "saved"
