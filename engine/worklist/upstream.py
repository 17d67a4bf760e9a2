"""One Modality Worklist C-FIND to an upstream RIS, with pynetdicom as the SCU (the
RIS is a peer like any other; nothing here needs our own association code). Blocking:
run it in a thread, bounded by the source's timeout."""

from __future__ import annotations

import logging

from pydicom import Dataset
from pydicom.charset import convert_encodings
from pynetdicom import AE, _config
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from engine.dicom import scu
from policies.config import WorklistSourceConfig

log = logging.getLogger(__name__)
MWL_FIND = str(ModalityWorklistInformationFind)
PENDING = (0xFF00, 0xFF01)
# pynetdicom prints every answer's identifier by default, reading (and decoding) each
# value: patient data would reach the log, and text would be decoded before the
# source's `character_set` can be applied.
_config.LOG_RESPONSE_IDENTIFIERS = False


class UpstreamError(RuntimeError):
    """The RIS could not be asked or did not answer with Success: the reason."""


def declare_character_set(ds: Dataset, term: str) -> None:
    """Say what an answer without (0008,0005) is encoded in, before any of its text is
    read: pydicom decodes values lazily, with the character set each dataset (and
    each sequence item) was read with."""
    ds.SpecificCharacterSet = term
    encodings = convert_encodings([term])
    stack = [ds]
    while stack:
        current = stack.pop()
        implicit, little = current.original_encoding
        current.set_original_encoding(implicit, little, encodings)
        for tag in list(current.keys()):
            raw = current._dict[tag]  # not current[tag]: that would decode the value now
            if getattr(raw, "VR", "") == "SQ":
                stack.extend(current[tag].value)


def find(source: WorklistSourceConfig, our_ae: str, identifier: Dataset) -> list[Dataset]:
    """Every item the RIS answers, or UpstreamError."""
    ae = AE(ae_title=source.calling_ae or our_ae)
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = source.timeout
    ae.connection_timeout = source.timeout
    assoc = scu.associate(ae, source.host, source.port, source.called_ae)
    if not assoc.is_established:
        raise UpstreamError(
            f"worklist source {source.name} ({source.called_ae}@{source.host}:{source.port}) "
            "did not accept an association"
        )
    items: list[Dataset] = []
    try:
        for status, found in assoc.send_c_find(identifier, ModalityWorklistInformationFind):
            if status is None or "Status" not in status:
                raise UpstreamError(f"worklist source {source.name}: no answer in time")
            code = int(status.Status)
            if code in PENDING:
                if found is not None:
                    if source.character_set and "SpecificCharacterSet" not in found:
                        declare_character_set(found, source.character_set)
                    items.append(found)
            elif code != 0x0000:
                raise UpstreamError(f"worklist source {source.name} answered {code:#06x}")
    finally:
        if assoc.is_established:
            assoc.release()
        else:
            assoc.abort()
    return items
