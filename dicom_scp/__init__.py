"""The DICOM edge: a pynetdicom application entity in front of ``gateway``.

Handlers here translate between DIMSE and the gateway's verbs and nothing more: admission
decisions come from ``gateway.admission``, storage from ``gateway.ingest``.
"""
