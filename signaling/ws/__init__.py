"""The realtime side of a consultation: the WebSocket handler, the hub of connected participants
and the typed message protocol."""
