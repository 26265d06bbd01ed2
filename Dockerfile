FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*
# Every command of the image runs as this unprivileged user (docker-compose.yml pins the
# same ids).
RUN groupadd --system --gid 10001 teamchat \
    && useradd --system --uid 10001 --gid teamchat --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin teamchat
WORKDIR /app
COPY pyproject.toml package.json package-lock.json ./
RUN pip install --no-cache-dir . && npm ci --no-audit --no-fund
COPY . .
# collectstatic loads the settings; a throwaway key keeps them from generating a
# SECRET_KEY into the image. var/ (VAR_DIR) is the one directory the app writes to.
RUN SECRET_KEY=collectstatic-only-never-used python manage.py collectstatic --noinput \
    && mkdir -p var/jobs && chown teamchat:teamchat var var/jobs && chmod 700 var/jobs
USER 10001:10001
EXPOSE 8000
# The web role, as compose's `web` runs it (after its one-shot `migrate`): WEB_PROCESSES
# uvicorn processes on port 8000, supervised by runstack, which refuses websocket frames
# over 1 MiB and believes X-Forwarded-For/-Proto only from TRUSTED_PROXIES (empty or
# unset: from no one, never uvicorn's 127.0.0.1 default).
CMD ["python", "manage.py", "runstack", "--only", "web", "--host", "0.0.0.0", "--port", "8000"]
