"""SQL of the health check."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session


def ping(session: Session) -> None:
    """One round trip to the store; raises if it cannot be read."""
    session.execute(text("SELECT 1"))
