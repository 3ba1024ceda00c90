"""EndoLink's web edge: HTTP API, WHIP/WHEP, WebSocket room events, auth and the CLI."""
