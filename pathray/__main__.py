"""``python -m pathray``: the same as the ``pathray`` command."""

from pathray.cli import main

main()
