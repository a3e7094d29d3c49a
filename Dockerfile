# The recstream application image: Java 17 for Spark, Python 3.11, the project, and
# Spark's Kafka connector jars resolved at build time so the image starts offline.
# One image serves every role (streaming job, producer, HTTP API, Spark master/worker);
# docker-compose.yml picks the command.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless maven procps \
 && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY producer producer
COPY streaming streaming
COPY serving serving
COPY recstream_base recstream_base
COPY recstream_infra recstream_infra
RUN pip install -c constraints.txt .

# Resolve the jars into /app/.cache/jars (the SparkSettings default, relative to /app),
# then drop Maven, its local repository and the local broker's jars (compose runs the
# official Kafka image): the image keeps Spark's Kafka connector only.
ENV RECSTREAM_SPARK_JAR_CACHE_DIR=/app/.cache/jars \
    RECSTREAM_LOCAL_CACHE_DIR=/app/.cache
RUN python -m recstream_infra.bootstrap \
 && rm -rf /app/.cache/m2 /root/.m2 /app/.cache/jars/kafka_2.13-* \
 && apt-get purge -y maven && apt-get autoremove -y
RUN useradd --create-home --uid 10001 recstream \
 && mkdir -p /data && chown -R recstream /data /app/.cache
USER recstream
CMD ["python", "-m", "streaming", "run"]
