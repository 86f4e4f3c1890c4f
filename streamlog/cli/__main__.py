"""``python -m streamlog.cli``: the same as the ``streamlog`` console script."""

from streamlog.cli.app import main

main()
