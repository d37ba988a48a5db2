# promptblame: the HTTP API (`promptblame serve`, the default) or the scheduler
# (`promptblame worker`) in one image. Point it at ClickHouse with
# PROMPTBLAME_CLICKHOUSE_URL=http://user:password@host:8123; without it the embedded chDB
# store is used on PROMPTBLAME_DATA_DIR. docker-compose.yml runs the whole stack.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A regular (non-editable) install; the source tree is discarded afterwards.
COPY . /tmp/promptblame-src
RUN pip install /tmp/promptblame-src \
    && rm -rf /tmp/promptblame-src

RUN useradd --create-home --home-dir /home/promptblame --uid 10001 --user-group promptblame \
    && mkdir -p /var/lib/promptblame \
    && chown promptblame:promptblame /var/lib/promptblame

# Inside a container the API must listen on every interface to be reachable through a
# published port. API-key auth stays on: PROMPTBLAME_AUTH_DISABLED is refused off loopback.
ENV PROMPTBLAME_HOST=0.0.0.0 \
    PROMPTBLAME_PORT=8000 \
    PROMPTBLAME_DATA_DIR=/var/lib/promptblame/data

USER promptblame
WORKDIR /var/lib/promptblame
EXPOSE 8000

CMD ["promptblame", "serve"]
