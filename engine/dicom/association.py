"""One DICOM association on the acceptor side: an asyncio protocol object.

It owns only I/O state: the socket, the receive buffer, the PS3.8 state and its
timers. Bytes go straight from the kernel into a preallocated buffer
(BufferedProtocol) and from there into core_rs, which frames PDUs and streams
datasets to spool files. Storing an object is application work in a tracked task;
its C-STORE-RSP goes out when the object is durable and indexed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import core_rs
from engine.dicom import negotiation as neg
from engine.dicom.client import Payload, PeerUnavailable, frames
from engine.dicom.fsm import Action, Event, State, next_step
from engine.dicom.negotiation import AcceptedContext, AssociationRequest, MalformedRequest
from engine.dicom.proxy_protocol import (
    ClientAddress,
    ProxyHeaderError,
    ProxyHeaderParser,
    looks_like_header,
)
from engine.dicom.pumps import QUIET_AFTER, Pumps
from engine.dicom.requests import Requests
from engine.dicom.store import (
    CANNOT_UNDERSTAND,
    PROCESSING_FAILURE,
    SOP_CLASS_NOT_SUPPORTED,
    SUCCESS,
    UNRECOGNIZED_OPERATION,
    StoreResult,
)
from engine.forward import commitment
from engine.forward.senders import ObjectReader
from policies import access

if TYPE_CHECKING:
    from engine.dicom.hub import AssociationHub
    from engine.dicom.store import StoreService
    from engine.forward.recall import Recaller
    from engine.services import Shared
    from engine.worklist.mirror import Mirror

log = logging.getLogger(__name__)

C_STORE_RQ, C_ECHO_RQ, C_CANCEL_RQ, N_EVENT_REPORT_RQ = 0x0001, 0x0030, 0x0FFF, 0x0100
C_FIND_RQ, C_MOVE_RQ, C_GET_RQ, C_STORE_RSP = 0x0020, 0x0021, 0x0010, 0x8001
N_SET_RQ, N_CREATE_RQ = 0x0120, 0x0140
_MAX_REPORT = 16 * 2**20  # event information of a commitment report, read into memory
# Each PS3.8 action's method (`_ae6`, `_dt1`, ...), named once, not per event.
_ACTIONS = {action: f"_{action.name.lower()}" for action in Action}

_CONTROL_EVENTS = {
    0x01: Event.Evt6,
    0x02: Event.Evt3,
    0x03: Event.Evt4,
    0x05: Event.Evt12,
    0x06: Event.Evt13,
    0x07: Event.Evt16,
}
# Stop reading from a peer that has this many objects waiting for their commit
# (a well-behaved SCU without asynchronous operations has at most one).
_MAX_STORES_IN_FLIGHT = 2
_ids = itertools.count(1)
# Until its A-ASSOCIATE-RQ is accepted, a connection reads into this one buffer
# of the process's instead of a max-PDU buffer of its own, so idle or hostile
# connections cost little. Sharing is safe: get_buffer and buffer_updated run back
# to back on the loop, and the receiver copies whatever it keeps.
_BEFORE_ASSOCIATION = memoryview(bytearray(64 * 1024))
_RECALL_HEARTBEAT = 5.0  # seconds between pending C-MOVE responses while recalling
_SMALL_READ = 16 * 1024  # reads below this are requests and control PDUs, not image data


@dataclass(frozen=True)
class Acceptor:
    """What every association of a listener works with."""

    shared: Shared
    hub: AssociationHub
    store: StoreService
    # Storage commitment reports an archive delivers to us, for the forwarder
    # (with how it came, for the log).
    report: Callable[[commitment.Report, str], Awaitable[None]]
    objects: ObjectReader  # what C-MOVE sub-operations send
    recaller: Recaller  # brings back what a C-MOVE asks for that is only at the center
    worklist: Mirror  # answers Modality Worklist queries (RIS, else its mirror)


@dataclass(frozen=True)
class Resolved:
    """What a listener learnt before the association's first byte: the client a
    trusted balancer's PROXY header named (engine.dicom.tls_listener reads it before TLS)."""

    client: ClientAddress | None  # None: the balancer's own connection (LOCAL)
    via: str  # the balancer, host:port


class Association(asyncio.BufferedProtocol):
    def __init__(self, acceptor: Acceptor, resolved: Resolved | None = None) -> None:
        self._shared = acceptor.shared
        self._hub = acceptor.hub
        self._storage = acceptor.store
        self._requests = Requests(
            self,
            acceptor.shared,
            acceptor.report,
            acceptor.objects,
            acceptor.recaller,
            acceptor.worklist,
        )
        self._resolved = resolved
        config = acceptor.shared.config.dicom
        self.id = next(_ids)
        self.state = State.Sta1
        self.transport: asyncio.Transport | None = None
        self._fd = -1  # the TCP socket's descriptor, set in connection_made, for TCP options
        self.peer = "?"  # the real client: after a PROXY header, the address it names
        self.via = ""  # the trusted load balancer the connection came through
        self.address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
        self.tls_names: frozenset[str] | None = None  # None: not over TLS
        self._proxy: ProxyHeaderParser | None = None
        self._first_read = True
        self.calling_ae = ""
        self._view = _BEFORE_ASSOCIATION  # our own buffer once accepted (AE-7)
        self._receiver = core_rs.Receiver(
            acceptor.shared.layout.spool,
            f"{os.getpid()}-{self.id}",
            config.max_pdu,
            # With "fsync", spools start their disk writes as the bytes land: the
            # group commit's sync then waits for little (docs/decisions/0036).
            write_behind=acceptor.shared.config.durable,
        )
        self._contexts: dict[int, AcceptedContext] = {}
        self._peer_max_pdu = 0
        self._artim: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._last_activity = 0.0
        self._reading_paused = False  # too many objects waiting for their commit
        # Set for plain TCP (a pump thread cannot read through TLS): once established,
        # core_rs reads the socket on a thread and the loop does not.
        self._pumps: Pumps | None = None
        self._pumping = False
        self._drain_after_pump = False  # drain() waits for the receiver to come back
        self._quiet_after = min(QUIET_AFTER, config.idle_timeout)
        self._tasks: set[asyncio.Task[None]] = set()
        # C-STORE-RQs being indexed without a task of their own (StoreService.store_then).
        self._stores = 0
        self._awaiting_dataset: dict[int, core_rs.Command] = {}
        self._cancelled: set[int] = set()  # message IDs a C-CANCEL-RQ named
        self.contexts: dict[tuple[str, str], int] = {}  # C-GET sub-operations' (see _ae7)
        self._relational: frozenset[str] = frozenset()  # SOP classes (negotiation.relational)
        self._sub_operations: dict[int, asyncio.Future[int]] = {}  # message ID -> status
        self._sub_ids = itertools.count(1)
        self._writable = asyncio.Event()  # cleared while the transport's buffer is full
        self._writable.set()
        self.stored = 0
        self.stored_bytes = 0
        self.released = False
        self._started = time.monotonic()
        # Kept: CPython 3.11's get_running_loop() makes a getpid syscall per call (its
        # fork check), and the hot path asked for it ~9 times per object.
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self._loop.create_future()

    # ---- asyncio protocol: I/O only -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Without it DCMTK peers stall ~40 ms per object (Nagle + delayed ACK).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._fd = sock.fileno()
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"
            self.address = ipaddress.ip_address(peer[0])
        if self._resolved is not None:
            self._first_read = False
            self.via = self._resolved.via
            if self._resolved.client is not None:
                self._use_client(self._resolved.client)
        elif access.trusted_proxy(self.address, self._shared.config):
            self._proxy = ProxyHeaderParser()
        if transport.get_extra_info("sslcontext") is not None:
            self.tls_names = access.certificate_names(transport.get_extra_info("peercert"))
        elif self._fd >= 0 and self._resolved is None:
            self._pumps = self._hub.pumps
        if not self._hub.add(self):
            self.transport.abort()  # connection_lost follows; still Sta1, nothing to undo
            return
        self._handle(Event.Evt5)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        if self.state in (State.Sta13, State.Sta1):
            return  # AA-6: whatever still arrives is ignored
        self._last_activity = self._loop.time()
        if nbytes < _SMALL_READ and self._fd >= 0:
            # A request's pieces (command, then identifier) from a peer without
            # TCP_NODELAY (pynetdicom, DCMTK by default) wait for our ACK of the first:
            # ACK at once rather than after the kernel's ~40 ms delay. Linux resets
            # the flag, so it is set again after each small read; big reads need it not.
            # By descriptor in core_rs: uvloop's socket.setsockopt builds a new Python
            # socket (and a getsockname) per call.
            with contextlib.suppress(OSError):
                core_rs.quick_ack(self._fd)
        data: memoryview | bytes = self._view[:nbytes]
        if self._first_read or self._proxy is not None:
            unwrapped = self._unwrap_proxy_header(data)
            if unwrapped is None:
                return
            data = unwrapped
        try:
            events = self._receiver.feed(data)
        except (core_rs.ProtocolError, core_rs.CommandError) as exc:
            self._protocol_error(exc)
            return
        self._dispatch(events)
        if self._may_pump():
            self._start_pump()

    def _protocol_error(self, exc: core_rs.ProtocolError | core_rs.CommandError) -> None:
        reason = exc.reason if isinstance(exc, core_rs.ProtocolError) else 0
        self._handle(Event.Evt19, reason=reason, why=str(exc))

    def _dispatch(
        self, events: list[core_rs.ControlPdu | core_rs.Command | core_rs.DatasetReceived]
    ) -> None:
        for event in events:
            if self.state in (State.Sta13, State.Sta1):
                break
            if isinstance(event, core_rs.ControlPdu):
                self._on_control(event)
            elif self.state is State.Sta6:
                self._dt2(event)  # Evt10 in Sta6: DT-2, staying in Sta6 (PS3.8 9-10)
            else:
                self._handle(Event.Evt10, indication=event)

    # ---- the pump: core_rs reads the socket of an established association ---------

    def _may_pump(self) -> bool:
        return (
            self._pumps is not None
            and self.state is State.Sta6
            and not self._reading_paused
            and not self._pumping
            and not self._drain_after_pump
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def _start_pump(self) -> None:
        assert self._pumps is not None
        assert self.transport is not None
        self.transport.pause_reading()
        try:
            self._pumps.start(
                self._receiver,
                self.id,
                self._fd,
                len(self._view),
                self._quiet_after,
                _MAX_STORES_IN_FLIGHT,
                self._pumped,
            )
        except (core_rs.CoreError, RuntimeError) as exc:
            # No thread or descriptor to spare: this association reads on the loop.
            log.warning("[%s] reading on the event loop: no pump thread (%s)", self, exc)
            self._pumps = None
            self.transport.resume_reading()
            return
        self._pumping = True

    def _pumped(self) -> bool:
        """The pump thread handed something over: what it decoded goes to the state
        machine as a read's would. If it read on (requests and their datasets only,
        decision 43) that is all; if the receiver is back, the pump or the loop reads
        on. Returns whether the thread is still reading."""
        events, back, error = self._receiver.collect()
        if not back:
            if events:
                self._last_activity = self._loop.time()
                self._dispatch(events)
            return True
        self._pumping = False
        # Without events the socket closed, or went quiet for quiet_after seconds,
        # which the idle timer counts.
        self._last_activity = self._loop.time() - (0 if events else self._quiet_after)
        if events:
            self._dispatch(events)
        if error is not None:
            events = None
            if self.state not in (State.Sta13, State.Sta1):
                self._protocol_error(error)
        if self.state not in (State.Sta6, State.Sta8):
            self._receiver.close()
        if self.transport is None or self.transport.is_closing():
            return False
        if events is not None and self._may_pump():
            self._start_pump()
        elif not self._reading_paused:
            # Also after the socket closed or went quiet: the loop's own read sees it.
            self.transport.resume_reading()
        if self._drain_after_pump:
            self._drain_after_pump = False
            self.drain()
        return self._pumping

    def _unwrap_proxy_header(self, data: memoryview | bytes) -> bytes | memoryview | None:
        """A trusted load balancer's PROXY header names the real client; from
        anyone else it is refused, or any host could claim any address."""
        if self._proxy is None:
            self._first_read = False
            if looks_like_header(bytes(data[:12])):
                self._shared.audit.write("proxy_header_refused", peer=self.peer)
                self._handle(
                    Event.Evt19,
                    reason=1,
                    why=f"PROXY header from {self.peer}, which is not in dicom.trusted_proxies",
                )
                return None
            return data
        try:
            rest = self._proxy.feed(data)
        except ProxyHeaderError as exc:
            self._handle(Event.Evt19, reason=0, why=f"from load balancer {self.peer}: {exc}")
            return None
        if rest is None:
            return None
        self.via, client = self.peer, self._proxy.client
        if client is not None:
            self._use_client(client)
        self._proxy = None
        self._first_read = False
        return rest if rest else None

    def _use_client(self, client: ClientAddress) -> None:
        self.peer = f"{client.host}:{client.port}"
        self.address = ipaddress.ip_address(client.host)

    @property
    def host(self) -> str:
        return "" if self.address is None else str(self.address)

    def transport_facts(self) -> dict[str, Any]:
        """What the audit log records of the connection besides the peer."""
        facts: dict[str, Any] = {}
        if self.via:
            facts["via"] = self.via
        if self.tls_names is not None:
            facts["tls_names"] = sorted(self.tls_names)
        return facts

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._receiver.close()
        self._writable.set()  # a paused answer loop wakes up, sees the state and ends
        for waiter in self._sub_operations.values():
            if not waiter.done():
                waiter.set_exception(PeerUnavailable("the requestor closed the association"))
        if self.state is not State.Sta1:
            self._handle(Event.Evt17, why=str(exc) if exc else "peer closed the connection")
        self._cancel_timers()
        self._hub.remove(self)
        if not self.closed.done():
            self.closed.set_result(None)

    # ---- the PS3.8 state machine ----------------------------------------------------

    def _handle(self, event: Event, **info: Any) -> None:
        action, next_state = next_step(self.state, event)
        if log.isEnabledFor(logging.DEBUG):  # three events per object: no formatting
            log.debug(
                "[%s] %s %s: %s -> %s",
                self,
                event.name,
                action.name,
                self.state.name,
                next_state.name,
            )
        self.state = next_state
        getattr(self, _ACTIONS[action])(**info)

    def _on_control(self, pdu: core_rs.ControlPdu) -> None:
        event = _CONTROL_EVENTS[pdu.pdu_type]
        if event is Event.Evt6 and self.state is State.Sta2:
            try:
                request = neg.parse_request(pdu.data)
            except MalformedRequest as exc:
                self._handle(Event.Evt19, reason=6, why=str(exc))
                return
            self._handle(event, request=request)
        elif event is Event.Evt16:
            self._handle(event, why="peer sent A-ABORT")
        else:
            self._handle(event, reason=2, why=f"unexpected {event.value}")

    def _ae5(self) -> None:
        self._start_artim()

    def _ae6(self, request: AssociationRequest | None = None, **_: Any) -> None:
        self._stop_artim()
        assert request is not None
        self.calling_ae = request.calling_ae
        rejection = self._decide(request)
        if rejection is not None:
            self._handle(Event.Evt8, rejection=rejection)
            return
        services = self._services(request.calling_ae)
        accepted, results = neg.negotiate(request.contexts, request.role_items, services)
        self._handle(
            Event.Evt7,
            request=request,
            accepted=accepted,
            results=results,
            storage_scp=neg.storage_scps(request, services),
            relational=neg.relational(request, services),
        )

    def _decide(self, request: AssociationRequest) -> access.Rejection | None:
        if request.protocol_version & 0x0001 == 0:
            return access.protocol_version_not_supported(request.protocol_version)
        if request.application_context != neg.APPLICATION_CONTEXT:
            return access.application_context_not_supported(request.application_context)
        if request.context_problem is not None:
            return access.protocol_error(request.context_problem)
        peer = access.Peer(self.address, self.tls_names)
        static = access.check_peer(request.calling_ae, request.called_ae, peer, self._shared.config)
        if static is not None:
            return static
        entry = self._shared.config.calling_ae_entry(request.calling_ae.strip())
        # Echo and storage commitment reports need no disk, and the reports are how
        # a full disk gets purged: only associations that may store meet that limit.
        stores = any(cx.abstract_syntax not in neg.NEEDS_NO_DISK for cx in request.contexts)
        return self._hub.admit(self, entry.max_associations if entry else None, stores)

    def _services(self, calling_ae: str) -> frozenset[str]:
        """The Query/Retrieve SOP classes this calling AE may use ([[calling_ae]])."""
        entry = self._shared.config.calling_ae_entry(calling_ae.strip())
        allowed: frozenset[str] = frozenset()
        if entry is None or entry.query:
            allowed |= neg.QR_FIND
            if self._shared.config.worklist_source:
                allowed |= {neg.MWL_FIND}
        if self._shared.config.mpps_destination:
            allowed |= {neg.MPPS}
        if entry is None or entry.retrieve:
            allowed |= neg.QR_RETRIEVE | neg.QR_GET
        return allowed

    def _ae7(
        self,
        request: AssociationRequest,
        accepted: list[AcceptedContext],
        results: list[Any],
        storage_scp: frozenset[str],
        relational: tuple[frozenset[str], list[Any]],
    ) -> None:
        assert self.transport is not None
        self._peer_max_pdu = request.peer_max_pdu
        self._relational, extended = relational
        self._contexts = {cx.context_id: cx for cx in accepted}
        # Where C-GET sub-operations may go: the requestor is SCP for these classes.
        self.contexts = {
            (cx.abstract_syntax, cx.transfer_syntax): cx.context_id
            for cx in accepted
            if cx.abstract_syntax in storage_scp
        }
        self._receiver.establish(
            request.calling_ae,
            [(cx.context_id, cx.abstract_syntax, cx.transfer_syntax) for cx in accepted],
        )
        # One PDU header plus our max PDU per read keeps syscalls few and memory flat.
        self._view = memoryview(bytearray(self._shared.config.dicom.max_pdu + 1024))
        self._hub.associated(self)
        self.transport.write(
            neg.encode_accept(
                request, results, self._shared.config.dicom.max_pdu, storage_scp, extended
            )
        )
        self._hub.established(self)
        log.info(
            "[%s] association accepted: %d of %d presentation contexts, peer %s %s",
            self,
            len(accepted),
            len(request.contexts),
            request.implementation_version_name or request.implementation_class_uid,
            f"(max PDU {request.peer_max_pdu})" if request.peer_max_pdu else "",
        )
        self._arm_idle_timer()

    def _ae8(self, rejection: access.Rejection) -> None:
        assert self.transport is not None
        self.transport.write(neg.encode_reject(rejection))
        self._hub.rejected(self, rejection)
        log.warning(
            "[%s] association rejected (%s, result %d source %d reason %d): %s",
            self,
            "transient" if rejection.result == 2 else "permanent",
            rejection.result,
            rejection.source,
            rejection.reason,
            rejection.message,
        )
        self._start_artim()

    def _dt1(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    _ar7 = _dt1

    def _dt2(self, indication: core_rs.Command | core_rs.DatasetReceived) -> None:
        if isinstance(indication, core_rs.Command):
            self._on_command(indication)
        else:
            self._on_dataset(indication)

    def _ar2(self, **_: Any) -> None:
        self._maybe_finish_release()

    def _ar4(self) -> None:
        assert self.transport is not None
        self.transport.write(neg.encode_release_response())
        self.released = True
        elapsed = time.monotonic() - self._started
        log.info(
            "[%s] released: %d object(s), %.1f MB in %.1f s",
            self,
            self.stored,
            self.stored_bytes / 1e6,
            elapsed,
        )
        self._start_artim()

    def _ar5(self, **_: Any) -> None:
        self._stop_artim()

    def _aa1(self, reason: int | None = None, why: str = "") -> None:
        self._send_abort(reason, why)

    def _aa2(self, **_: Any) -> None:
        self._stop_artim()
        if self.transport is not None:
            self.transport.close()

    def _aa3(self, why: str = "") -> None:
        log.warning("[%s] aborted by the peer after %d stored object(s)", self, self.stored)
        if self.transport is not None:
            self.transport.close()

    def _aa4(self, why: str = "") -> None:
        log.warning("[%s] connection lost without release: %s", self, why)

    def _aa5(self, **_: Any) -> None:
        self._stop_artim()

    def _aa6(self, **_: Any) -> None:
        pass  # PS3.8: ignore the PDU

    def _aa7(self, **_: Any) -> None:
        assert self.transport is not None
        self.transport.write(neg.encode_abort(2))

    def _aa8(self, reason: int = 0, why: str = "") -> None:
        self._send_abort(reason, why)

    def _send_abort(self, reason: int | None, why: str) -> None:
        assert self.transport is not None
        self._receiver.close()
        self.transport.write(neg.encode_abort(reason))
        self._hub.free_slot(self)
        log.error(
            "[%s] A-ABORT sent%s: %s", self, "" if reason is None else f" (reason {reason})", why
        )
        self._start_artim()

    # ---- DIMSE ------------------------------------------------------------------------

    def _on_command(self, command: core_rs.Command) -> None:
        field = command.command_field
        if command.has_dataset:
            self._awaiting_dataset[command.context_id] = command
            return
        if field == C_ECHO_RQ:
            self._hub.record_echo()
            self.respond(command, 0x8030, SUCCESS, sop_class=neg.VERIFICATION)
        elif field == C_STORE_RQ:
            self.respond(command, 0x8001, CANNOT_UNDERSTAND, comment="C-STORE without dataset")
        elif field == C_STORE_RSP:  # a C-GET sub-operation's answer
            waiter = self._sub_operations.get(command.message_id_being_responded_to or 0)
            if waiter is not None and not waiter.done():
                waiter.set_result(command.status or 0)
        elif field == C_CANCEL_RQ:
            if command.message_id_being_responded_to is not None:
                self._cancelled.add(command.message_id_being_responded_to)
        else:
            self.respond(command, field | 0x8000, UNRECOGNIZED_OPERATION)

    def _on_dataset(self, received: core_rs.DatasetReceived) -> None:
        command = self._awaiting_dataset.pop(received.context_id)
        field = command.command_field
        spool = received.spool
        context = self._contexts[received.context_id]
        if spool is None:  # core_rs consumed it without writing it, and says why
            comment = ""
            if received.status == SOP_CLASS_NOT_SUPPORTED:
                comment = "SOP class differs from the presentation context"
            self.respond(command, field | 0x8000, received.status, comment=comment)
            return
        if field == C_FIND_RQ and context.abstract_syntax == neg.MWL_FIND:
            work = self._requests.worklist_find(command, context, spool)
        elif field == C_FIND_RQ:
            work = self._requests.find(command, context, spool)
        elif field in (C_MOVE_RQ, C_GET_RQ):
            work = self._requests.retrieve(command, context, spool)
        elif field == N_EVENT_REPORT_RQ:
            work = self._requests.commitment_report(command, context, spool)
        elif field in (N_CREATE_RQ, N_SET_RQ) and context.abstract_syntax == neg.MPPS:
            work = self._requests.mpps(command, context, spool)
        elif not command.affected_sop_instance_uid:
            spool.discard()
            self._receiver.answered()
            self.respond(command, 0x8001, CANNOT_UNDERSTAND, comment="no Affected SOP Instance UID")
            return
        elif not self._storage.reads_headers:
            self._store_then(command, context, spool)
            self._limit_in_flight()
            return
        else:
            work = self._store(command, context, spool)
        task = self._loop.create_task(work)
        self._tasks.add(task)
        self._hub.track(task)
        task.add_done_callback(self._store_done)
        self._limit_in_flight()

    def _limit_in_flight(self) -> None:
        if len(self._tasks) + self._stores >= _MAX_STORES_IN_FLIGHT and self.transport is not None:
            self.transport.pause_reading()
            self._reading_paused = True

    @property
    def _busy(self) -> bool:
        """Some request is still being worked on: a release or a drain waits."""
        return bool(self._tasks or self._stores)

    def _store_then(
        self, command: core_rs.Command, context: AcceptedContext, spool: core_rs.SpoolFile
    ) -> None:
        """A C-STORE without a task: the group commit calls back with the status
        (docs/decisions/0041). The common case: no routing rule reads the header."""
        self._stores += 1
        self._hub.store_began()
        answer = partial(self._stored, command, time.perf_counter())
        try:
            now = self._storage.store_then(*self._store_request(command, context, spool), answer)
        except Exception:  # raised before the object reached the committer
            now = self._store_failed(command)
        if now is not None:  # else the committer calls `answer`
            answer(now)

    def _store_request(
        self, command: core_rs.Command, context: AcceptedContext, spool: core_rs.SpoolFile
    ) -> tuple[core_rs.SpoolFile, str, str, str, str, str]:
        """What StoreService.store and store_then take first, in their order (a plain
        tuple: a NamedTuple for them cost 7k instructions an object, 1.5%)."""
        return (
            spool,
            command.affected_sop_class_uid,
            command.affected_sop_instance_uid,
            context.transfer_syntax,
            self.calling_ae,
            command.move_originator_ae,
        )

    def _stored(self, command: core_rs.Command, started: float, result: StoreResult) -> None:
        self._stores -= 1
        self._hub.store_ended()
        self._answer_store(command, started, result)
        self._work_done()

    async def _store(
        self, command: core_rs.Command, context: AcceptedContext, spool: core_rs.SpoolFile
    ) -> None:
        """A C-STORE as a task: routing rules read the object's header on the I/O pool."""
        started = time.perf_counter()
        try:
            request = self._store_request(command, context, spool)
            result: StoreResult = await self._storage.store(*request)
        except Exception:  # a bug must not leave the modality waiting for its answer
            result = self._store_failed(command)
        self._answer_store(command, started, result)

    def _store_failed(self, command: core_rs.Command) -> StoreResult:
        """A bug of ours while storing, from an except block: logged with its
        traceback, and the modality is told 0x0110 rather than nothing."""
        log.exception("[%s] storing %s failed", self, command.affected_sop_instance_uid)
        return StoreResult(PROCESSING_FAILURE, "the store failed on this node")

    def _answer_store(self, command: core_rs.Command, started: float, result: StoreResult) -> None:
        self._hub.record_store(result, self.calling_ae, time.perf_counter() - started)
        if result.status == SUCCESS:
            self.stored += 1
            self.stored_bytes += result.size
        log.debug(
            "[%s] %s -> %#06x in %.1f ms",
            self,
            command.affected_sop_instance_uid,
            result.status,
            (time.perf_counter() - started) * 1e3,
        )
        self.respond(command, 0x8001, result.status, comment=result.comment)

    async def store(
        self, context_id: int, sop_class_uid: str, sop_instance_uid: str, payload: Payload
    ) -> int:
        """A C-STORE sub-operation of a C-GET on this association: the request, the
        dataset in windows as the requestor reads them, then its answer's status."""
        message_id = next(self._sub_ids) & 0xFFFF
        waiter: asyncio.Future[int] = self._loop.create_future()
        self._sub_operations[message_id] = waiter
        try:
            command = core_rs.encode_store_request(message_id, sop_class_uid, sop_instance_uid, 0)
            self._write_data(
                [core_rs.encode_message(context_id, True, command, self._peer_max_pdu)]
            )
            for window, last in payload.windows():
                self._write_data(frames(context_id, window, self._peer_max_pdu, last))
                await self._writable.wait()
            async with asyncio.timeout(self._shared.config.dicom.idle_timeout):
                return await waiter
        except TimeoutError as exc:
            raise PeerUnavailable(f"no C-STORE-RSP for {sop_instance_uid}") from exc
        finally:
            del self._sub_operations[message_id]

    def _write_data(self, pieces: list[bytes | memoryview]) -> None:
        if self.state not in (State.Sta6, State.Sta8) or self.transport is None:
            raise PeerUnavailable("the association ended")
        self.transport.writelines(pieces)

    def send(self, command: core_rs.Command, pdus: bytes, dataset: bytes = b"") -> None:
        """A response's command PDUs and, if any, its dataset, as one write (P-DATA
        request, DT-1), while the association can carry it."""
        if self.state not in (State.Sta6, State.Sta8):
            return
        if dataset:
            pdus += core_rs.encode_message(command.context_id, False, dataset, self._peer_max_pdu)
        self._handle(Event.Evt9, data=pdus)

    # ---- what engine.dicom.requests uses (its Link) -----------------------------------

    @property
    def open(self) -> bool:
        """Established, or releasing: responses can still go out."""
        return self.state in (State.Sta6, State.Sta8)

    @property
    def peer_max_pdu(self) -> int:
        return self._peer_max_pdu

    @property
    def relational(self) -> frozenset[str]:
        """SOP classes with relational queries negotiated (negotiation.relational)."""
        return self._relational

    def cancelled(self, message_id: int) -> bool:
        return message_id in self._cancelled

    def forget_cancel(self, message_id: int) -> None:
        self._cancelled.discard(message_id)

    async def writable(self) -> None:
        """Until the transport's buffer drains: the peer reads slower than we send."""
        await self._writable.wait()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _store_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("[%s] store task failed", self, exc_info=task.exception())
        self._work_done()

    def _work_done(self) -> None:
        """A request was answered: read on if reading waited for it, finish a
        release or a drain that did."""
        self._receiver.answered()
        if self._reading_paused and len(self._tasks) + self._stores < _MAX_STORES_IN_FLIGHT:
            self._reading_paused = False
            # A pump still reading (decision 43) keeps its own bound: the loop must
            # not read the same socket.
            if self.transport is not None and not self.transport.is_closing() and not self._pumping:
                if self._may_pump():
                    self._start_pump()
                else:
                    self.transport.resume_reading()
        self._maybe_finish_release()
        if self._hub.cutting:
            self.drain()

    def respond(
        self,
        command: core_rs.Command,
        field: int,
        status: int,
        sop_class: str | None = None,
        comment: str = "",
        instance: str | None = None,
    ) -> None:
        """`instance`: the Affected SOP Instance UID, when it is not the command's
        (an N-SET names its object as Requested; an N-CREATE may leave it to us)."""
        if self.state not in (State.Sta6, State.Sta8):
            log.warning(
                "[%s] status %#06x for message %d not sent: association %s",
                self,
                status,
                command.message_id,
                self.state.value.lower(),
            )
            return
        data = core_rs.encode_response(
            command.context_id,
            self._peer_max_pdu,
            field,
            command.message_id,
            status,
            sop_class or command.affected_sop_class_uid,
            instance or command.affected_sop_instance_uid,
            comment,
        )
        if self.state is State.Sta6:
            self._dt1(data)  # Evt9 in Sta6: DT-1, staying in Sta6; twice per object
        else:
            self._handle(Event.Evt9, data=data)

    def _maybe_finish_release(self) -> None:
        if self.state is State.Sta8 and not self._busy:
            self._handle(Event.Evt14)

    # ---- shutdown, timers -------------------------------------------------------------

    def drain(self) -> None:
        """Shutting down: end the association once no object is half-way in."""
        if self._pumping:
            # Its receiver is with the pump thread, which may be waiting for the next
            # object: ask for it back, then decide.
            self._drain_after_pump = True
            self._receiver.cancel_pump()
            return
        if (
            self.state is State.Sta6 and not self._busy and self._receiver.at_boundary
        ) or self.state in (State.Sta2, State.Sta3):
            self._handle(Event.Evt15, reason=None, why="node is shutting down")

    def abort(self, why: str) -> None:
        if self.state in (State.Sta2, State.Sta3, State.Sta6, State.Sta8):
            self._handle(Event.Evt15, reason=None, why=why)
        elif self.transport is not None:
            self.transport.close()

    def _start_artim(self) -> None:
        self._stop_artim()
        timeout = self._shared.config.dicom.artim_timeout
        self._artim = self._loop.call_later(timeout, self._artim_expired)

    def _stop_artim(self) -> None:
        if self._artim is not None:
            self._artim.cancel()
            self._artim = None

    def _artim_expired(self) -> None:
        self._artim = None
        if self.state in (State.Sta2, State.Sta13):
            self._handle(Event.Evt18)

    def _arm_idle_timer(self) -> None:
        # One timer that re-arms itself, instead of a new timer per read.
        timeout = self._shared.config.dicom.idle_timeout
        self._idle = self._loop.call_later(timeout, self._idle_check)

    def _idle_check(self) -> None:
        self._idle = None
        if self.state not in (State.Sta6, State.Sta8):
            return
        timeout = self._shared.config.dicom.idle_timeout
        silent = self._loop.time() - self._last_activity
        if silent >= timeout and not self._busy and not self._pumping:
            self._handle(Event.Evt15, reason=None, why=f"no data for {silent:.0f} s")
        else:
            self._idle = self._loop.call_later(max(timeout - silent, 1.0), self._idle_check)

    def _cancel_timers(self) -> None:
        self._stop_artim()
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def __str__(self) -> str:
        who = self.calling_ae or "?"
        return f"#{self.id} {who}@{self.peer}"
