"""``python -m ssr``: runs :func:`ssr.cli.main` (the commands and their options live there)."""

import sys

from ssr.cli import main

if __name__ == "__main__":
    sys.exit(main())
