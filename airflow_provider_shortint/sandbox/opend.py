"""The OpenD front end: the futu OpenD TCP protocol (44-byte "FT" header + protobuf/JSON body, SHA-1
checked) as the futu-api client speaks it, on the same contract, gate, budget and faults as REST.

Served: InitConnect (1001, unencrypted only), GetGlobalState (1002), KeepAlive (1004) and
Qot_GetShortInterest (3249). Replies are built with the SDK's own ``_pb2`` modules and header layout.
"""

from __future__ import annotations

import functools
import itertools
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_shortint.sandbox import contract, data, futu_sdk
from airflow_provider_shortint.sandbox.config import SandboxConfig
from airflow_provider_shortint.sandbox.gate import Admission
from airflow_provider_shortint.sandbox.opend_wire import (
    ENCRYPTED,
    INIT_CONNECT,
    KEEP_ALIVE_INTERVAL,
    Frame,
    FrameServer,
    Session,
    decode,
    encode,
)

if TYPE_CHECKING:
    from airflow_provider_shortint.sandbox.core import Sandbox

GET_GLOBAL_STATE: Final = 1002
KEEP_ALIVE: Final = 1004
GET_SHORT_INTEREST: Final = 3249
DEFAULT_NUM: Final = 10  # the .proto's default page size
MAX_NUM: Final = 50
SERVER_VERSION: Final = 1000
LOGIN_USER_ID: Final = 10_000_001
# retType values of Common.RetType the sandbox uses.
FAILED: Final = -1
TIMEOUT: Final = -100
UNKNOWN: Final = -400
INVALID: Final = -500
NOT_LOGGED_IN: Final = "OpenD is not logged in to the quote server (行情未登录)"


class OpenDServer:
    """Serves the OpenD protocol for one SandboxServer (its contract, gate, clock and faults)."""

    def __init__(self, sandbox: Sandbox, host: str, port: int) -> None:
        self.sandbox = sandbox
        self.sdk = futu_sdk.load()
        self._markets = futu_sdk.market_prefixes()
        self._conn_ids = itertools.count(1)
        self._wire = FrameServer((host, port), self)

    @property
    def config(self) -> SandboxConfig:
        return self.sandbox.config

    @property
    def port(self) -> int:
        return self._wire.port

    def start(self) -> None:
        self._wire.start()

    def stop(self) -> None:
        self._wire.stop()

    # ------------------------------------------------------------------ protocol

    def serve(self, session: Session, frame: Frame) -> None:
        """Answer one request frame."""
        pb = self.sdk.pb
        if frame.proto_id == INIT_CONNECT:
            self._init_connect(session, frame)
            return
        if session.conn_id is None:
            self._reply(session, frame, self._failure(pb.KeepAlive_pb2, FAILED, "send InitConnect first"))
            return
        if frame.proto_id == KEEP_ALIVE:
            response = pb.KeepAlive_pb2.Response(retType=0)
            response.s2c.time = int(time.time())
            self._reply(session, frame, response)
        elif frame.proto_id == GET_GLOBAL_STATE:
            self._reply(session, frame, self._global_state(session))
        elif frame.proto_id == GET_SHORT_INTEREST:
            self._short_interest(session, frame)
        else:
            message = f"protocol {frame.proto_id} is not served by the shortint sandbox"
            self._reply(session, frame, self._failure(pb.KeepAlive_pb2, FAILED, message))

    def _failure(self, module: Any, ret_type: int, message: str) -> Any:
        """An error Response of ``module`` (retType + retMsg, no s2c): how the gateway refuses."""
        return module.Response(retType=ret_type, retMsg=message)

    def _reply(self, session: Session, frame: Frame, response: Any) -> None:
        """Send a Response to the request ``frame``."""
        session.send(encode(self.sdk, frame, response))

    def _init_connect(self, session: Session, frame: Frame) -> None:
        """Open the session; an encrypted or undecodable handshake is refused, then dropped."""
        pb = self.sdk.pb
        request = None if frame.body == ENCRYPTED else decode(self.sdk, pb.InitConnect_pb2, frame)
        plain = pb.Common_pb2.PacketEncAlgo_None
        if request is None or (request.c2s.HasField("packetEncAlgo") and request.c2s.packetEncAlgo != plain):
            message = (
                "the shortint sandbox speaks OpenD without encryption only: connect with is_encrypt=False"
            )
            self._reply(session, frame, self._failure(pb.InitConnect_pb2, FAILED, message))
            session.close()
            return
        session.conn_id = next(self._conn_ids)
        response = pb.InitConnect_pb2.Response(retType=0, retMsg="")
        s2c = response.s2c
        s2c.serverVer = SERVER_VERSION
        s2c.loginUserID = LOGIN_USER_ID
        s2c.connID = session.conn_id
        s2c.connAESKey = "0" * 16  # unused: no encryption
        s2c.keepAliveInterval = KEEP_ALIVE_INTERVAL
        self._reply(session, frame, response)

    def _global_state(self, session: Session) -> Any:
        pb = self.sdk.pb
        response = pb.GetGlobalState_pb2.Response(retType=0)
        s2c = response.s2c
        s2c.marketHK = s2c.marketUS = s2c.marketSH = s2c.marketSZ = s2c.marketHKFuture = 0
        s2c.qotLogined = self.config.opend_logged_in
        s2c.trdLogined = False
        s2c.serverVer = SERVER_VERSION
        s2c.serverBuildNo = 1
        s2c.time = int(time.time())
        s2c.connID = session.conn_id or 0
        return response

    def _short_interest(self, session: Session, frame: Frame) -> None:
        """Protocol 3249 through the shared gate: budget, faults, then the contract."""
        module = self.sdk.pb.Qot_GetShortInterest_pb2
        request = decode(self.sdk, module, frame)
        if request is None:
            self._reply(
                session, frame, self._failure(module, INVALID, "invalid Qot_GetShortInterest request")
            )
            return
        c2s = request.c2s
        prefix = self._markets.get(c2s.security.market)
        raw = f"{prefix}.{c2s.security.code}" if prefix else f"?{c2s.security.market}.{c2s.security.code}"
        symbol = contract.canonical(raw)
        counters = self.sandbox.counters
        counters.request("opend", symbol if isinstance(symbol, str) else raw[:32])
        if not self.config.opend_logged_in:  # refused by the gateway itself: no budget slot, no fault
            counters.ret_type(str(FAILED))
            self._reply(session, frame, self._failure(module, FAILED, NOT_LOGGED_IN))
            return
        admission = self.sandbox.gate.admit(self.sandbox.config)
        response = self._gate_reply(module, admission)
        drop = False
        if response is None:
            response = self._contract_reply(module, admission, symbol, c2s)
            drop = admission.fired("malformed")
        if drop:  # no reply at all, the connection goes away (half a frame would poison the SDK's buffer)
            payload, outcome = b"", "dropped"
        elif response is None:  # a broken-body symbol: a frame whose SHA-1 does not match
            payload, outcome = encode(self.sdk, frame, module.Response(retType=0), corrupt=True), "corrupt"
        else:
            payload, outcome = encode(self.sdk, frame, response), str(response.retType)
        counters.ret_type(outcome)
        delay = admission.config.delay_seconds if admission.fired("delay") else 0.0
        self._deliver(session, payload, delay, close=drop)

    def _gate_reply(self, module: Any, admission: Admission) -> Any:
        """The reply when the budget or an error fault answers instead of the contract, else None."""
        config = admission.config
        if admission.wait is not None:
            message = (
                f"request too frequent: at most {config.rate_limit_calls} requests per "
                f"{config.rate_limit_period:g} seconds (retry in {admission.wait:.1f} s)"
            )
            return self._failure(module, FAILED, message)
        if admission.injected_429:
            return self._failure(module, FAILED, "request too frequent (injected fault)")
        if admission.fired("http5xx"):
            return self._failure(module, TIMEOUT, "NN_ProtoRet_TimeOut (injected fault)")
        if admission.fired("internal_error"):
            return self._failure(module, FAILED, "internal error (injected fault)")
        return None

    def _contract_reply(
        self, module: Any, admission: Admission, symbol: str | contract.Refusal, c2s: Any
    ) -> Any:
        """The contract's answer as a Response; None for a broken-body symbol (sent corrupt)."""
        if isinstance(symbol, contract.Refusal):
            return self._refusal(module, symbol)
        num = c2s.num if c2s.HasField("num") else DEFAULT_NUM
        if not 1 <= num <= MAX_NUM:
            message = f"invalid parameter: num must be within 1..{MAX_NUM}, got {num}"
            return self._failure(module, FAILED, message)
        next_key = c2s.nextKey if c2s.HasField("nextKey") else ""
        page = contract.lookup(symbol, num, next_key, admission.published, admission.config.end_marker)
        if isinstance(page, contract.Refusal):
            return self._refusal(module, page)
        if symbol in contract.BROKEN_BODY_SYMBOLS:
            return None
        return self._page(module, page)

    def _refusal(self, module: Any, refusal: contract.Refusal) -> Any:
        """How the gateway words each API error (DESIGN §2 ret_code -> retType/retMsg, docs/SANDBOX.md)."""
        if refusal.ret_code == -10:  # no data: an empty success, as the gateway answers
            response = module.Response(retType=0)
            response.s2c.nextKey = "-1"
            return response
        ret_type, prefix = {
            -3: (FAILED, "invalid parameter"),
            -7: (FAILED, "unknown security"),
            -8: (FAILED, "unsupported security"),
        }.get(refusal.ret_code, (UNKNOWN, "unknown error"))
        return self._failure(module, ret_type, f"{prefix}: {refusal.message}")

    def _page(self, module: Any, page: contract.Page) -> Any:
        """A success Response with the page's items in the market's item list (``hkItemList``...)."""
        response = module.Response(retType=0)
        items = getattr(response.s2c, f"{page.market.lower()}ItemList")  # hkItemList, usItemList
        fields = _item_fields(getattr(module, f"{page.market.capitalize()}ShortInterestItem").DESCRIPTOR)
        for item in page.items:
            items.add(**{field: convert(item) for field, convert in fields.items()})
        if page.next_key is not None:
            response.s2c.nextKey = page.next_key
        return response

    def _deliver(self, session: Session, payload: bytes, delay: float, *, close: bool) -> None:
        """Send now, or from a timer thread after ``delay`` (other requests on the connection go on)."""

        def send() -> None:
            if delay > 0:
                self.sandbox.pause(delay)
            session.send(payload)
            if close:
                session.close()

        if delay > 0:
            threading.Thread(target=send, name="shortint-sandbox-opend-delay", daemon=True).start()
        else:
            send()


def _snake(name: str) -> str:
    """``aggregatedShortRatio`` -> ``aggregated_short_ratio`` (the REST item's key of a .proto field)."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


@functools.lru_cache(maxsize=8)
def _item_fields(descriptor: Any) -> dict[str, Callable[[data.Item], Any]]:
    """How to fill each field of an item message (``HkShortInterestItem``...) from a REST item.

    Read from the .proto's descriptor: the field named like the REST key, cast to the field's type
    (uint64 from the int64 string, double, string); ``timestamp`` in seconds, REST carries milliseconds.
    """
    from google.protobuf.descriptor import FieldDescriptor

    casts: dict[int, Callable[[Any], Any]] = {
        FieldDescriptor.CPPTYPE_INT64: int,
        FieldDescriptor.CPPTYPE_UINT64: int,
        FieldDescriptor.CPPTYPE_DOUBLE: float,
        FieldDescriptor.CPPTYPE_STRING: str,
    }
    return {field.name: _filler(_snake(field.name), casts[field.cpp_type]) for field in descriptor.fields}


def _filler(key: str, cast: Callable[[Any], Any]) -> Callable[[data.Item], Any]:
    """Read ``key`` of a REST item and cast it (``timestamp``: milliseconds -> seconds)."""
    if key == "timestamp":
        return lambda item: int(item[key]) // 1000
    return lambda item: cast(item[key])
