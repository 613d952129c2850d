# The likeflow worker image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml constraints.txt README.md ./
COPY likeflow ./likeflow
COPY config ./config
COPY streams ./streams
COPY tables ./tables
COPY agents ./agents
RUN pip install --no-cache-dir -c constraints.txt .
# /data is writable by any uid (sticky, like /tmp): Compose runs the worker as the host user so
# that it can read the 0600 key secret (docker-compose.yml).
RUN useradd --create-home --uid 1000 likeflow && mkdir -p /data && chmod 1777 /data
USER likeflow
ENV LIKEFLOW_DATA_DIR=/data/worker-data
EXPOSE 6066
HEALTHCHECK --interval=10s --timeout=3s --retries=6 --start-period=120s \
  CMD python -c "import urllib.request,os;urllib.request.urlopen('http://127.0.0.1:'+os.environ.get('LIKEFLOW_WEB_PORT','6066')+'/ready',timeout=2)"
ENTRYPOINT ["likeflow"]
CMD ["worker", "--quiet"]
