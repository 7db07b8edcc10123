#!/bin/sh
# remsim-bankd's container entry point.
#
# With REMSIM_VCARD_PROFILES (space-separated card profiles, at most two: one vpcd entry
# has two slots) it first serves those software SIMs to a local pcscd through vpcd:
# readers "Virtual PCD 00 00" and "Virtual PCD 00 01", listed in the slots CSV written to
# /var/lib/remsim/bankd_pcsc_slots.csv for bank REMSIM_BANKD_BANK_ID (default 1).
# Without it, pcscd serves the readers passed into the container (USB) and the slots CSV is
# the one mounted by the operator.
# Arguments are remsim-bankd's.
set -eu

if [ -n "${REMSIM_VCARD_PROFILES:-}" ]; then
    bank="${REMSIM_BANKD_BANK_ID:-1}"
    port=35963
    mkdir -p /etc/reader.conf.d
    printf 'FRIENDLYNAME "Virtual PCD"\nDEVICENAME   /dev/null:0x%X\nLIBPATH      /usr/lib/pcsc/drivers/serial/libifdvpcd.so\nCHANNELID    0x%X\n' \
        "$port" "$port" >/etc/reader.conf.d/vpcd
    : >/var/lib/remsim/bankd_pcsc_slots.csv
    slot=0
    for profile in $REMSIM_VCARD_PROFILES; do
        remsim-vcard --profile "$profile" --port $((port + slot)) &
        printf '"%s","%s","Virtual PCD 00 %02d"\n' "$bank" "$slot" "$slot" \
            >>/var/lib/remsim/bankd_pcsc_slots.csv
        slot=$((slot + 1))
    done
fi

pcscd --foreground --error &
cd /var/lib/remsim
exec remsim-bankd "$@"
