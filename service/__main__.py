"""``python -m service`` is the ``copyloop`` command."""

from service.cli import app

app(prog_name="copyloop")
