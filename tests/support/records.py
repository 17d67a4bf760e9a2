"""Index records for tests that write to a real LMDB index without a DICOM sender."""

from __future__ import annotations

import time

from storage.index import Instance


def instance(uid: str, study: str = "S1", size: int = 100) -> Instance:
    """A CT instance record with `uid`, in `study`, its hash derived from the UID."""
    return Instance(
        sop_instance_uid=uid,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        study_instance_uid=study,
        series_instance_uid=study + ".1",
        patient_id="P",
        patient_name="",
        modality="CT",
        study_date="",
        study_description="",
        accession_number="",
        series_number="",
        instance_number="",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        calling_ae="CT1",
        hash=uid.ljust(64, "0"),
        meta_length=10,
        dataset_length=size,
        received_at=time.time(),
    )
