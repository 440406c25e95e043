"""`mpifl`: train, data fetch, info. Errors end as one line and a non-zero exit code, never a traceback."""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from . import __version__, bundled, threads
from .checkpoint import CheckpointError, path_for as checkpoint_path_for
from .config import ExperimentConfig, from_tree, load, tree_from_yaml
from .data.roots import DATA_ROOT_ENV, DataError, resolve_root
from .errors import ConfigError, RegistryError
from .launch import launcher_rank
from .metrics import WriteError, read_config_yaml
from .registry import load_plugin

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: stopped on request with a checkpoint; the SLURM template requeues on it


class OutputExists(ConfigError):
    """The output file is there and --overwrite was not given: refused before MPI starts up."""


@contextlib.contextmanager
def _errors_as_one_line() -> Iterator[None]:
    """User-facing failures become one line and exit code 1; a stop signal becomes exit code 75."""
    from .health import Halted
    from .report import ReportError
    from .lifecycle import OutputError, Preempted, SetupError

    try:
        yield
    except Preempted as exc:
        if exc.rank == 0:
            click.echo(f"mpifl: {exc}", err=True)
        sys.exit(PREEMPTED_EXIT)
    except Halted as exc:
        if exc.rank == 0:
            raise click.ClickException(str(exc)) from None
        sys.exit(1)
    except OutputExists as exc:
        if launcher_rank() != 0:  # every rank of the job sees the same file: rank 0 says it, once
            sys.exit(1)
        raise click.ClickException(str(exc)) from None
    except (ConfigError, DataError, CheckpointError, ReportError, SetupError, OutputError, RegistryError,
            WriteError) as exc:
        raise click.ClickException(str(exc)) from None


_data_root_option = click.option("--data-root", type=click.Path(file_okay=False),
                                 help=f"Dataset folder (default ${DATA_ROOT_ENV}, ./data).")
_plugin_option = click.option("--plugin", "plugins", multiple=True, type=click.Path(dir_okay=False),
                              help="A Python file that registers rules, filters, pre-aggregators, attacks or other "
                                   "choices (repeatable).")


def _load_plugins(plugins: tuple[str, ...]) -> None:
    """Import the researcher's files before the config is read, so their names are valid choices."""
    for path in plugins:
        load_plugin(path)


def _default_out(cfg: ExperimentConfig) -> Path:
    """runs/<name>_<rule>_<attack>_s<seed>.h5, numbered _2, _3, … past names a run (or its checkpoint) holds: a
    second run with the same settings gets its own file instead of a refusal after MPI start-up. Every rank picks
    the same name: rank 0 creates the file only after all ranks have set up."""
    stem = Path("runs") / f"{cfg.name}_{cfg.aggregator.name}_{cfg.attack.name}_s{cfg.seed}"
    candidates = (stem.with_name(stem.name + (f"_{i}" if i > 1 else "") + ".h5") for i in itertools.count(1))
    return next(p for p in candidates if not p.exists() and not checkpoint_path_for(p).exists())


def _fetch_missing_data(cfg: ExperimentConfig) -> None:
    """A single-process run fetches a missing dataset the way `mpifl data fetch` does and says so in one line. Under
    MPI every rank would fetch into the same folder at once: ranks keep loading what is there (torchvision's
    download only), and a missing dataset is an error naming `mpifl data fetch`."""
    from .data.fetch import ensure
    from .transport import launched_by_mpi

    if not cfg.data.download or launched_by_mpi():
        return
    root = resolve_root(cfg.data.root)
    source = ensure(cfg.data.dataset, root)
    if source is not None:
        click.echo(f"[mpifl] {cfg.data.dataset} was missing under {root}: fetched it (from {source}).", err=True)


@click.group()
@click.version_option(__version__, prog_name="mpifl")
def main() -> None:
    """DiverseFL and robust federated-learning baselines on MPI (rank 0 = server, ranks 1..n = clients)."""


@main.command()
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="Experiment YAML, or the name of a bundled config (mpifl configs lists them).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.SUB=VALUE", help="Override one config value.")
@click.option("--rounds", type=click.IntRange(min=1), help="Shorthand for --set rounds=N.")
@click.option("--seed", type=click.IntRange(min=0), help="Shorthand for --set seed=S.")
@_data_root_option
@click.option("--out", type=click.Path(dir_okay=False),
              help="HDF5 metrics file (default runs/<name>_<rule>_<attack>_s<seed>.h5, then _2, _3, … if taken).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--resume", "resume_path", type=click.Path(dir_okay=False),
              help="Continue RUN.h5 from the checkpoint beside it (RUN.h5.ckpt); only --rounds/--data-root may change.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
@_plugin_option
def train(config_path: str | None, overrides: tuple[str, ...], rounds: int | None, seed: int | None,
          data_root: str | None, out: str | None, overwrite: bool, resume_path: str | None, quiet: bool,
          plugins: tuple[str, ...]) -> None:
    """Train one experiment; under mpirun rank 0 serves and ranks 1..P-1 host the clients.

    Exit codes: 0 done, 1 error (one line on stderr), 75 stopped by SIGTERM/SIGUSR1/SIGINT after writing a checkpoint
    (resume with --resume).
    """
    from .build import resolve
    from .train import run

    extra = [f"rounds={rounds}"] if rounds is not None else []
    extra += [f"data.root={data_root}"] if data_root is not None else []
    with _errors_as_one_line():
        _load_plugins(plugins)
        if resume_path is not None:
            if config_path or overrides or seed is not None or out or overwrite:
                raise ConfigError("--resume takes the config from the run file; only --rounds, --data-root and "
                                  "--plugin may be given with it.")
            cfg = from_tree(tree_from_yaml(read_config_yaml(Path(resume_path)), str(resume_path)), extra)
            path = Path(resume_path)
        else:
            extra += [f"seed={seed}"] if seed is not None else []
            cfg = load(bundled.resolve(config_path) if config_path else None, [*overrides, *extra])
            path = Path(out) if out else Path(cfg.output.path) if cfg.output.path else _default_out(cfg)
            if path.exists() and not overwrite:  # before MPI starts up, not after
                raise OutputExists(f"output {path} already exists; pass --overwrite or choose another --out.")
        resolve(cfg)  # every name and parameter checked here, before any MPI start-up cost
        _fetch_missing_data(cfg)
        threads.configure()
        result = run(cfg, path, overwrite=overwrite, resume=resume_path is not None,
                     progress=None if quiet else sys.stderr)
    if result is not None:
        click.echo(f"{result.path}  final accuracy {result.final.accuracy:.4f} after {result.rounds} rounds")


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--list", "list_points", is_flag=True, help="Print the grid: index, status, output file, overrides.")
@click.option("--index", type=click.IntRange(min=0), help="Run one point (e.g. $SLURM_ARRAY_TASK_ID).")
@click.option("--local", "run_all", is_flag=True, help="Run every point here, one after the other.")
@click.option("--set", "overrides", multiple=True, metavar="KEY.SUB=VALUE", help="Override a value in every point.")
@_data_root_option
@click.option("--quiet", is_flag=True, help="No progress lines.")
@_plugin_option
def sweep(sweep_file: str, list_points: bool, index: int | None, run_all: bool, overrides: tuple[str, ...],
          data_root: str | None, quiet: bool, plugins: tuple[str, ...]) -> None:
    """Grid of runs from SWEEP_FILE (a file, or a bundled sweep: sweeps/fig2): finished points are skipped,
    checkpointed ones resumed."""
    from . import sweep as sw

    if [list_points, index is not None, run_all].count(True) != 1:
        raise click.UsageError("give exactly one of --list, --index I, --local.")
    extra = (*overrides, *([f"data.root={data_root}"] if data_root else []))
    with _errors_as_one_line():
        _load_plugins(plugins)
        threads.configure()
        points = sw.load(bundled.resolve(sweep_file), extra)
        if list_points:
            for p in points:
                click.echo(f"{p.index:4d}  {sw.status(p):9s}  {p.out}  {' '.join(p.overrides)}")
            return
        if index is not None and index >= len(points):
            raise ConfigError(f"--index {index} is out of range: {sweep_file} has points 0..{len(points) - 1}.")
        for p in points if run_all else [points[index]]:  # type: ignore[index]
            click.echo(sw.run_point(p, None if quiet else sys.stderr))


@main.group()
def byzfl() -> None:
    """ByzFL benchmark JSON files, run by mpifl: list the grid, run points, report ByzFL's evaluation (docs/byzfl.md)."""


def _byzfl_points(config_json: str, out_dir: str | None, data_root: str | None, overrides: tuple[str, ...]):  # type: ignore[no-untyped-def]
    from .byzfl.translate import load_json, points

    return points(load_json(config_json), out_dir, data_root, overrides)


_out_dir_option = click.option("--out-dir", type=click.Path(file_okay=False),
                               help="Folder for the run files (default: the JSON's results_directory).")


@byzfl.command("list")
@click.argument("config_json", type=click.Path(dir_okay=False))
@_out_dir_option
@click.option("--set", "overrides", multiple=True, metavar="KEY.SUB=VALUE", help="Override a value in every run.")
@_data_root_option
def byzfl_list(config_json: str, out_dir: str | None, overrides: tuple[str, ...], data_root: str | None) -> None:
    """Print ByzFL's grid as mpifl runs: index, status, output file."""
    from . import sweep as sw

    with _errors_as_one_line():
        for p in _byzfl_points(config_json, out_dir, data_root, overrides):
            click.echo(f"{p.index:4d}  {sw.status(p):9s}  {p.out}")


@byzfl.command("run")
@click.argument("config_json", type=click.Path(dir_okay=False))
@click.option("--index", type=click.IntRange(min=0), help="Run one point (e.g. $SLURM_ARRAY_TASK_ID).")
@click.option("--local", "run_all", is_flag=True, help="Run every point here, one after the other.")
@_out_dir_option
@click.option("--set", "overrides", multiple=True, metavar="KEY.SUB=VALUE", help="Override a value in every run.")
@_data_root_option
@click.option("--quiet", is_flag=True, help="No progress lines.")
@_plugin_option
def byzfl_run(config_json: str, index: int | None, run_all: bool, out_dir: str | None, overrides: tuple[str, ...],
              data_root: str | None, quiet: bool, plugins: tuple[str, ...]) -> None:
    """Run ByzFL's grid (all of it with --local, one point with --index); finished runs are skipped, checkpointed
    ones resumed. Under mpirun every rank runs the same point."""
    from . import sweep as sw
    from .build import resolve

    if [index is not None, run_all].count(True) != 1:
        raise click.UsageError("give exactly one of --index I, --local.")
    with _errors_as_one_line():
        _load_plugins(plugins)
        threads.configure()
        points = _byzfl_points(config_json, out_dir, data_root, overrides)
        if index is not None and index >= len(points):
            raise ConfigError(f"--index {index} is out of range: {config_json} has points 0..{len(points) - 1}.")
        chosen = points if run_all else [points[index]]  # type: ignore[index]
        for p in chosen:  # every name checked before the first run starts
            try:
                resolve(p.config)
            except ConfigError as exc:
                raise ConfigError(f"ByzFL point {p.index} ({p.out.name}): {exc}") from None
        for p in chosen:
            p.out.parent.mkdir(parents=True, exist_ok=True)
            click.echo(sw.run_point(p, None if quiet else sys.stderr))


@byzfl.command("report")
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", "out_dir", default="report/byzfl", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the table (Markdown, CSV), heatmaps and accuracy curves.")
def byzfl_report(runs: tuple[str, ...], out_dir: str) -> None:
    """ByzFL's evaluation of RUNS (HDF5 files, folders, quoted globs): per aggregator, f and heterogeneity, the
    learning rate whose worst accuracy over the attacks is best; heatmaps over f x heterogeneity; accuracy curves."""
    from . import report as rep
    from .byzfl import evaluate

    with _errors_as_one_line():
        written = evaluate.report(rep.expand(list(runs)), Path(out_dir))
    click.echo(f"-> {', '.join(str(p) for p in written)}")


@main.command()
def configs() -> None:
    """The bundled configs, by the name `mpifl train -c NAME` and `mpifl sweep NAME` take."""
    for name in bundled.names():
        click.echo(name)


@main.group()
def data() -> None:
    """Datasets under the data root (torchvision layout)."""


@data.command("fetch")
@click.argument("name", type=click.Choice(["mnist", "fashion_mnist", "cifar10", "cifar100"]))
@click.option("--root", type=click.Path(file_okay=False), help=f"Data root (default ${DATA_ROOT_ENV}, ./data).")
def fetch_command(name: str, root: str | None) -> None:
    """Download NAME (torchvision mirrors; offline fallbacks for MNIST and Fashion-MNIST)."""
    from .data.fetch import fetch

    target = resolve_root(root)
    with _errors_as_one_line():
        source = fetch(name, target)
    click.echo(f"{name} ready under {target} (from {source})")


@main.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", "out_dir", default="report", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the PNG figures, summary.md and summary.csv.")
@click.option("--target", default=0.9, show_default=True, type=click.FloatRange(0, 1),
              help="Accuracy for the rounds-to-target column.")
@click.option("--follow", is_flag=True, help="Keep refreshing while the runs are being written (SWMR).")
@click.option("--interval", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between refreshes with --follow.")
def report(runs: tuple[str, ...], out_dir: str, target: float, follow: bool, interval: float) -> None:
    """Figures and tables from RUNS (HDF5 files, folders of them, or quoted glob patterns).

    Unreadable files are skipped and listed, one line each, after the report of the others; the exit code is then 1.
    """
    from . import report as rep

    unreadable: list[str] = []
    with _errors_as_one_line():
        paths = rep.expand(list(runs))
        if follow:
            written = rep.follow(paths, Path(out_dir), target, interval, click.echo)
        else:
            written, unreadable = rep.report_readable(paths, Path(out_dir), target)
            if len(paths) == 1 and unreadable:  # one file: its problem is the whole story, in one line
                raise rep.ReportError(unreadable[0])
    if written:
        click.echo(f"{len(paths) - len(unreadable)} runs -> {', '.join(str(p) for p in written)}")
    for problem in unreadable:
        click.echo(f"mpifl report: skipped {problem}", err=True)
    if unreadable:
        click.echo(f"Error: {len(unreadable)} of {len(paths)} files could not be read (listed above).", err=True)
        sys.exit(1)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("mpirun_args", nargs=-1, type=click.UNPROCESSED, required=True)
def mpirun(mpirun_args: tuple[str, ...]) -> None:
    """mpirun MPIRUN_ARGS, with SIGTERM/SIGINT (a time limit, Ctrl-C) ending in a checkpoint and exit 75.

    Open MPI's mpirun kills the ranks on SIGTERM/SIGINT before they can checkpoint; this passes them on as SIGUSR1,
    which mpifl treats as a stop request. Example: mpifl mpirun -n 4 mpifl train -c fig2_mnist_softmax
    """
    from .launch import run_mpirun

    with _errors_as_one_line():
        code = run_mpirun(list(mpirun_args))
    sys.exit(code)


@main.command()
def info() -> None:
    """Versions, MPI library, CUDA-awareness and the device each rank would use."""
    from .info import describe

    click.echo(describe())


if __name__ == "__main__":  # pragma: no cover
    main()
