"""The service's plumbing: settings, security, database, access control, errors, audit."""
