"""Into the hospital record: a recording as a FHIR Bundle (``fhir.py``, ``routes.py``)."""
