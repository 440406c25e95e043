import csv
import math
import struct
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from mpifl.cli import main
from mpifl.config import to_yaml
from mpifl.metrics import SCHEMA_VERSION, RoundRecord, RunWriter
from mpifl.report import ReportError, load_run, report
from mpifl.train import run

from .conftest import small_config, small_tree


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("runs")
    specs = [("diversefl", "sign_flip"), ("median", "sign_flip"), ("diversefl", "none")]
    paths = []
    for rule, attack in specs:
        path = folder / f"{rule}_{attack}.h5"
        run(small_config(rounds=8, aggregator={"name": rule}, attack={"name": attack}), path, progress=None)
        paths.append(path)
    return paths


def read_summary(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv") as fh:
        return {row["file"]: row for row in csv.DictReader(fh)}


def test_figures_exist_with_the_expected_size(runs: list[Path], tmp_path: Path):
    written = report(runs, tmp_path)
    assert png_size(tmp_path / "accuracy.png") == (800, 300)  # two attacks → two 400x300 panels
    for stem in ("diversefl_sign_flip", "diversefl_none"):
        assert png_size(tmp_path / f"detection_{stem}.png") == (960, 200)  # 4 clients: one row of four 2.4-inch panels
    assert not (tmp_path / "detection_median_sign_flip.png").exists()  # Median computes no C1, C2
    assert not (tmp_path / "backdoor.png").exists()
    assert all(p.stat().st_size > 1000 for p in written if p.suffix == ".png")


def test_summary_numbers_equal_the_hdf5_datasets(runs: list[Path], tmp_path: Path):
    report(runs, tmp_path, target=0.5)
    rows = read_summary(tmp_path)
    for path in runs:
        row = rows[path.name]
        with h5py.File(path, "r") as f:
            acc = f["test_accuracy"][:]
            rounds = f["round"][:]
            byz, acc_mask = f["clients/byzantine"][:], f["clients/accepted"][:]
            times = sum(f[f"time/{p}"][:].sum() for p in f["time"])
        evaluated = ~np.isnan(acc)
        assert float(row["final_accuracy"]) == pytest.approx(acc[evaluated][-1])
        assert float(row["best_accuracy"]) == pytest.approx(acc[evaluated].max())
        assert float(row["last10_accuracy"]) == pytest.approx(acc[evaluated][-1:].mean())  # 4 evals → last 1
        reached = rounds[evaluated][acc[evaluated] >= 0.5]
        assert float(row["rounds_to_target"]) == (reached[0] if len(reached) else pytest.approx(math.nan, nan_ok=True))
        assert float(row["wall_seconds"]) == pytest.approx(times)
        if "diversefl" in path.name and byz.any():
            assert float(row["tpr"]) == pytest.approx((~acc_mask & byz).sum() / byz.sum())
            assert float(row["fpr"]) == pytest.approx((~acc_mask & ~byz).sum() / (~byz).sum())
        if "median" in path.name:
            assert math.isnan(float(row["tpr"]))
    assert "| diversefl_sign_flip.h5 | DiverseFL | sign_flip |" in (tmp_path / "summary.md").read_text()


def write_crafted(path: Path, byzantine: np.ndarray, accepted: np.ndarray, finish: bool = True,
                  schema: int | None = None) -> None:
    cfg = small_config()
    writer = RunWriter.create(path, 4, 1, 3, to_yaml(cfg), "test")
    for r, (b, a) in enumerate(zip(byzantine, accepted), start=1):
        writer.append(RoundRecord(
            round=r, lr=0.1, applied=True, test_accuracy=0.5, test_loss=1.0, backdoor_accuracy=math.nan, byzantine=b,
            sampled=np.ones(4, bool), accepted=a, weight=a / max(1, a.sum()), invalid=np.zeros(4, bool),
            flags=(~a).astype(np.uint8), c1=np.ones(4, np.int8), c2=np.ones(4, np.float32),
            update_norm=np.ones(4, np.float32), guiding_norm=np.ones(4, np.float32), times={"gather": 0.5}))
    if finish:
        writer.write_model(np.zeros(3, np.float32), len(byzantine))
    writer.close()
    if schema is not None:
        with h5py.File(path, "r+") as f:
            f.attrs["schema_version"] = schema


def test_detection_rates_on_a_crafted_file_are_exact(tmp_path: Path):
    byz = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]], dtype=bool)  # 4 Byzantine, 8 honest
    acc = np.array([[0, 1, 1, 1], [0, 1, 0, 1], [1, 0, 1, 1]], dtype=bool)  # flags 3 of 4 Byzantine, 1 of 8 honest
    write_crafted(tmp_path / "crafted.h5", byz, acc)
    report([tmp_path / "crafted.h5"], tmp_path / "out")
    row = read_summary(tmp_path / "out")["crafted.h5"]
    assert float(row["tpr"]) == 0.75 and float(row["fpr"]) == 0.125
    assert row["rounds"] == "3" and row["finished"] == "True"
    assert (row["flags_direction"], row["flags_length"], row["flags_non_finite"]) == ("4", "0", "0")
    assert "| crafted.h5 | 4 | 0 | 0 | 0 | 0 |" in (tmp_path / "out" / "summary.md").read_text()
    assert float(row["gather_ms"]) == 500.0


def test_interrupted_run_is_reported_as_partial(tmp_path: Path):
    write_crafted(tmp_path / "partial.h5", np.zeros((2, 4), bool), np.ones((2, 4), bool), finish=False)
    report([tmp_path / "partial.h5"], tmp_path / "out")
    assert "| 2 (partial) |" in (tmp_path / "out" / "summary.md").read_text()


def test_foreign_truncated_and_newer_files_are_refused(tmp_path: Path):
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = [1, 2]
    with pytest.raises(ReportError, match="not an mpifl run"):
        load_run(tmp_path / "foreign.h5")
    write_crafted(tmp_path / "whole.h5", np.zeros((2, 4), bool), np.ones((2, 4), bool))
    data = (tmp_path / "whole.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(ReportError, match="cut.h5: not a readable HDF5 file"):
        load_run(tmp_path / "cut.h5")
    write_crafted(tmp_path / "v9.h5", np.zeros((2, 4), bool), np.ones((2, 4), bool), schema=9)
    with pytest.raises(ReportError,
                       match=f"written with schema version 9; this mpifl reads version {SCHEMA_VERSION}"):
        load_run(tmp_path / "v9.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ReportError, match="not a readable HDF5 file"):
        load_run(tmp_path / "text.h5")


def test_backdoor_figure(tmp_path: Path):
    cfg = small_config(attack={"name": "backdoor"}, byzantine={"model": "markov", "markov_class": 1},
                       data={"partition": "two_class"}, aggregator={"name": "mean"})
    run(cfg, tmp_path / "bd.h5", progress=None)
    report([tmp_path / "bd.h5"], tmp_path / "out")
    assert png_size(tmp_path / "out" / "backdoor.png") == (800, 300)


def test_cli_report_with_a_glob_and_a_clear_error(runs: list[Path], tmp_path: Path):
    result = CliRunner().invoke(main, ["report", str(runs[0].parent / "*.h5"), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("3 runs -> ") and (tmp_path / "summary.md").exists()
    bad = CliRunner().invoke(main, ["report", str(tmp_path / "nothing*.h5")])
    assert bad.exit_code == 1 and bad.output == f"Error: no file matches {tmp_path / 'nothing*.h5'}.\n"


def test_follow_reads_a_file_while_it_is_written(tmp_path: Path):
    import yaml

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(small_tree(rounds=60, train={"eval_every": 5})))
    out = tmp_path / "live.h5"
    writer = subprocess.Popen([sys.executable, "-m", "mpifl", "train", "-c", str(cfg), "--out", str(out), "--quiet"])
    try:
        deadline = time.monotonic() + 60
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        lines: list[str] = []
        result = CliRunner().invoke(main, ["report", str(out), "--follow", "--interval", "0.2", "--out",
                                           str(tmp_path / "rep")])
        lines = result.output.splitlines()
        assert result.exit_code == 0, result.output
        assert writer.wait(timeout=60) == 0
    finally:
        writer.kill()
    refreshes = [line for line in lines if line.startswith("[mpifl report]")]
    assert len(refreshes) >= 2 and refreshes[-1].endswith("live.h5: round 60")
    assert any(not line.endswith("round 60") for line in refreshes)  # it saw the run before it finished
    assert read_summary(tmp_path / "rep")["live.h5"]["rounds"] == "60"


def test_cli_report_on_a_folder_reports_readable_runs_and_lists_every_unreadable_one(runs: list[Path],
                                                                                      tmp_path: Path):
    folder = tmp_path / "runs"
    folder.mkdir()
    for path in runs:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "aaa_text.h5").write_text("hello")
    (folder / "zzz_cut.h5").write_bytes(runs[0].read_bytes()[:500])
    result = CliRunner().invoke(main, ["report", str(folder), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 1
    assert result.stdout.startswith("3 runs -> ")
    assert (tmp_path / "rep" / "summary.md").read_text().startswith("# mpifl report (3 runs)")
    lines = result.stderr.splitlines()
    assert len(lines) == 3, result.stderr
    assert lines[0].startswith(f"mpifl report: skipped {folder / 'aaa_text.h5'}: not a readable HDF5 file (")
    assert lines[1].startswith(f"mpifl report: skipped {folder / 'zzz_cut.h5'}: ")
    assert lines[2] == "Error: 2 of 5 files could not be read (listed above)."


def test_detection_figure_labels_its_axes(runs: list[Path], tmp_path: Path, monkeypatch):
    from mpifl import report as rep

    figures, real_save = [], rep._save

    def save(plt, fig, path: Path) -> Path:  # type: ignore[no-untyped-def]
        figures.append([(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes if ax.axison])
        return real_save(plt, fig, path)

    monkeypatch.setattr(rep, "_save", save)
    rep.plot_detection(load_run(runs[0]), tmp_path)
    assert figures == [[("round", "C1 × C2"), ("round", ""), ("round", ""), ("round", "")]]  # 4 clients, one row
