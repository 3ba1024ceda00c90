"""EndoLink's web edge: HTTP API, WHIP/WHEP, WebSocket consultation events, auth and the CLI."""
