"""Services: code that needs both the hot catalog and the cold store."""
