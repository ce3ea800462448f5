# MarrowDiff: one image for `marrow web` and `marrow worker` (see docker-compose.yml), with
# pg_dump for `marrow backup` (postgresql-client) and fonts for the PDF report's Chinese,
# Japanese and Korean text (fonts-wqy-microhei) and its other scripts: Devanagari, Tamil, Bengali,
# Thai, ... (fonts-noto-core). On x86_64, PyPI's torch==2.14.1 is a CUDA build:
# the same image runs the worker on an NVIDIA GPU (MARROW_DEVICE=cuda, with the NVIDIA container
# toolkit on the host) or on the CPU.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MARROW_DATA_DIR=/data

RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 postgresql-client fonts-wqy-microhei fonts-noto-core \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin marrow \
    && mkdir -p /data \
    && chown marrow:marrow /data

WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml or
# constraints.txt changes; every package at the version the test suite passed with.
# The install is editable so that templates/, static/, migrations/ and models/ are found beside
# the code (/app), exactly as in a checkout.
COPY pyproject.toml constraints.txt ./
RUN mkdir -p app worker \
    && touch app/__init__.py worker/__init__.py \
    && pip install -c constraints.txt -e .

# The code, templates/, static/, migrations/ and models/ (.dockerignore leaves out the rest).
COPY . ./
RUN pip install --no-deps -e . \
    && marrow --help >/dev/null

USER marrow
VOLUME ["/data"]
EXPOSE 8000
# Migrations are applied by `marrow web` / `marrow worker` on start (under a PostgreSQL
# advisory lock, so starting both at once is safe).
CMD ["marrow", "web", "--host", "0.0.0.0", "--port", "8000"]
