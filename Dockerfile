# The pairshift image: one image for every role (`pairshift worker`, `pairshift api`, one-off `pairshift apply`,
# `pairshift migrate ...`); docker-compose.yml picks the role with `command:`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package needs: the build context's .venv, state and tests never reach the image.
COPY pyproject.toml README.md ./
COPY pairshift ./pairshift
COPY workflows ./workflows
COPY activities ./activities
COPY worker ./worker
RUN pip install . && rm -rf /src

# A fixed, unprivileged user: the container never runs as root. Its home holds PAIRSHIFT_HOME (reports, state),
# created here so that a named volume mounted on it starts out owned by this user.
RUN useradd --system --uid 10001 --create-home --home-dir /home/pairshift pairshift \
    && mkdir -p /home/pairshift/.pairshift \
    && chown -R pairshift:pairshift /home/pairshift
USER pairshift
WORKDIR /home/pairshift
ENV PAIRSHIFT_HOME=/home/pairshift/.pairshift

ENTRYPOINT ["pairshift"]
CMD ["--help"]
