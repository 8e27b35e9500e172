#!/usr/bin/env bash
# Print the interpreter `make venv` builds the venv from: $POSTROOM_PYTHON when set, else the distribution's
# Python 3.11 (/usr/bin/python3.11) when there is one, else python3.
#
# Debian's python3.11 is built with profile-guided and link-time optimisation and its interpreter links libpython
# statically; a Python built from source with the defaults (pyenv's, for one) has neither. On the same code the
# services spent 13-21% less CPU per message on Debian's (docs/performance.md, "The interpreter"), so it comes
# first, as the Docker image's python:3.11-slim (also built with both) does in production.
set -euo pipefail

for candidate in "${POSTROOM_PYTHON:-}" /usr/bin/python3.11 python3; do
    [[ -n $candidate ]] || continue
    if path=$(command -v "$candidate") && "$path" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        "$path" -c 'import os, sys; print(os.path.realpath(sys.executable))'
        exit 0
    fi
    [[ $candidate != "${POSTROOM_PYTHON:-}" ]] || { echo "pick-python: POSTROOM_PYTHON=$candidate is not Python 3.11 or newer" >&2; exit 1; }
done
echo "pick-python: no Python 3.11 or newer found (python3)" >&2
exit 1
