"""Recording of consultations (crash-safe remux of the relay's encoded frames).

Reads media through ``relay.Router.tap()``; never imports ``signaling``.
"""
