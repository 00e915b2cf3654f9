"""WADO-RS (PS3.18 10.4): instances, metadata, frames, bulk data, rendered and thumbnails."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
