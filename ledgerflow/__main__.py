"""``python -m ledgerflow``: the same CLI as the ``ledgerflow`` command."""

from ledgerflow.app.cli import app

app(prog_name="ledgerflow")
