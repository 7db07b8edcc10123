#!/usr/bin/env bash
# Install what remsim's demo, tests and benchmarks need, when it is missing:
# Debian packages (as root), uv, and the uv workspace in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v pcscd >/dev/null || missing+=(pcscd)
ls /usr/lib/pcsc/drivers/serial/libifdvpcd.so* >/dev/null 2>&1 || missing+=(vsmartcard-vpcd)
dpkg -s libpcsclite-dev >/dev/null 2>&1 || missing+=(libpcsclite-dev)
command -v nats-server >/dev/null || missing+=(nats-server)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v swig >/dev/null || missing+=(swig)  # pyscard builds from source where no wheel fits
command -v gcc >/dev/null || missing+=(gcc)
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
        echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "bootstrap: missing Debian packages (run as root to install): ${missing[*]}" >&2
    fi
fi

if ! command -v uv >/dev/null; then
    echo "bootstrap: installing uv" >&2
    python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
    export PATH="$HOME/.local/bin:$PATH"
fi

# Some sandboxes intercept TLS: let uv use the system's certificate store.
export UV_NATIVE_TLS=1
uv sync --quiet
