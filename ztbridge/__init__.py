"""Composition root: wires ``gateway`` to its edges (DICOM listener, later the portal).

``gateway`` may not import ``dicom_scp`` or ``portal``; the command that starts them all
(``ztbridge up``) therefore lives here, above all three.
"""
