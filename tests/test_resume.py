"""Checkpoint/resume, stop signals and bad input around them: a run killed anywhere continues bit-identically."""

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from mpifl import checkpoint
from mpifl.cli import PREEMPTED_EXIT, main
from mpifl.train import run

from .conftest import small_config, small_tree
from .mpi_helpers import PYTHONPATH

HERE = Path(__file__).resolve().parent
ROUNDS = 150  # a run must outlast the poll that signals it at round 4-20 by a wide margin


def tree(rule: str) -> dict:
    extra = {"model": {"name": "softmax"}, "aggregator": {"name": "rsa", "params": {"delta": 0.01}}} if rule == "rsa" else {}
    return small_tree(rounds=ROUNDS, output={"checkpoint_every": 3}, **extra)


def start_training(tmp_path: Path, rule: str, out: Path) -> subprocess.Popen:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tree(rule)))
    return subprocess.Popen([sys.executable, "-m", "mpifl", "train", "-c", str(cfg), "--out", str(out), "--quiet"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": PYTHONPATH})


def wait_for_checkpoint(proc: subprocess.Popen, out: Path, at_least: int) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            reached = checkpoint.load(checkpoint.path_for(out)).round
            if reached >= at_least:
                return reached
        except checkpoint.CheckpointError:
            pass
        time.sleep(0.01)
    pytest.fail(f"no checkpoint at round {at_least} (exit {proc.poll()})")


def assert_same_run(a: Path, b: Path) -> None:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert fb["round"][:].tolist() == list(range(1, ROUNDS + 1))  # rounds after the checkpoint not duplicated
        assert np.array_equal(fa["model/theta"][:], fb["model/theta"][:])  # bit-identical
        for name in ["lr", "applied", "n_accepted", "test_accuracy", "test_loss",
                     *(f"clients/{k}" for k in fa["clients"])]:
            assert np.array_equal(fa[name][:], fb[name][:], equal_nan=True), name


@pytest.fixture(scope="module", params=["diversefl", "rsa"])
def uninterrupted(request, tmp_path_factory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp("whole") / "whole.h5"
    run(small_config(**tree(request.param)), out, progress=None)
    return request.param, out


def test_sigkill_at_a_random_round_then_resume_is_bit_identical(uninterrupted, tmp_path: Path):
    rule, whole = uninterrupted
    out = tmp_path / "killed.h5"
    proc = start_training(tmp_path, rule, out)
    wait_for_checkpoint(proc, out, random.Random(rule).randint(4, 20))
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    result = CliRunner().invoke(main, ["train", "--resume", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert_same_run(whole, out)


def test_sigterm_checkpoints_exits_75_and_resumes(uninterrupted, tmp_path: Path):
    rule, whole = uninterrupted
    out = tmp_path / "stopped.h5"
    proc = start_training(tmp_path, rule, out)
    wait_for_checkpoint(proc, out, 6)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == PREEMPTED_EXIT, stderr
    stopped_at = checkpoint.load(checkpoint.path_for(out)).round
    assert f"stopped by signal after round {stopped_at}; checkpoint {out}.ckpt written" in stderr
    with h5py.File(out, "r") as f:  # a clean stop closes the file: plain readers work
        assert f["round"][-1] == stopped_at and f["model/round"][0] == 0
    assert CliRunner().invoke(main, ["train", "--resume", str(out), "--quiet"]).exit_code == 0
    assert_same_run(whole, out)


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    out = tmp_path / "run.h5"
    run(small_config(rounds=4, output={"checkpoint_every": 2}), out, progress=None)
    return out


def resume(path: Path, *extra: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, ["train", "--resume", str(path), "--quiet", *extra])


def test_resume_a_finished_run_asks_for_more_rounds(finished: Path):
    result = resume(finished)
    assert result.exit_code == 1
    assert "the checkpoint is at round 4 and rounds=4: nothing to resume; raise --rounds" in result.output
    extended = resume(finished, "--rounds", "7")
    assert extended.exit_code == 0, extended.output
    with h5py.File(finished, "r") as f:
        assert f["round"][:].tolist() == list(range(1, 8))


@pytest.mark.parametrize(("damage", "message"), [
    (lambda ck: ck.unlink(), "no checkpoint"),
    (lambda ck: ck.write_bytes(b"PK\x03\x04 not really a zip"), "is not a readable mpifl checkpoint"),
    (lambda ck: ck.write_bytes(ck.read_bytes()[:100]), "is not a readable mpifl checkpoint"),
])
def test_damaged_checkpoints_give_one_line(finished: Path, damage, message: str):
    damage(checkpoint.path_for(finished))
    result = resume(finished, "--rounds", "6")
    assert result.exit_code == 1 and message in result.output and result.output.count("\n") == 1


def test_checkpoint_of_another_run_is_refused(finished: Path, tmp_path: Path):
    other = tmp_path / "other.h5"
    run(small_config(rounds=4, seed=11, output={"checkpoint_every": 2}), other, progress=None)
    checkpoint.path_for(other).replace(checkpoint.path_for(finished))
    result = resume(finished, "--rounds", "6")
    assert result.exit_code == 1 and "belongs to another run" in result.output


def _bad_checkpoints() -> list:
    """Checkpoints that must not touch the run file: rounds outside 1..4 (the file holds 4), θ of another dtype or
    size, or with NaN/inf."""
    def theta(ck, values):  # type: ignore[no-untyped-def]
        return dataclasses.replace(ck, theta=values(ck.theta))

    return [
        (lambda ck: dataclasses.replace(ck, round=-3), "is at round -3, but"),
        (lambda ck: dataclasses.replace(ck, round=0), "is at round 0, but"),
        (lambda ck: dataclasses.replace(ck, round=9), "is at round 9, but"),
        (lambda ck: theta(ck, lambda t: t.astype(np.float64)), "holds theta of float64"),
        (lambda ck: theta(ck, lambda t: t[:-1]), "holds theta of float32"),
        (lambda ck: theta(ck, lambda t: np.where(np.arange(len(t)) == 5, np.nan, t)), "non-finite values"),
    ]


def _save_raw(path: Path, ck: checkpoint.Checkpoint) -> None:
    """Like checkpoint.save, but keeping θ's dtype (save casts to float32), as a foreign or damaged writer might."""
    with path.open("wb") as fh:
        np.savez(fh, format=np.array(checkpoint.FORMAT), round=np.array(ck.round), theta=ck.theta,
                 config=np.frombuffer(ck.config_yaml.encode(), dtype=np.uint8))


@pytest.mark.parametrize(("change", "message"), _bad_checkpoints())
def test_inconsistent_checkpoint_is_refused_before_the_run_file_is_touched(finished: Path, change, message: str):
    ck_path = checkpoint.path_for(finished)
    _save_raw(ck_path, change(checkpoint.load(ck_path)))
    before = finished.read_bytes()
    result = resume(finished, "--rounds", "6")
    assert result.exit_code == 1 and message in result.output and result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output
    assert finished.read_bytes() == before  # neither cut to the checkpoint's round nor recreated


def test_resume_refuses_foreign_files_and_config_changes(finished: Path, tmp_path: Path):
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = 1
    assert "is not an mpifl run file" in resume(tmp_path / "foreign.h5").output
    assert "cannot read run file" in resume(tmp_path / "missing.h5").output
    changed = resume(finished, "--set", "seed=3")
    assert changed.exit_code == 1 and "only --rounds, --data-root and --plugin" in changed.output


def test_checkpoint_is_replaced_atomically(tmp_path: Path):
    path = tmp_path / "run.h5.ckpt"
    ckpt = checkpoint.Checkpoint(3, np.arange(4, dtype=np.float32), None, "a: 1\n")
    checkpoint.save(path, ckpt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5.ckpt"]  # no temp file left behind
    loaded = checkpoint.load(path)
    assert loaded.round == 3 and np.array_equal(loaded.theta, ckpt.theta) and loaded.client_models is None


@pytest.fixture
def tiny_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_stops_the_run_with_one_line_and_keeps_the_file(tiny_disk: Path, tmp_path: Path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(small_tree(rounds=2000, output={"checkpoint_every": 2})))
    out = tiny_disk / "run.h5"
    proc = subprocess.Popen([sys.executable, "-m", "mpifl", "train", "-c", str(cfg), "--out", str(out), "--quiet"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": PYTHONPATH})
    wait_for_checkpoint(proc, out, 4)
    try:  # another job fills the disk (on a fast machine the run may have filled the 2 MB already: open fails)
        with open(tiny_disk / "filler", "wb") as fh:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
    except OSError:
        pass
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot write") and "No space left on device" in lines[0]
    with h5py.File(out, "r", swmr=True) as f:
        rows = f["round"][:]
        assert len(rows) >= 4 and rows.tolist() == list(range(1, len(rows) + 1))
    assert checkpoint.load(checkpoint.path_for(out)).round >= 4  # the last good checkpoint survived


def test_stop_signals_are_recorded_then_ignored_until_exit():
    """Inside the round loop SIGUSR1/SIGTERM only set a flag. Without a stop the previous handlers come back; after
    one, further stop signals are ignored, so a second SIGTERM (srun ending the step) cannot turn the exit code 75
    into a death by signal."""
    from mpifl.lifecycle import StopSignals

    before, before_term = signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGTERM)
    with StopSignals() as quiet:
        pass
    assert not quiet.requested and signal.getsignal(signal.SIGUSR1) is before
    try:
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)
        assert stop.requested
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGUSR1)  # would end this process with the default handler
    finally:
        signal.signal(signal.SIGUSR1, before)
        signal.signal(signal.SIGTERM, before_term)
