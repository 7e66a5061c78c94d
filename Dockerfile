# aegrade service image. durable-rules ships only as an sdist: it is compiled here, hence
# build-essential in the build stage only.
FROM python:3.12-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY aegrade ./aegrade
COPY service ./service
RUN pip wheel --no-cache-dir --wheel-dir /wheels . "psycopg[binary]>=3.1"

FROM python:3.12-slim
RUN useradd --create-home --uid 10001 aegrade
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY rules ./rules
ENV AEGRADE_RULES_DIR=/app/rules \
    PYTHONUNBUFFERED=1
USER aegrade
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
CMD ["uvicorn", "service.app:app", "--host", "0.0.0.0", "--port", "8000"]
