"""The web portal and DICOMweb (FastAPI), to come with the access issues.

Imports ``gateway`` only.
"""
