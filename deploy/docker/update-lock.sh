#!/usr/bin/env bash
# Regenerate requirements.lock (the image's pinned, hash-checked dependencies) from pyproject.toml's ranges.
# Run it after changing [project] dependencies; tests/deploy/test_image.py fails while the lock is out of date.
set -euo pipefail
cd "$(dirname "$0")/../.."
TOOLS=${PIP_TOOLS_VENV:-.run/pip-tools}
if [[ ! -x $TOOLS/bin/pip-compile ]]; then
    python3 -m venv "$TOOLS"
    "$TOOLS/bin/pip" install -q 'pip-tools>=7.4,<8'
fi
# PIP_CONFIG_FILE=/dev/null: resolve against the public index only, never a machine-local mirror or constraint file,
# so every wheel of every platform gets its hash (the image may be built for amd64 or arm64).
# --all-build-deps + --allow-unsafe pin setuptools too: the image installs the project with --no-build-isolation.
PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="deploy/docker/update-lock.sh" \
    "$TOOLS/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --all-build-deps --strip-extras \
    --no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml
