"""The HTTPS side of ztbridge (FastAPI): device posture reports today; the web portal and
DICOMweb grow from the same app (``portal.app.create_app``).

Imports ``gateway`` only.
"""
