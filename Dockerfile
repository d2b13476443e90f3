# One image for every role of compose.yaml: web (gunicorn), worker and beat (celery).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HITL_VAR_DIR=/var/lib/hitlgov
WORKDIR /app
COPY pyproject.toml README.md ./
COPY hitlgov hitlgov
COPY approvals approvals
COPY policies policies
COPY connectors connectors
COPY templates templates
COPY manage.py ./
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/hitlgov hitlgov \
    && mkdir -p /var/lib/hitlgov && chown hitlgov /var/lib/hitlgov
USER hitlgov
EXPOSE 8000
CMD ["gunicorn", "hitlgov.wsgi", "--bind", "0.0.0.0:8000"]
