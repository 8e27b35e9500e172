#!/usr/bin/env bash
# Build argon2-cffi's C library (argon2-cffi-bindings) for this host's CPU when it has AVX2.
#
# PyPI's wheel is built for SSE2 only; built here with -march=native it checks a password in about three quarters
# of libsodium's CPU, and the services' `auto` argon2 checker then takes it (services/store/argon2_checkers.py).
# The build is for this machine: a venv copied to a CPU without AVX2 would die of SIGILL at the first check, so
# the Docker image keeps the wheel. POSTROOM_NATIVE_ARGON2=0 skips it. When the build fails (no C compiler or
# Python headers) the wheel stays and the checker falls back to whichever library measures cheaper.
set -euo pipefail

bin=${1:?usage: native-argon2.sh VENV_BIN}
log() { printf 'native-argon2: %s\n' "$*" >&2; }

[[ ${POSTROOM_NATIVE_ARGON2:-1} == 1 ]] || { log "skipped (POSTROOM_NATIVE_ARGON2=${POSTROOM_NATIVE_ARGON2})"; exit 0; }
grep -qw avx2 /proc/cpuinfo 2>/dev/null || { log "no AVX2 on this CPU: PyPI's wheel stays"; exit 0; }
version=$("$bin/python" -c 'import importlib.metadata as m; print(m.version("argon2-cffi-bindings"))')
# The pip wheel cache keys a local build by version, not by CFLAGS: --no-cache-dir so a build for another CPU
# (a shared cache) is never reused.
if CFLAGS="-O3 -march=native" "$bin/pip" install -q --no-cache-dir --force-reinstall --no-deps \
    --no-binary argon2-cffi-bindings "argon2-cffi-bindings==$version"; then
    log "argon2-cffi-bindings $version built for this CPU"
else
    log "building argon2-cffi-bindings $version failed: PyPI's wheel stays"
fi
