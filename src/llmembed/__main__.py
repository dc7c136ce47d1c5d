"""``python -m llmembed``: the same command line as ``llmembed``."""

from .cli import app

app(prog_name="llmembed")
