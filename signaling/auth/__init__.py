"""Who may do what: signed tokens and the grants they carry, invites, media tokens, the secret."""
