"""Services: the only code that touches both the hot catalog and the cold store."""
