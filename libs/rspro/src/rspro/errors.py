"""The one exception hierarchy of the rspro package."""


class RsproError(Exception):
    """Base class of every error raised by rspro on bad input or a broken link."""


class RsproDecodeError(RsproError):
    """Bytes that are not a valid RSPRO PDU."""


class RsproEncodeError(RsproError):
    """A message that cannot be encoded (a value out of range, a PDU too large)."""


class IpaFramingError(RsproError):
    """The IPA byte stream is broken (unknown protocol, bad length): the link must be closed."""


class ConnectionClosedError(RsproError):
    """The peer closed the connection, or it was closed locally."""


class KeepaliveTimeoutError(ConnectionClosedError):
    """The peer did not answer a PING within the keepalive timeout."""
