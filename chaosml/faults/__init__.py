"""The fault catalogue: every fault kind defined once, applied online (the proxy) and offline."""

from chaosml.faults import features, predictions, transport
from chaosml.faults.base import (
    FAULTS,
    INVALID_TYPE,
    PLACE_NAMES,
    PLACES,
    Fault,
    PayloadFault,
    Place,
    RequestFault,
    ResponseFault,
    Route,
    TransportFault,
    make_fault,
)
from chaosml.faults.offline import apply_offline

__all__ = [
    "FAULTS",
    "INVALID_TYPE",
    "PLACES",
    "PLACE_NAMES",
    "Fault",
    "PayloadFault",
    "Place",
    "RequestFault",
    "ResponseFault",
    "Route",
    "TransportFault",
    "apply_offline",
    "features",
    "make_fault",
    "predictions",
    "transport",
]
