"""A run that goes wrong says so while it trains: non-finite θ stops it, a rule that never steps is warned about."""

import sys
from pathlib import Path

import h5py
import numpy as np
import yaml
from click.testing import CliRunner

from mpifl import checkpoint
from mpifl.cli import main
from mpifl.health import STALL_ROUNDS
from mpifl.server import Server
from mpifl.train import run

from .conftest import small_config, small_tree


def test_non_finite_theta_stops_the_run_with_one_line_and_keeps_earlier_rounds(tmp_path: Path, monkeypatch):
    honest = Server.decide

    def nan_in_round_4(self, screened, theta, byzantine, r):  # type: ignore[no-untyped-def]
        decision = honest(self, screened, theta, byzantine, r)
        if r == 4:
            decision.direction[0] = float("nan")
        return decision

    monkeypatch.setattr(Server, "decide", nan_in_round_4)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(small_tree(rounds=8, aggregator={"name": "mean"}, output={"checkpoint_every": 1})))
    out = tmp_path / "run.h5"
    result = CliRunner().invoke(main, ["train", "-c", str(cfg), "--out", str(out), "--quiet"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("Error: θ became non-finite (NaN or inf) in round 4, so the run stops: ")
    with h5py.File(out, "r") as f:
        assert f["round"][:].tolist() == [1, 2, 3]
    kept = checkpoint.load(checkpoint.path_for(out))
    assert kept.round == 3 and np.isfinite(kept.theta).all()


def test_a_rule_that_never_steps_is_warned_about_once(tmp_path: Path, capsys):
    nobody_passes = {"params": {"eps1": 1e6, "eps2": 2e6}}
    run(small_config(aggregator=nobody_passes, rounds=2 * STALL_ROUNDS + 1), tmp_path / "run.h5", progress=sys.stderr)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "took no step" in line]
    assert warnings == [f"[mpifl] warning: diversefl took no step in rounds 1..{STALL_ROUNDS}: too few usable updates "
                        "for it (see aggregator.params and the clients per round); θ is not changing."]


def test_a_rule_that_steps_is_not_warned_about(tmp_path: Path, capsys):
    run(small_config(rounds=STALL_ROUNDS + 2), tmp_path / "run.h5", progress=sys.stderr)
    assert "took no step" not in capsys.readouterr().err
