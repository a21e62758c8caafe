"""anode-lab dashboard: ``streamlit run dashboard/app.py``. This file only declares the pages."""

import importlib.util
import sys
from pathlib import Path

import streamlit as st

if importlib.util.find_spec("dashboard") is None:  # Streamlit puts this file's folder on sys.path, not its parent
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboard import access  # noqa: E402  (after the path fix above)

# The icon ships with the app: a ":material/…:" page icon is fetched from a font host, and fails offline.
st.set_page_config(page_title="anode-lab", page_icon=str(Path(__file__).with_name("icon.png")), layout="wide")

access.refuse_foreign_host()  # a DNS-rebinding page sees no page, not even the navigation
navigation = st.navigation({
    "Experiments": [
        st.Page("app_pages/launch.py", title="Launch", icon=":material/rocket_launch:", default=True),
        st.Page("app_pages/runs.py", title="Runs", icon=":material/table_rows:", url_path="runs"),
        st.Page("app_pages/run_detail.py", title="Run detail", icon=":material/monitoring:", url_path="run"),
        st.Page("app_pages/compare.py", title="Compare runs", icon=":material/compare_arrows:", url_path="compare"),
    ],
    "Gradients": [
        st.Page("app_pages/gradient_lab.py", title="Gradient lab", icon=":material/science:", url_path="gradient-lab"),
        st.Page("app_pages/demos.py", title="Teaching demos", icon=":material/school:", url_path="demos"),
    ],
})
navigation.run()
