"""The edge's own tables: consultations, consent, the recording switch, the audit trail."""
