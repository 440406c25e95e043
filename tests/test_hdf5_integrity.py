"""The run file guards its numbers: checksummed datasets, damage reported as one line naming the file, and any
failed write (h5py raises RuntimeError as well as OSError) a one-line exit, not a traceback."""

from pathlib import Path

import h5py
import pytest
import yaml
from click.testing import CliRunner

from mpifl.cli import main
from mpifl.metrics import complete_rows
from mpifl.train import run

from .conftest import small_config, small_tree


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    out = tmp_path / "run.h5"
    run(small_config(rounds=4, output={"checkpoint_every": 2}), out, progress=None)
    return out


def damage_chunk(path: Path, dataset: str) -> None:
    """Flip bytes inside the first stored chunk of ``dataset``, as a bad disk or a torn copy would."""
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        raw = fh.read(8)
        fh.seek(info.byte_offset)
        fh.write(bytes(b ^ 0xFF for b in raw))


def test_every_dataset_carries_a_checksum(finished: Path):
    with h5py.File(finished, "r") as f:
        names = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert len(names) > 20 and [n for n in names if not f[n].fletcher32] == []


def test_damaged_file_is_one_line_naming_it_for_report_and_resume(finished: Path, tmp_path: Path):
    damage_chunk(finished, "test_accuracy")
    reported = CliRunner().invoke(main, ["report", str(finished), "--out", str(tmp_path / "rep")])
    assert reported.exit_code == 1 and reported.output.count("\n") == 1, reported.output
    assert reported.output.startswith(f"Error: {finished}: damaged mpifl run (")
    before = finished.read_bytes()
    resumed = CliRunner().invoke(main, ["train", "--resume", str(finished), "--rounds", "6", "--quiet"])
    assert resumed.exit_code == 1 and resumed.output.count("\n") == 1, resumed.output
    assert f"cannot read run file {finished}: damaged" in resumed.output
    assert finished.read_bytes() == before


@pytest.mark.parametrize(("failing_call", "message"), [(4, "Error: cannot write round 4 to "),
                                                       (7, "Error: cannot write the final model to ")])
def test_runtime_error_from_a_flush_is_one_line(tmp_path: Path, monkeypatch, failing_call: int, message: str):
    """HDF5 reports some failed writes (a full disk during a flush) as RuntimeError, not OSError."""
    calls, real_flush = [], h5py.File.flush

    def flush(self):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == failing_call:
            raise RuntimeError("Can't flush (file write failed)")
        return real_flush(self)

    monkeypatch.setattr(h5py.File, "flush", flush)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(small_tree(rounds=6)))
    out = tmp_path / "run.h5"
    result = CliRunner().invoke(main, ["train", "-c", str(cfg), "--out", str(out), "--quiet"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(message) and "Can't flush (file write failed)" in result.output
    with h5py.File(out, "r") as f:
        assert complete_rows(f) >= min(failing_call - 1, 6)
