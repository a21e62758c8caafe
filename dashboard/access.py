"""Who may use the dashboard: only under the operator's Host names, and, when the API has keys, only a person
who signs in with their own key.

A page of another site whose name is made to resolve to this machine (DNS rebinding) reaches the dashboard
under that name: it is refused before any page runs (Streamlit's ``server.allowedHosts``, which ``anode-lab up``
sets, refuses its websocket too). The dashboard holds no API key: with ``ANODE_API_KEYS`` set on the API, a
person signs in with one, kept in their own Streamlit session (server side, for this browser tab) and sent by
:meth:`dashboard.api_client.ApiClient.with_key`; without keys the API serves only loopback, and so does the
dashboard.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import NoReturn
from urllib.parse import urlsplit

import streamlit as st

from dashboard.api_client import ApiClient, ApiError, ApiUnreachable, ClientSettings
from dashboard.text import md

SESSION_KEY = "access.api_key"
"""Where a signed-in person's API key lives: their Streamlit session, never a file, a URL or a cache."""


def host_name(host_header: str | None) -> str | None:
    """The name in a ``Host`` header, lower-case, without port or IPv6 brackets; None when it is not one."""
    if not host_header:
        return None
    try:
        parts = urlsplit(f"//{host_header}")
        _ = parts.port  # a port that is not a number is no Host
    except ValueError:
        return None
    if parts.hostname is None or parts.username is not None or parts.password is not None or parts.path:
        return None
    return parts.hostname.rstrip(".")


def host_allowed(host_header: str | None, allowed: Sequence[str]) -> bool:
    """``host_header`` names one of ``allowed`` (exact names, ``*.suffix`` patterns, or ``*`` for any)."""
    name = host_name(host_header)
    if name is None:
        return False
    for pattern in (p.strip().lower().strip("[]").rstrip(".") for p in allowed):
        if pattern == "*" or name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


def refuse_foreign_host(settings: ClientSettings | None = None) -> None:
    """Stop the page, saying why, when the browser reached this dashboard under a name it does not serve."""
    allowed = (settings or ClientSettings()).hosts
    host = st.context.headers.get("Host")
    if host is not None and not host_allowed(host, allowed):  # no Host: no browser (AppTest, a bare script run)
        st.error(md(f"This dashboard does not answer to the name {host}: open it under one of "
                    f"{', '.join(allowed)}, or add the name to ANODE_ALLOWED_HOSTS where it is started."),
                 icon=":material/block:")
        st.stop()


def session_key() -> str | None:
    key = st.session_state.get(SESSION_KEY)
    return key if isinstance(key, str) and key else None


def sign_in(api: ApiClient) -> NoReturn:
    """The sign-in form, shown instead of any page while the API wants a key this session does not hold."""
    st.title("Sign in")
    if session_key() is not None:  # a key that worked before (the operator removed it)
        st.session_state.pop(SESSION_KEY, None)
        st.warning("The API no longer accepts the key this session held; sign in again.", icon=":material/key_off:")
    st.caption("This anode-lab API asks for an API key (ANODE_API_KEYS). Enter yours: it is kept in this browser "
               "tab's session on the dashboard's server until you sign out or close the tab, and sent only to the "
               "API.")
    with st.form("access.sign_in"):
        offered = st.text_input("API key", type="password", key="access.offered")
        submitted = st.form_submit_button("Sign in", type="primary", icon=":material/login:")
    if submitted:
        try:
            api.with_key(offered.strip()).health()
        except ApiUnreachable as exc:
            st.error(md(f"The API at {exc.url} did not answer ({exc.reason}); try again."), icon=":material/cloud_off:")
        except ApiError as exc:
            refused = "The API does not accept this key." if exc.status == 401 else f"The API answered: {exc}"
            st.error(md(refused), icon=":material/error:")
        else:
            st.session_state[SESSION_KEY] = offered.strip()
            st.rerun()
    st.stop()


def sign_out_button() -> None:
    """In the sidebar of a signed-in session: forget the key."""
    if session_key() is not None and st.button("Sign out", key="access.sign_out", icon=":material/logout:"):
        st.session_state.pop(SESSION_KEY, None)
        st.rerun()


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_remote_viewer() -> None:
    """Without API keys the API serves only loopback; the dashboard in front of it serves only loopback too."""
    address = st.context.ip_address  # None for 127.0.0.1 and ::1 (and where no connection is behind the run)
    if isinstance(address, str) and address and not _loopback(address):
        st.error("This dashboard's API has no API keys, so the dashboard serves only this machine: open it here, "
                 "or set ANODE_API_KEYS on the API and sign in with a key.", icon=":material/block:")
        st.stop()
