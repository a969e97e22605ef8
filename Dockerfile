# Demo app for the payoff compose stack: runs `payoff demo --loop`, serving
# Prometheus metrics on :9464 and exporting spans to the OTel collector.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package build needs (README*/LICENSE* are optional, for the metadata).
COPY pyproject.toml README* LICENSE* ./
COPY src ./src
RUN pip install ".[demo,dask]" \
    && useradd --create-home --uid 10001 payoff

USER payoff
WORKDIR /home/payoff

ENV OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318 \
    OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \
    OTEL_SERVICE_NAME=payoff-demo \
    OTEL_METRICS_EXPORTER=none

EXPOSE 9464
CMD ["payoff", "demo", "--loop", "--metrics-port", "9464", "--metrics-addr", "0.0.0.0"]
