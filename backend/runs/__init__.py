"""The runs domain: routes → service → repository, plus the ``runs.execute`` task."""
