"""The DICOM upper layer: associations accepted (the storage SCP, its PS3.8 state
machine, negotiation, admission) and requested (the SCU client the forwarder and the
CLI use)."""
