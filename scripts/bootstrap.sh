#!/usr/bin/env bash
# Install what remsim's demo, tests and benchmarks need, when it is missing:
# Debian packages (as root), uv, and the uv workspace in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

has_python_headers() {
    python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
}

missing=()
command -v pcscd >/dev/null || missing+=(pcscd)
ls /usr/lib/pcsc/drivers/serial/libifdvpcd.so* >/dev/null 2>&1 || missing+=(vsmartcard-vpcd)
dpkg -s libpcsclite-dev >/dev/null 2>&1 || missing+=(libpcsclite-dev)
command -v nats-server >/dev/null || missing+=(nats-server)
command -v redis-server >/dev/null || missing+=(redis-server)
# pyscard builds from source: a C compiler, swig and the Python headers
command -v swig >/dev/null || missing+=(swig)
command -v gcc >/dev/null || missing+=(gcc)
has_python_headers || missing+=(python3-dev)
command -v unshare >/dev/null || missing+=(util-linux)  # a private pcscd per test session
# the dashboard's browser tests: Playwright drives Debian's chromium (never `playwright install`)
command -v chromium >/dev/null || missing+=(chromium)
python3 -m pip --version >/dev/null 2>&1 || command -v uv >/dev/null || missing+=(python3-pip)
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
        echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # progress shown: chromium alone is some 100 MB to fetch
        apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    else
        echo "bootstrap: missing Debian packages (run as root to install): ${missing[*]}" >&2
    fi
fi

export PATH="$HOME/.local/bin:$PATH"
if ! command -v uv >/dev/null; then
    echo "bootstrap: installing uv from PyPI" >&2
    # Debian's own Python refuses user installs unless told (PEP 668); a pyenv Python does not.
    python3 -m pip install --quiet --user uv 2>/dev/null \
        || python3 -m pip install --quiet --user --break-system-packages uv
fi

# Some sandboxes intercept TLS: let uv use the system's certificate store.
export UV_NATIVE_TLS=1
uv sync --quiet ${UV_SYNC_ARGS:-}
