"""The web portal and DICOMweb (FastAPI). Arrives with the access issues; imports ``gateway`` only."""
