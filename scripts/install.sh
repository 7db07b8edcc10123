#!/usr/bin/env bash
# make install: every shipped remsim program in its own virtual environment, with the systemd
# units, their default files, the udev rule and the documentation where the units point.
#
#   $PREFIX/lib/remsim/          the virtual environment (relocatable): the wheels of dist/
#                                (make dist) and their dependencies, pinned as in uv.lock
#   $PREFIX/bin/remsim-*, rspro  links to its console scripts
#   $UNITDIR/                    remsim-server.service, remsim-bankd.service,
#                                remsim-client-st2@.service (ExecStart= in $PREFIX/bin)
#   /etc/default/remsim-*        the default files (an existing one is kept)
#   /etc/remsim/                 the bankd's working directory (its slot file goes there)
#   /etc/udev/rules.d/           60-remsim-simtrace2.rules (the st2 client's USB boards)
#   $PREFIX/share/doc/remsim/    README.md, CHANGELOG.md, docs/*.md (the units' Documentation=)
#
# Everything lands under $DESTDIR (default: /), to be packaged or copied from there. The
# dependencies come from PyPI or uv's cache (UV_OFFLINE=1: the cache only). $PYTHON is the
# interpreter of the environment (Python >= 3.11, outside /home and /root: the units run with
# ProtectHome=yes).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.local/bin:$PATH"

PREFIX="${PREFIX:-/usr/local}"
DESTDIR="${DESTDIR:-}"
BINDIR="${BINDIR:-$PREFIX/bin}"
LIBDIR="${LIBDIR:-$PREFIX/lib/remsim}"
DOCDIR="${DOCDIR:-$PREFIX/share/doc/remsim}"
case "$PREFIX" in
    /usr | /usr/local) default_unitdir="$PREFIX/lib/systemd/system" ;;
    *) default_unitdir=/etc/systemd/system ;;  # systemd looks only in /usr and /usr/local
esac
UNITDIR="${UNITDIR:-$default_unitdir}"
SYSCONFDIR=/etc  # fixed: the units read /etc/default and /etc/remsim
DIST="${DIST:-dist}"
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
        && PYTHON=/usr/bin/python3
fi

if ! command -v "$PYTHON" >/dev/null; then
    echo "install: no interpreter $PYTHON (set PYTHON=)" >&2
    exit 1
fi
case "$(realpath "$(command -v "$PYTHON")")" in
    /home/* | /root/* | /run/user/*)
        echo "install: warning: $PYTHON is under a home directory, which the units cannot" \
            "reach (ProtectHome=yes); set PYTHON=/usr/bin/python3.11 or similar" >&2 ;;
esac

shopt -s nullglob
wheels=("$DIST"/*.whl)
if ((${#wheels[@]} == 0)); then
    echo "install: no wheels in $DIST/: run make dist first" >&2
    exit 1
fi
# The shipped members: every wheel but the test support (remsim-testing, dev only).
members=()
for wheel in "${wheels[@]}"; do
    name="$(basename "$wheel")"
    name="${name%%-*}"
    [ "$name" = remsim_testing ] || members+=("${name//_/-}")
done

venv="$DESTDIR$LIBDIR"
echo "install: ${members[*]} into $venv" >&2
if [ -e "$venv" ] && [ ! -e "$venv/pyvenv.cfg" ]; then
    echo "install: $venv exists and is no virtual environment: not replacing it" >&2
    exit 1
fi
rm -rf "$venv"
uv venv --quiet --relocatable --python "$PYTHON" "$venv"
lock="$(mktemp -d)"
trap 'rm -rf "$lock"' EXIT
uv export --quiet --frozen --no-dev --no-emit-workspace --format pylock.toml \
    "${members[@]/#/--package=}" -o "$lock/pylock.toml"
uv pip install --quiet --python "$venv/bin/python" --link-mode copy --compile-bytecode \
    -r "$lock/pylock.toml"
# The members from dist/ only: a dependency the lock did not bring is an error here.
uv pip install --quiet --python "$venv/bin/python" --link-mode copy --compile-bytecode \
    --no-index --find-links "$DIST" "${members[@]}"

install -d "$DESTDIR$BINDIR"
scripts="$("$venv/bin/python" - "${members[@]}" <<'EOF'
import sys
from importlib.metadata import distribution

for member in sys.argv[1:]:
    for entry in distribution(member).entry_points.select(group="console_scripts"):
        print(entry.name)
EOF
)"
for script in $scripts; do
    ln -sfr "$venv/bin/$script" "$DESTDIR$BINDIR/$script"
done

install -d "$DESTDIR$UNITDIR"
for unit in deploy/systemd/*.service; do
    sed -e "s|/usr/local/bin/|$BINDIR/|g" \
        -e "s|file:///usr/local/share/doc/remsim/|file://$DOCDIR/|g" "$unit" \
        >"$DESTDIR$UNITDIR/$(basename "$unit")"
    chmod 644 "$DESTDIR$UNITDIR/$(basename "$unit")"
done

install -d "$DESTDIR$SYSCONFDIR/default" "$DESTDIR$SYSCONFDIR/remsim"
for default in deploy/systemd/*.default; do
    target="$DESTDIR$SYSCONFDIR/default/$(basename "$default" .default)"
    [ -e "$target" ] || install -m 644 "$default" "$target"
done
install -D -m 644 deploy/systemd/60-remsim-simtrace2.rules \
    "$DESTDIR$SYSCONFDIR/udev/rules.d/60-remsim-simtrace2.rules"

install -d "$DESTDIR$DOCDIR"
install -m 644 README.md CHANGELOG.md docs/*.md "$DESTDIR$DOCDIR/"
install -d "$DESTDIR$DOCDIR/examples"
install -m 644 deploy/systemd/*.default "$DESTDIR$DOCDIR/examples/"

echo "install: done; then: systemctl daemon-reload; udevadm control --reload" \
    "(docs/operations.md, \"Installing\")" >&2
