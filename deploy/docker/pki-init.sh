#!/bin/sh
# The Compose deployment's PKI, run once by the `pki` service before anything else starts.
#
#   pki-init.sh "server --dns server-a ..." "bankd 1" "client 23" ...
#
# Each argument is one `remsim-pki issue` (role, ids, --dns/--ip): the certificate is named
# ROLE or ROLE-FIRSTID (server.pem, bankd-1.pem, client-23.pem). Nothing that exists is made
# again, so a restart keeps the CA, the certificates and the tokens.
#
# /ca (volume pki-ca, mounted only here) holds the CA key. /tls (volume tls, mounted read-only
# by the remsim services) gets ca.pem, the certificates and keys, and api-tokens. On the
# first run it makes an admin REST token: printed once, read it with `docker compose logs pki`.
set -eu

ca="${PKI_CA_DIR:-/ca}"
out="${PKI_TLS_DIR:-/tls}"
# the user of the server, api and client images (the bankd runs as root)
owner="${PKI_OWNER:-10001:10001}"
umask 077

[ -f "$ca/ca.key" ] || remsim-pki init --dir "$ca" --name "remsim compose CA"

for spec in "$@"; do
    # shellcheck disable=SC2086 # one argument holds one command line: split it
    set -- $spec
    case "${2:-}" in
    [0-9]*) name="$1-$2" ;;
    *) name="$1" ;;
    esac
    # shellcheck disable=SC2086
    [ -f "$ca/$name.pem" ] || remsim-pki issue --dir "$ca" $spec
done

for file in "$ca"/*.pem "$ca"/*.key; do
    [ "$file" = "$ca/ca.key" ] || cp "$file" "$out/"
done

if [ ! -s "$out/api-tokens" ]; then
    token=$(remsim-pki token admin --role admin --file "$out/api-tokens")
    echo "REST token of 'admin' (role admin), shown only now: $token"
fi

chown "$owner" "$out"/*
chmod 0644 "$out"/*.pem
chmod 0600 "$out"/*.key "$out/api-tokens"
echo "PKI ready in $out: $(cd "$out" && echo *)"
