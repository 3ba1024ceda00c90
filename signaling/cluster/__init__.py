"""Several EndoLink nodes as one service: who owns which consultation, and routing to the owner."""
