# syntax=docker/dockerfile:1
# One image for every Postroom service; the command picks the service:
#   python -m services.smtp_ingress | services.delivery | services.pop3 | services.store, or `postroom ...`.
# For a byte-for-byte reproducible base, build with --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/postroom
# Dependencies first (their layer survives code changes): exact versions, every file checked against its sha256
# (requirements.lock, made by deploy/docker/update-lock.sh), wheels only so no compiler is needed or trusted, except
# the pure-Python dkimpy and pyspf, published as source only: built with the venv's own setuptools, no download.
COPY requirements.lock /tmp/requirements.lock
RUN /opt/postroom/bin/pip install --require-hashes --only-binary=:all: --no-binary=dkimpy,pyspf \
        --no-build-isolation --no-deps -r /tmp/requirements.lock
COPY pyproject.toml README.md /src/
COPY shared /src/shared
COPY services /src/services
# --no-build-isolation --no-index: build with the locked setuptools already installed; download nothing unpinned.
RUN /opt/postroom/bin/pip install --no-deps --no-build-isolation --no-index /src \
 && /opt/postroom/bin/python -m compileall -q /opt/postroom/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="postroom" \
      org.opencontainers.image.description="Postroom mail system: SMTP ingress, delivery, POP3 and store services"
RUN groupadd --system --gid 10001 postroom \
 && useradd --system --uid 10001 --gid postroom --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin postroom \
 && install -d -o 10001 -g 10001 -m 0700 /var/spool/postroom
COPY --from=build /opt/postroom /opt/postroom
COPY deploy/docker/healthcheck.py /usr/local/lib/postroom/healthcheck.py
# Mail ports: the services listen on unprivileged ports inside the container and the runtime maps the standard
# ones onto them (compose: "25:2525"; Kubernetes Service: port 25 -> targetPort 2525). We chose this over
# `setcap cap_net_bind_service` on the interpreter because a file capability on python would hand that privilege
# to every Python program in the image, and it cannot work at all where the runtime drops ALL capabilities or
# sets no_new_privileges (our Kubernetes securityContext does both).
ENV PATH=/opt/postroom/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    POSTROOM_LOG_FORMAT=json \
    POSTROOM_SMTP_LISTEN=0.0.0.0:2525 \
    POSTROOM_SUBMISSION_LISTEN=0.0.0.0:2587 \
    POSTROOM_SMTPS_LISTEN=0.0.0.0:2465 \
    POSTROOM_POP3_LISTEN=0.0.0.0:2110 \
    POSTROOM_POP3S_LISTEN=0.0.0.0:2995 \
    POSTROOM_ADMIN_LISTEN=0.0.0.0:8080
EXPOSE 2525 2587 2465 2110 2995 8080 9101 9102 9103 9104
USER 10001:10001
# `python -m` puts the working directory first on sys.path: keep it root-owned, never a writable one like /tmp.
WORKDIR /opt/postroom
# Asks the running service's /healthz (port from POSTROOM_METRICS_LISTEN, else the service's default 9101-9104).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/postroom/healthcheck.py"]
CMD ["postroom", "--help"]
