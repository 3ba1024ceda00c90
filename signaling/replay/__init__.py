"""Replay routes: recordings listed, played, downloaded and exported for those granted replay."""
