"""`python -m cli …` is `vitte …`."""

from cli.main import run

run()
