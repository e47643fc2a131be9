# A neuralreg worker: the package and its dependencies (PyTorch with CUDA from PyPI).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md datajoint.json ./
COPY neuralreg_schema ./neuralreg_schema
COPY populate ./populate
RUN pip install --no-cache-dir .
ENV PYTHONUNBUFFERED=1 NEURALREG_HOME=/app
CMD ["python", "-m", "populate.worker", "--forever"]
