"""The ``pathray`` command: the same operations locally (embedded Ray) or on a cluster.

One module per command group (``slides``/``sets``/``annotations``/``run``/``runs``/``compare``
and the app itself in :mod:`~pathray.cli.main`; :mod:`~pathray.cli.models`,
:mod:`~pathray.cli.pipelines`, :mod:`~pathray.cli.iterate`, :mod:`~pathray.cli.search`,
:mod:`~pathray.cli.auth`, :mod:`~pathray.cli.serve`, :mod:`~pathray.cli.ui`), and one shared
module (:mod:`~pathray.cli.common`: consoles, errors, catalog access). User mistakes print one
clear line and exit with status 2; only bugs show a traceback.
"""

from pathray.cli.main import app, main

__all__ = ["app", "main"]
