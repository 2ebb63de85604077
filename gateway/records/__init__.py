"""Where shadow pairs are kept: a recorder off the hot path, SQLite and PostgreSQL stores."""
