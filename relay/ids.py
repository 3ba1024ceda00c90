"""Identifiers every layer shares: relay/, recorder/ and signaling/ all import them from here, so a
consultation id keeps one type from the URL to the Router and the recording."""

from __future__ import annotations

from typing import NewType

ConsultationId = NewType("ConsultationId", str)
"A consultation's id (its shape is checked by ``signaling.db.store.valid_consultation_id``)."
