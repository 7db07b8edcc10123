"""remsim's test and lab support: a workspace member in the dev group, never shipped.

Scripted RSPRO peers, the virtual SIM bank (pcscd + vpcd + software SIMs, used by the
tests, ``make demo`` and ``bench/``), the SIMtrace2 firmware simulator and the store/bus
contract suite. No shipped member imports this package.
"""
