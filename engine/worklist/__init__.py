"""The worklist proxy: modalities query the edge's Modality Worklist; the edge asks
the RIS when it answers in time and its mirror of the RIS otherwise."""
