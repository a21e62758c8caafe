# The dashboard: Streamlit talking HTTP to the API. No torch, no anode_core, no backend: only dashboard/ and
# the packages of docker/requirements-dashboard.txt (`pip install --no-deps .` skips the project's torch).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY docker/requirements-dashboard.txt docker/
RUN pip install -r docker/requirements-dashboard.txt
COPY pyproject.toml README.md ./
COPY dashboard dashboard
RUN pip install --no-deps . && ! python -c "import torch" 2>/dev/null

RUN useradd --create-home --uid 1000 anode
USER anode
EXPOSE 8501
CMD ["streamlit", "run", "dashboard/app.py", "--server.address", "0.0.0.0", "--server.port", "8501", \
     "--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"]
