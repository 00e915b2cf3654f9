"""QIDO-RS (PS3.18 10.6): search studies, series and instances among what the caller may see."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
