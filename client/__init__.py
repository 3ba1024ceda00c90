"""WHIP/WHEP client for aiortc peers and a stamped test pattern: shared by `endolink publish`,
the benchmarks and the tests. Knows HTTP and WebRTC, nothing of the server's insides."""
