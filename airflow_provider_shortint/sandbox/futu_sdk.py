"""The vendor SDK (futu-api) as the sandbox's OpenD front end uses it: its generated ``_pb2`` modules,
framing code and market table, imported only when an OpenD port is served.

futu itself is loaded through ``airflow_provider_shortint.transports.opend.sdk.load_futu`` (the provider's one
place for the SDK's import-time side effects: no log files under $HOME, its log routed to ours, the
process's SIGINT handler kept).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any, Final

MISSING: Final = (
    "the sandbox's OpenD port needs the vendor SDK futu-api: "
    "pip install 'airflow-provider-shortint[futu]' (or serve REST only: no --opend-port)"
)
#: What the OpenD front end uses of the SDK: generated messages, framing, constants.
MODULES: Final = (
    "futu.common.constant",
    "futu.common.utils",
    "futu.common.pb.Common_pb2",
    "futu.common.pb.InitConnect_pb2",
    "futu.common.pb.KeepAlive_pb2",
    "futu.common.pb.GetGlobalState_pb2",
    "futu.common.pb.Qot_Common_pb2",
    "futu.common.pb.Qot_GetShortInterest_pb2",
)


def load() -> ModuleType:
    """``futu.common`` with :data:`MODULES` loaded; an ImportError naming the extra when futu is missing."""
    from airflow_provider_shortint.transports.opend.sdk import FutuNotInstalledError, load_futu

    try:
        load_futu()
        for name in MODULES:
            importlib.import_module(name)
    except (FutuNotInstalledError, ImportError) as err:
        raise ImportError(MISSING) from err
    return sys.modules["futu.common"]


def market_prefixes() -> dict[int, str]:
    """QotMarket number -> symbol prefix ("HK", "US", "SH"...), from the SDK's own ``Market`` table."""
    from futu.common.constant import Market

    table: dict[Any, Any] = Market().load_dic()
    return {int(number): str(prefix) for prefix, number in table.items() if str(prefix) != Market.NONE}
