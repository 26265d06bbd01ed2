FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml package.json package-lock.json ./
RUN pip install --no-cache-dir . && npm ci --no-audit --no-fund
COPY . .
RUN python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["python", "-m", "uvicorn", "chatsite.asgi:application", "--host", "0.0.0.0", "--port", "8000"]
