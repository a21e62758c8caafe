"""Who may use the dashboard, and how stored text reaches it. The escaping helpers of ``dashboard/text.py`` on a
hostile corpus (pure); the Host names the dashboard answers; and, against a real keyed API process
(``anode-lab api`` with ``ANODE_API_KEYS``), the sign-in: the dashboard holds no key, shows only the sign-in form
until a person gives theirs, refuses a wrong one, and forgets it on sign-out. The browser replays are in
``tests/test_dashboard_hostile_text.py``."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import markdown_it
import pytest
import streamlit as st
from service_helpers import Service
from streamlit.testing.v1 import AppTest

from dashboard import access, charts, tables
from dashboard.charts import Curve
from dashboard.text import csv_cell, md, plotly_text

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
KEYS = ("ada-key-3f9c", "bob-key-81d0")
HOSTILE = [
    '<iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>',
    '<meta http-equiv="refresh" content="0;url=http://evil.example/">',
    "![x](http://evil.example/x.png)",
    "<style>*{background:url(http://evil.example/b.png)}</style>",
    '<audio src="http://evil.example/a.mp3" autoplay>',
    "[link](javascript:alert(1))",
    "<http://evil.example/autolink>",
    "# heading\n- list\n    code",
    "**bold** _it_ `code` ~~s~~ | table |",
    "&lt;script&gt; &#60;b&#62;",
    "1. ordered",
    r"back\slash \*",
]


# ------------------------------------------------------------------------------------------------ escaping
@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_escaping_leaves_only_the_text(text: str) -> None:
    """CommonMark (markdown-it, what Streamlit's renderer follows) renders the escaped text as one paragraph of
    exactly the original characters (line breaks as spaces): no tag, link, image, heading, list or code."""
    rendered = markdown_it.MarkdownIt("commonmark").enable("strikethrough").enable("table").render(md(text))
    inner = re.fullmatch(r"<p>(.*)</p>\n", rendered, re.DOTALL)
    assert inner, rendered
    assert html.unescape(inner.group(1)) == " ".join(text.splitlines())


def test_no_dashboard_module_renders_html() -> None:
    """Stored text never goes through ``unsafe_allow_html``: no module of the dashboard uses it at all."""
    sources = {path.name: path.read_text() for path in (APP.parent).rglob("*.py")}
    assert len(sources) > 10
    assert [name for name, text in sources.items() if "unsafe_allow_html" in text] == []


def test_plotly_text_draws_tags_as_text() -> None:
    assert plotly_text('<a href="http://evil.example/">x</a> & <br>') == \
        '&lt;a href="http://evil.example/"&gt;x&lt;/a&gt; &amp; &lt;br&gt;'
    figure = charts.curves_figure([Curve("<b>run</b>", [1, 2, 3], [1.0, 0.5, 0.2])], title="<i>t</i>",
                                  x_title="x<br>", y_title="y", smoothing=0.5)
    assert {trace.name for trace in figure.data} == {"&lt;b&gt;run&lt;/b&gt;", "&lt;b&gt;run&lt;/b&gt; (raw)"}
    assert figure.layout.title.text == "&lt;i&gt;t&lt;/i&gt;" and figure.layout.xaxis.title.text == "x&lt;br&gt;"


@pytest.mark.parametrize(("cell", "safe"), [
    ('=HYPERLINK("http://evil.example/","x")', '\'=HYPERLINK("http://evil.example/","x")'),
    ("+1+2", "'+1+2"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\t=1", "'\t=1"), ("\r=1", "'\r=1"),
    ("moons", "moons"), ("a=b", "a=b"), (-1.5, -1.5), (None, None),
])
def test_formula_cells_are_neutralised(cell: object, safe: object) -> None:
    assert csv_cell(cell) == safe


def test_the_runs_and_compare_tables_neutralise_formulas() -> None:
    run = {"id": 7, "name": '=HYPERLINK("http://evil.example/","x")', "kind": "train", "status": "succeeded",
           "spec": {"ode": {"gradient": {"method": "anode"}}, "root": "=cmd|' /C calc'!A0"},
           "created_at": "2026-01-01T00:00:00+00:00"}
    assert tables.run_row(run)["name"].startswith("'=HYPERLINK")
    other = {**run, "id": 8, "spec": {**run["spec"], "root": "data"}}
    rows = tables.summary_rows([run, other])
    assert rows[0]["root"] == "'=cmd|' /C calc'!A0" and rows[1]["root"] == "data"


# ---------------------------------------------------------------------------------------------------- Host
@pytest.mark.parametrize(("host", "allowed"), [
    ("127.0.0.1:8501", True), ("localhost:8501", True), ("LOCALHOST", True), ("[::1]:8501", True),
    ("evil.example:8501", False), ("127.0.0.1.evil.example", False), ("attacker.localhost:8501", False),
    ("localhost:notaport", False), ("user@localhost", False), ("localhost/path", False), ("", False), (None, False),
])
def test_the_dashboard_answers_only_its_host_names(host: str | None, allowed: bool) -> None:
    assert access.host_allowed(host, ("localhost", "127.0.0.1", "[::1]")) is allowed


def test_host_patterns() -> None:
    assert access.host_allowed("node2.lab.example:8501", ["*.lab.example"])
    assert not access.host_allowed("lab.example.evil.example", ["*.lab.example"])
    assert access.host_allowed("anything.example", ["*"])


# ------------------------------------------------------------------------------------------------- sign-in
@pytest.fixture(scope="module")
def keyed_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = Service(tmp_path_factory.mktemp("keyed-dashboard"), {"ANODE_API_KEYS": ",".join(KEYS)})
    service.start_api(headers={"X-API-Key": KEYS[0]})
    try:
        yield service
    finally:
        service.stop()


def text_of(at: AppTest) -> str:
    kinds = ("title", "caption", "error", "warning", "markdown")
    return " ".join(str(element.value) for kind in kinds for element in getattr(at, kind))


def test_with_keys_a_person_signs_in_with_their_own_key(keyed_api: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANODE_API_URL", keyed_api.url)
    monkeypatch.setenv("ANODE_API_KEYS", ",".join(KEYS))  # what the old dashboard used: ignored now
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.switch_page("app_pages/runs.py").run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Sign in"]  # the form instead of the page: nothing of the runs
    at.text_input(key="access.offered").input("not-a-key")
    at.button[0].click().run()
    assert "does not accept this key" in text_of(at) and [t.value for t in at.title] == ["Sign in"]
    at.text_input(key="access.offered").input(KEYS[1])
    at.button[0].click().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Runs"]
    assert at.session_state[access.SESSION_KEY] == KEYS[1]
    at.switch_page("app_pages/demos.py").run()  # the key travels with the session, page to page
    assert [t.value for t in at.title] == ["Teaching demos"]
    at.button(key="access.sign_out").click().run()
    assert [t.value for t in at.title] == ["Sign in"] and access.SESSION_KEY not in at.session_state
