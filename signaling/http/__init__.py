"""HTTP routes of the edge: the consultation REST API, WHIP/WHEP resources, snapshots, pages,
and the error middleware that turns every refusal into a readable JSON answer."""
