"""STOW-RS (PS3.18 10.5): store instances through the same ``gateway.ingest`` as C-STORE."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
