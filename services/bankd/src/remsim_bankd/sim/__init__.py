"""Software SIM: a sans-IO SIM/USIM command processor, its profiles and its `Card` driver."""

from .driver import SimCardDriver
from .milenage import Milenage, c2, c3, opc_from_op
from .profile import (
    LARGE_EF_FID,
    RECORDED_ATR,
    T0T1_ATR,
    T1_ATR,
    CardProfile,
    encode_iccid,
    encode_imsi,
    load_profile,
)
from .simcard import SimCard, SoftSim

__all__ = [
    "LARGE_EF_FID",
    "RECORDED_ATR",
    "T0T1_ATR",
    "T1_ATR",
    "CardProfile",
    "Milenage",
    "SimCard",
    "SimCardDriver",
    "SoftSim",
    "c2",
    "c3",
    "encode_iccid",
    "encode_imsi",
    "load_profile",
    "opc_from_op",
]
