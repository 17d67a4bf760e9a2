"""Patient updates from the HIS: HL7 v2 ADT over MLLP."""
