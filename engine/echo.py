"""C-ECHO for `pacs-edge echo`: pynetdicom is right for a control-plane check run by
a person. (Sending files is engine/send_files.py, on the forwarder's fast SCU.)"""

from __future__ import annotations

from pynetdicom import AE

from engine.dicom import scu


def echo(host: str, port: int, calling_ae: str, called_ae: str, timeout: float = 10) -> int:
    """Returns the C-ECHO status, or -1 when no association could be made."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.network_timeout = timeout
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = scu.associate(ae, host, port, called_ae)
    if not assoc.is_established:
        return -1
    try:
        rsp = assoc.send_c_echo()
        return int(rsp.Status) if "Status" in rsp else -1
    finally:
        assoc.release()
