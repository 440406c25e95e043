"""benchmarks/robustness_table.py's --at table: one line per long run and each rule's worst attack per round."""

import runpy
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def run_file(path: Path, rule: str, attack: str, accuracy: list[float], params: dict | None = None) -> None:
    config = {"aggregator": {"name": rule}, "attack": {"name": attack, **({"params": params} if params else {})}}
    with h5py.File(path, "w") as f:
        f.attrs["config"] = yaml.safe_dump(config)
        f["round"] = np.arange(1, len(accuracy) + 1)
        f["test_accuracy"] = np.array(accuracy, dtype=np.float32)


def test_worst_attack_per_round_over_the_runs_with_an_attack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]):
    run_file(tmp_path / "a.h5", "r", "none", [0.5, 0.9, 0.95, 0.99])  # no attack: never the worst
    run_file(tmp_path / "b.h5", "r", "sign_flip", [0.6, 0.7, 0.8, 0.9])
    run_file(tmp_path / "c.h5", "r", "alie", [0.4, 0.8, 0.85, 0.8], {"z": 1})
    run_file(tmp_path / "d.h5", "r", "ipm", [0.1, 0.1, 0.1])  # did not reach round 4: left out
    monkeypatch.setattr(sys, "argv", ["robustness_table.py", "--at", "1,2,4", str(tmp_path / "*.h5")])
    runpy.run_path(str(REPO / "benchmarks" / "robustness_table.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert "| `r` | alie (z=1) | 0.400 | 0.800 | 0.800 |" in lines
    assert not any("ipm" in line for line in lines)
    assert lines[-1] == "| `r` | 0.400 (alie (z=1)) | 0.700 (sign_flip) | 0.800 (alie (z=1)) |"
