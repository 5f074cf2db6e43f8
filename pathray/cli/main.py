"""The ``pathray`` command: the same operations locally (embedded Ray) or on a cluster.

User mistakes (a missing file, an unknown set, a protected set, an invalid spec) print one clear
line and exit with status 2; only bugs show a traceback.

Ctrl-C (SIGINT) and SIGTERM stop a command cleanly: a run is recorded as cancelled (resumable),
Ray is shut down before the interpreter finalises, and the command says what stopped it and
exits with 130 (SIGINT) or 143 (SIGTERM), the shell's 128 + signal number. The servers
(``pathray serve``, ``pathray ui``) treat either signal as their normal end: they stop and exit 0.
"""

from __future__ import annotations

import signal
import sys
from typing import Annotated, Any

import typer

from pathray.cli.auth import tokens_app, users_app
from pathray.cli.common import ME, console, err, friendly, open_catalog, open_store
from pathray.cli.data import ann_app, sets_app, slides_app
from pathray.cli.iterate import register as register_iterate
from pathray.cli.models import models_app
from pathray.cli.pipelines import pipelines_app, units_app
from pathray.cli.runs import compare, run, runs_app
from pathray.cli.search import search_app
from pathray.cli.serve import serve_command
from pathray.cli.ui import ui as ui_command
from pathray.config import Settings

app = typer.Typer(
    help="PathRay: digital-pathology model management on Ray.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(slides_app, name="slides")
app.add_typer(sets_app, name="sets")
app.add_typer(ann_app, name="annotations")
app.command()(run)
app.add_typer(runs_app, name="runs")
app.command()(compare)
app.add_typer(models_app, name="models")
app.add_typer(units_app, name="units")
app.add_typer(pipelines_app, name="pipelines")
register_iterate(app)
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
app.add_typer(search_app, name="search")
app.command("ui")(ui_command)
app.command("serve")(serve_command)


@app.command()
@friendly
def init() -> None:
    """Create PATHRAY_HOME with an empty catalog and cold store; you become its first admin."""
    settings = Settings.from_env()
    open_store().location.makedirs()
    catalog = open_catalog()
    if not catalog.list_users():
        catalog.add_user(ME, role="admin")
        console.print(f"admin: {ME}")
    console.print(f"catalog: {settings.catalog_url}\ncold store: {settings.cold_root}")


@app.command()
@friendly
def demo(
    quick: Annotated[bool, typer.Option(help="Smaller synthetic slides.")] = False,
) -> None:
    """Make sample data, register it, run the nuclei pipeline, compare, print the metrics."""
    from pipelines.demo import run_demo

    run_demo(open_catalog(), open_store(), Settings.from_env(), console=console, quick=quick)


#: The signal that stopped the command, once one arrived; "stopping" once the command ended.
_STOP: dict[str, int | bool] = {}


def _interrupt(signum: int, frame: Any) -> None:
    """Raise KeyboardInterrupt in the main thread for the first SIGINT or SIGTERM.

    SIGTERM's default action kills the process at once, skipping Ray's shutdown (and, with
    Ray's fatal-signal handler, it used to abort with a native stack). As a KeyboardInterrupt
    it unwinds like Ctrl-C: a run records itself as cancelled, then :func:`main` stops Ray.
    Later signals are ignored while the command unwinds and Ray stops, so the cleanup is not
    cut short by a second Ctrl-C.
    """
    if "signal" in _STOP or _STOP.get("stopping"):
        return
    _STOP["signal"] = signum
    raise KeyboardInterrupt


def _stop_ray() -> None:
    """Shut Ray down now, while the interpreter and every native library are whole."""
    cluster = sys.modules.get("pathray.engine.cluster")  # loaded only if a command used Ray
    if cluster is None:
        return
    try:
        cluster.shutdown()
    except Exception as exc:  # the command's own outcome matters more; say it and go on
        err.print(f"[yellow]warning:[/yellow] Ray did not shut down cleanly: {exc}")


def main() -> None:
    """Entry point of the ``pathray`` console script (see the module docstring for signals)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    code: Any = 0
    try:
        app()  # standalone mode: always ends in SystemExit (KeyboardInterrupt -> 130)
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:  # outside typer's handling (e.g. while the CLI imports)
        code = 130
    finally:
        _STOP["stopping"] = True
        _stop_ray()
    stopped_by = int(_STOP.get("signal", 0))
    if stopped_by and code not in (0, None):  # a server that stopped on it returned 0
        name = signal.Signals(stopped_by).name
        err.print(f"stopped by {name}" + (" (Ctrl-C)" if stopped_by == signal.SIGINT else ""))
        code = 128 + stopped_by
    sys.exit(code)
