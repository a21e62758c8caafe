# API and workers: `anode-lab api`, `anode-lab worker --device cpu|gpu`.
# TORCH_INDEX_URL picks torch's build: CPU-only by default; docker-compose.yml passes a CUDA index for worker-gpu
# (CUDA wheels bring their own CUDA runtime; the host needs only the NVIDIA driver and container toolkit).
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 ANODE_DATA_DIR=/data

WORKDIR /app
RUN pip install --index-url "$TORCH_INDEX_URL" "torch>=2.4,<=2.14.1" "torchvision>=0.19,<=0.29.1"
COPY pyproject.toml README.md ./
COPY anode_core anode_core
COPY anode_lab anode_lab
COPY backend backend
RUN pip install ".[redis,postgres]"

RUN useradd --create-home --uid 1000 anode && mkdir -p /data && chown anode:anode /data
USER anode
VOLUME ["/data"]
EXPOSE 8000
CMD ["anode-lab", "api"]
