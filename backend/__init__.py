"""anode-lab service: REST API, run store, job queue and workers.

The API process never imports torch or ``anode_core.experiments``; only :mod:`backend.worker` does.
Nothing here connects, migrates or reads the environment at import: entry points build a
:class:`backend.settings.Settings` and pass it down.
"""
