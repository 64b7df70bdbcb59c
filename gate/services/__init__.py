"""Services without Flask: every SQL statement of the site lives here or in storage."""
