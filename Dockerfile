# One image for the Faust worker and the connectors (docker-compose.yml picks the command).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY clustertwin clustertwin
COPY clustertwin_base clustertwin_base
COPY twin twin
COPY streams streams
COPY connectors connectors
COPY dashboards dashboards
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 clustertwin \
 && mkdir -p /var/lib/clustertwin /var/lib/clustertwin-connector \
 && chown clustertwin /var/lib/clustertwin /var/lib/clustertwin-connector
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY connectors connectors
USER clustertwin
ENV PYTHONUNBUFFERED=1
CMD ["clustertwin", "--help"]
