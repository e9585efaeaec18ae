"""Sources: HTTP clients for the real services (Napster, archive.org's OMACIR item, MusicBrainz + CAA)."""
