# One image, two commands (the worker is the default):
#   docker build -t onecallflow-demo .
#   docker run --env-file .env onecallflow-demo                        # python -m agent start
#   docker run --env-file .env -p 8000:8000 onecallflow-demo python token_server.py
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG NODE_IMAGE=node:20.18.1-bookworm-slim

# --- the demo page's bundle (web/dist), built with the pinned package-lock -------------
FROM ${NODE_IMAGE} AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

# --- the Python dependencies pinned in pyproject.toml (not the dev ones) ---------------
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml ./
RUN python -m venv /opt/venv \
    && python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('requirements.txt', 'w').write('\n'.join(deps))" \
    && pip install --no-cache-dir -r requirements.txt

# --- runtime ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
# The image is for deployment: production mode refuses to start on missing or weak secrets
# and without PUBLIC_ORIGIN (give them at run time: --env-file). Inside a container loopback
# is private to it, so both servers listen on all of its interfaces: the token server
# (HOST) and the worker's health server (AGENT_HEALTH_HOST), for probes from outside.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENVIRONMENT=production \
    HOST=0.0.0.0 \
    AGENT_HEALTH_HOST=0.0.0.0
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin app
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
# The source tree (.dockerignore keeps tests, caches and secrets out), then the bundle.
COPY . .
COPY --from=web /web/dist web/dist
# Model files the plugins need (Silero VAD) are fetched at build time, never at run time.
RUN python -m agent download-files
USER 10001:10001
# 8000: token server and demo page; 8081: worker health (AGENT_HEALTH_PORT).
EXPOSE 8000 8081
CMD ["python", "-m", "agent", "start"]
