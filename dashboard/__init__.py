"""The anode-lab dashboard: a Streamlit app that talks to the REST API over HTTP only.

Nothing here imports torch or :mod:`anode_core`; every number and name comes from ``/api/v1``.
``streamlit run dashboard/app.py`` serves it; ``anode-lab up`` starts it next to the API and the workers.
"""
