# A neuralreg worker: PyTorch (CUDA build from PyPI), the package's dependencies, then the code.
#   GIT_COMMIT=$(git rev-parse --short=10 HEAD) docker compose build worker
# Layers, most stable first: the dependencies are read from pyproject.toml alone, so editing the code
# re-runs only the last, small layers (no torch re-install). The git commit comes in as a build
# argument (the image has no .git) and every row the worker computes records it as code_version.
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NEURALREG_HOME=/app \
    NEURALREG_DATA=/cache/datasets \
    TORCH_HOME=/cache/torch

# 1. dependencies only: torch, then pyproject.toml's dependencies with the s3 and postgres extras
WORKDIR /app
COPY pyproject.toml ./
RUN pip install "${TORCH_SPEC}" \
 && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; extra = p['optional-dependencies']; print('\n'.join(p['dependencies'] + extra['s3'] + extra['postgres']))" > requirements.deps \
 && pip install -r requirements.deps \
 && rm requirements.deps

# 2. an unprivileged user that owns the caches and the file store (named volumes copy this ownership)
RUN useradd --create-home --uid 10001 --user-group neuralreg \
 && mkdir -p /cache/datasets /cache/torch /store/main \
 && chown -R neuralreg:neuralreg /cache /store

# 3. the code (no dependency resolution left: --no-deps)
COPY setup.py README.md datajoint.json ./
COPY neuralreg_schema ./neuralreg_schema
COPY populate ./populate
RUN pip install --no-deps . && chown -R neuralreg:neuralreg /app

# 4. the commit, last: a new commit re-runs nothing above
ARG GIT_COMMIT=unknown
ENV NEURALREG_GIT_COMMIT=${GIT_COMMIT}
LABEL org.opencontainers.image.revision=${GIT_COMMIT}

USER neuralreg
VOLUME ["/cache", "/store"]
CMD ["python", "-m", "populate.worker", "--forever"]
