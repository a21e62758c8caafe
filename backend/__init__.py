"""anode-lab service: REST API, run store, job queue and workers.

The API process never imports torch or ``anode_lab.experiments``; only :mod:`backend.workers.process` does.
Nothing here connects, migrates or reads the environment at import: entry points build a
:class:`backend.settings.Settings` and pass it down.
"""
